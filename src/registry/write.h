#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "base/result.h"
#include "registry/model.h"

// Write requests as the Consul API expresses them. Each request is atomic: all of it is applied
// at one index, or none of it.
namespace trellis::registry {

// PUT /v1/catalog/register: a node, optionally one service on it, and checks (node checks or
// checks of that service / of services already on the node). Upserts; removes nothing.
struct RegisterRequest {
  Node node;                     // Node required; Address required unless skip_node_update
  bool skip_node_update = false; // keep an existing node's fields as they are
  std::optional<Service> service;
  std::vector<Check> checks; // Node defaults to node.name; CheckID defaults to Name
};

// PUT /v1/catalog/deregister: the node with everything on it, or one service (with its checks),
// or one check. Removing something that is not there succeeds (as Consul).
struct DeregisterRequest {
  std::string node;
  std::string service_id; // set: remove only this service
  std::string check_id;   // set: remove only this check
};

// PUT /v1/agent/service/register on the agent of `node` (in Trellis: the server's own node, or
// the node a runtime registers for). The node must exist. The registration is the service's
// whole definition: checks it had before that are not listed here are removed. Check defaults
// follow Consul: CheckID "service:<id>" (":<n>" appended when several), Name "Service '<name>'
// check", status critical.
struct AgentServiceRequest {
  std::string node;
  Service service; // ID defaults to Name
  std::vector<Check> checks;
};

// PUT /v1/agent/service/deregister/<id>: unknown IDs are an error (kNotFound), as Consul.
struct AgentServiceDeregister {
  std::string node;
  std::string service_id;
};

// PUT /v1/agent/check/register.
struct AgentCheckRequest {
  std::string node;
  Check check;
};

// PUT /v1/agent/check/deregister/<id>: unknown IDs are an error.
struct AgentCheckDeregister {
  std::string node;
  std::string check_id;
};

// A check's new status and output (health results, TTL updates, /v1/agent/check/update).
// Output longer than Limits::max_check_output is truncated.
struct CheckUpdateRequest {
  std::string node;
  std::string check_id;
  CheckStatus status = CheckStatus::kCritical;
  std::string output;
};

// PUT /v1/kv/<key>[?flags=][&cas=]. cas=0: only if the key does not exist; cas=N: only if its
// ModifyIndex is N. A failed CAS is kFailedPrecondition (the HTTP layer answers `false`).
struct KvPutRequest {
  std::string key;
  std::string value;
  uint64_t flags = 0;
  std::optional<uint64_t> cas;
};

// DELETE /v1/kv/<key>[?recurse][&cas=]. recurse deletes every key with the prefix `key`
// (an empty key with recurse deletes everything). cas cannot be combined with recurse.
struct KvDeleteRequest {
  std::string key;
  bool recurse = false;
  std::optional<uint64_t> cas;
};

using WriteRequest = std::variant<RegisterRequest, DeregisterRequest, AgentServiceRequest,
                                  AgentServiceDeregister, AgentCheckRequest, AgentCheckDeregister,
                                  CheckUpdateRequest, KvPutRequest, KvDeleteRequest>;

// The outcome of an accepted write. `index` is the index the write was applied at; a write
// that changed nothing (an identical re-registration) reports the index of the state it
// matched and `changed` false.
struct WriteResult {
  uint64_t index = 0;
  bool changed = false;
};

using WriteCallback = std::function<void(Result<WriteResult>)>;

// A short name for logs and metrics: "catalog.register", "kv.put", ...
std::string_view writeRequestName(const WriteRequest& req);

} // namespace trellis::registry
