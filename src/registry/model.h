#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/units.h"

// The registry's data model. Field names and semantics follow Consul's catalog so the HTTP
// layer can map JSON one to one (Node, Service, Check, KV DirEntry). Objects stored in the
// catalog are immutable and shared (`shared_ptr<const T>`): a read hands out pointers that
// stay valid after later writes replace the object.
namespace trellis::registry {

enum class CheckStatus : uint8_t { kPassing, kWarning, kCritical };

// "passing", "warning", "critical".
std::string_view checkStatusName(CheckStatus s);
// Parses Consul's status strings (case-sensitive, as Consul).
Result<CheckStatus> parseCheckStatus(std::string_view text);

// How a check is run. kNone: nobody runs it; its status is written through the API (Consul's
// catalog-registered checks). kTtl: the service reports its status and the registry marks it
// critical when no report arrives within the TTL.
enum class CheckType : uint8_t { kNone, kHttp, kTcp, kTtl };
std::string_view checkTypeName(CheckType t);

struct Node {
  std::string name;    // Consul "Node"
  std::string id;      // Consul "ID": optional UUID, unique across nodes
  std::string address; // Consul "Address"
  std::map<std::string, std::string> tagged_addresses;
  std::map<std::string, std::string> meta;
  uint64_t create_index = 0;
  uint64_t modify_index = 0;
};

struct Weights {
  int32_t passing = 1; // weight while every check passes (Consul: must be >= 1)
  int32_t warning = 1; // weight while some check warns
  bool operator==(const Weights&) const = default;
};

// One registered instance of a service on a node (Consul's NodeService).
struct Service {
  std::string node; // owning node's name
  std::string id;   // Consul "ID": unique per node, defaults to the name
  std::string name; // Consul "Service"
  std::vector<std::string> tags;
  std::string address; // empty: use the node's address
  uint16_t port = 0;
  std::map<std::string, std::string> meta;
  Weights weights;
  bool enable_tag_override = false;
  uint64_t create_index = 0;
  uint64_t modify_index = 0;
};

// How a check runs; empty for kNone checks.
struct CheckDefinition {
  CheckType type = CheckType::kNone;
  Duration interval{0}; // HTTP/TCP: time between probes
  Duration timeout{0};  // HTTP/TCP: probe timeout (0: the scheduler's default)
  std::string http;     // HTTP: URL
  std::string method;   // HTTP: method, default GET
  std::map<std::string, std::vector<std::string>> header; // HTTP: request headers
  std::string tcp;                                        // TCP: host:port
  Duration ttl{0};                               // TTL: how long a reported status stays valid
  Duration deregister_critical_service_after{0}; // 0: never
  // Consul's thresholds: consecutive results needed before the status changes (0 or 1:
  // immediately). failures_before_warning defaults to failures_before_critical.
  uint32_t success_before_passing = 0;
  uint32_t failures_before_warning = 0;
  uint32_t failures_before_critical = 0;
  bool operator==(const CheckDefinition&) const = default;
};

struct Check {
  std::string node;
  std::string id;   // Consul "CheckID": unique per node
  std::string name; // Consul "Name"
  CheckStatus status = CheckStatus::kCritical;
  std::string output;
  std::string notes;
  std::string service_id;   // empty: a node-level check, it gates every service of the node
  std::string service_name; // filled by the catalog from the service
  CheckDefinition definition;
  uint64_t create_index = 0;
  uint64_t modify_index = 0;
};

// A KV entry (Consul's DirEntry). LockIndex and Session are carried for API compatibility;
// sessions (and so lock acquisition) are not implemented, LockIndex stays 0.
struct KvEntry {
  std::string key;
  std::string value; // raw bytes
  uint64_t flags = 0;
  uint64_t lock_index = 0;
  std::string session;
  uint64_t create_index = 0;
  uint64_t modify_index = 0;
};

using NodePtr = std::shared_ptr<const Node>;
using ServicePtr = std::shared_ptr<const Service>;
using CheckPtr = std::shared_ptr<const Check>;
using KvPtr = std::shared_ptr<const KvEntry>;

// Content equality, ignoring CreateIndex/ModifyIndex: an identical re-registration is a no-op
// that neither bumps an index nor wakes a watcher (as Consul's IsSame checks).
bool sameContent(const Node& a, const Node& b);
bool sameContent(const Service& a, const Service& b);
bool sameContent(const Check& a, const Check& b);

// Names, IDs and node names are matched case-insensitively (ASCII), as Consul's state store
// does; objects keep the spelling they were registered with. KV keys are case-sensitive.
std::string foldName(std::string_view s);

// Limits applied to everything written into the catalog. Defaults follow Consul where it has
// one (meta: 64 pairs, 128-byte keys, 512-byte values; KV values: 512 KiB).
struct Limits {
  size_t max_name_length = 256;    // node names, service names/IDs, check IDs/names
  size_t max_address_length = 256; // node/service addresses, TCP check targets
  size_t max_tags = 64;            // per service
  size_t max_tag_length = 256;
  size_t max_meta_pairs = 64; // node and service meta
  size_t max_meta_key_length = 128;
  size_t max_meta_value_length = 512;
  size_t max_checks_per_registration = 32;
  size_t max_check_output = 4096; // longer outputs are truncated (Consul: 4 KiB)
  size_t max_notes_length = 4096;
  size_t max_url_length = 2048;
  size_t max_headers = 32; // HTTP check header values in total
  size_t max_kv_key_length = 1024;
  size_t max_kv_value_size = 512 * 1024;
  Duration min_check_interval = std::chrono::seconds(1);
  Duration min_deregister_critical_after = std::chrono::minutes(1);
  // Totals that bound memory; exceeding one fails the write with kResourceExhausted.
  size_t max_nodes = 100'000;
  size_t max_services = 1'000'000;
  size_t max_checks = 2'000'000;
  size_t max_kv_entries = 1'000'000;
};

// Stateless validation with errors that name the field the way Consul's JSON does
// ("Service.Name: missing"). These check a single object; relations between objects (does
// the node exist, does the check's service exist) are the catalog's.
Status validateNode(const Node& n, const Limits& l);
Status validateService(const Service& s, const Limits& l);
Status validateCheck(const Check& c, const Limits& l);
Status validateKvKey(std::string_view key, const Limits& l);
Status validateKvEntry(const KvEntry& e, const Limits& l);

} // namespace trellis::registry
