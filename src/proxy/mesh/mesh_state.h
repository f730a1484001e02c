#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.h"

// The mesh state a proxy has received from the server (docs/protocol.md): services and
// gateways exactly as sent, kept apart from the configuration built from them so that a
// rejected update still moves the received state forward (the next delta applies to it).
namespace trellis::proxy::mesh {

enum class MessageType { kSnapshot, kDelta, kHeartbeat };

// One parsed stream line. `body` holds the whole object for snapshots and deltas.
struct Message {
  MessageType type = MessageType::kHeartbeat;
  uint64_t version = 0;
  std::string stream; // snapshots only
  nlohmann::json body;
};

// Parses one NDJSON line: a JSON object with a known `type` and an unsigned `version`.
// Anything else is an error that names what is wrong (the stream is then resynchronised).
Result<Message> parseMessage(std::string_view line);

// A delta that only adds and removes endpoints written as address strings, of services the
// receiver has: the usual single registration or health change (docs/protocol.md "Endpoint
// changes"), read without building a JSON tree of the whole message.
// The addresses view the line they were read from, which must outlive the EndpointDelta.
struct EndpointDelta {
  struct Change {
    std::string_view service;
    std::optional<std::vector<std::string_view>> added;   // address strings; nullopt: absent
    std::optional<std::vector<std::string_view>> removed; // likewise
  };
  uint64_t version = 0;
  std::vector<Change> services; // ordered by name
};

// Reads `line` when it is exactly such a delta: an object whose members are "type":"delta",
// an unsigned "version", "services" mapping names to objects with only "endpoints_added"
// and/or "endpoints_removed" (arrays of strings), and optionally an empty "removed",
// "gateways" and "removed_gateways" (as the server writes them), in any order, with plain
// ASCII strings (no escapes). Anything else, valid or not, is nullopt:
// parseMessage() then reads it (and names what is wrong).
std::optional<EndpointDelta> readEndpointDelta(std::string_view line);

// Where each element of a service's endpoint list was at an earlier revision of the list,
// kept through the deltas' endpoint changes, so that a reader that has what it made of that
// revision (the configuration builder: parsed endpoints) redoes only the changed elements.
struct EndpointOrigins {
  static constexpr uint32_t kNew = UINT32_MAX;
  // Or'ed into an index: the element at that index is still there (same address) but its
  // content changed (a weight), so it must be read again.
  static constexpr uint32_t kChanged = 0x80000000u;
  // The endpoints_rev that `index` refers to; 0: not known (the whole list was replaced).
  uint64_t base_rev = 0;
  // The list changed since base_rev; until it does, each element is where it was.
  bool edited = false;
  // When edited, per element of the list now: its index at base_rev (maybe | kChanged) or
  // kNew.
  std::vector<uint32_t> index;
};

// A service as received. Fields are kept as JSON (validated when the configuration is built)
// with revisions that change only when the field's content changes, so the builder re-parses
// only what a delta touched.
struct ServiceEntry {
  nlohmann::json protocol; // null when the server never sent it
  nlohmann::json cluster;
  nlohmann::json endpoints;
  nlohmann::json routes;
  uint64_t definition_rev = 0; // protocol, cluster or routes changed
  uint64_t endpoints_rev = 0;  // endpoints changed
  // `endpoints` is known to be ordered by address (endpoint changes left it so); a new
  // complete list is not, until the next change puts it in order.
  bool endpoints_in_order = false;
  // Since the last rebaseEndpointOrigins(): valid when origins.base_rev != 0.
  EndpointOrigins origins;
  // In the state's list of entries whose origins moved since that rebase (a flag, not a
  // search of the list: a burst's delta names most services).
  bool origins_moved = false;
};

struct GatewayEntry {
  nlohmann::json routes;
  uint64_t rev = 0;
};

class MeshState {
public:
  // Replaces the whole state. Entries whose content is unchanged keep their revisions.
  // Structural errors (services not an object, ...) leave the state as it was.
  Status applySnapshot(const Message& msg);
  // Applies a delta to the current state. Requires a snapshot first and a version above the
  // current one. A service's `endpoints_added`/`endpoints_removed` change its stored list by
  // address (removals first; an absent address or a present one is no error); beside
  // `endpoints` they are an error. Structural errors leave the state as it was.
  Status applyDelta(const Message& msg);
  // Applies `d` exactly as applyDelta() would the same delta, and returns true; false (and
  // nothing changed) when applyDelta() must handle it instead: no snapshot yet, a version
  // not above the current one, a service it does not have.
  bool applyEndpointDelta(const EndpointDelta& d);
  // Forgets everything (a new stream starts from its snapshot).
  void clear();

  bool hasSnapshot() const { return has_snapshot_; }
  uint64_t version() const { return version_; }
  const std::string& stream() const { return stream_; }
  const std::map<std::string, ServiceEntry, std::less<>>& services() const { return services_; }
  const std::map<std::string, GatewayEntry, std::less<>>& gateways() const { return gateways_; }

  // What changed, for a reader that builds on the state after each update: read nextRev()
  // after building; servicesNamedSince(that) then gives the services the deltas since have
  // named (changed or not; possibly repeated), or nullopt when the set of services may have
  // changed since (a snapshot, clear(), a service added or removed) or more than
  // kMaxChangeLog were named: look at every service then.
  uint64_t nextRev() const { return next_rev_; }
  std::optional<std::vector<std::string_view>> servicesNamedSince(uint64_t rev) const;
  static constexpr size_t kMaxChangeLog = 1024;
  // Makes each service's endpoint origins refer to its list as it is now: call after building
  // on the state, so the next build finds where each endpoint was in the list it last read.
  void rebaseEndpointOrigins();

private:
  // The set of service names may have changed: readers from before must look at everything.
  void forgetChanges();
  // One service's endpoint changes: the addresses removed, and those added with their
  // element (null: the address string itself, as readEndpointDelta() reads them).
  struct EndpointChanges {
    bool any = false; // the delta had endpoints_added or endpoints_removed
    std::vector<std::string_view> gone;
    std::vector<std::pair<std::string_view, const nlohmann::json*>> adds;
  };
  // One service's part of a delta, for applyDelta() and applyEndpointDelta(): its entry's
  // fields (`fields`, may be null: none) and endpoint changes, with the change log, revisions
  // and moved origins kept.
  void applyServiceChange(std::string_view name, bool is_new, ServiceEntry& e,
                          const nlohmann::json* fields, EndpointChanges& changes);
  // Sets `field` to `value`, bumping `rev` when the content differs. Returns whether it did.
  bool setField(nlohmann::json& field, const nlohmann::json& value, uint64_t& rev);

  bool has_snapshot_ = false;
  uint64_t version_ = 0;
  uint64_t next_rev_ = 1;
  std::string stream_;
  std::map<std::string, ServiceEntry, std::less<>> services_;
  std::map<std::string, GatewayEntry, std::less<>> gateways_;
  // Services named by deltas, with nextRev() when they were; complete from log_from_ on.
  struct Named {
    uint64_t rev;
    std::string name;
  };
  EndpointChanges changes_; // reused: its vectors keep their capacity
  std::vector<Named> log_;
  uint64_t log_from_ = 1;
  // Services whose origins changed since the last rebaseEndpointOrigins() (map nodes are
  // stable; an erased service leaves this list with it).
  std::vector<ServiceEntry*> origins_moved_;
};

} // namespace trellis::proxy::mesh
