#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "control/mesh/resources.h"
#include "proxy/config.h"
#include "registry/catalog.h"

// The state compiler: turns the catalog (instances and their health) and the mesh resources
// into what docs/protocol.md sends to proxies, keeps it per service, and after each applied
// catalog batch recomputes only what the batch touched and produces the delta: the endpoint of
// each instance the batch changed (its service's other instances are not looked at), and a
// service's definition only when the resources changed.
namespace trellis::control::mesh {

// Defaults where no TrafficPolicy says otherwise (docs/protocol.md).
proxy::Cluster meshDefaultCluster();
proxy::Route meshDefaultRoute(std::string_view service);

// One endpoint of a service: an address that at least one of its passing instances has.
struct Endpoint {
  uint32_t weight = 1;  // the lowest of those instances' weights (the proxy takes an address once)
  uint64_t changed = 0; // the version that added it or last changed its weight
  // Every instance's weight, kept only while more than one instance has the address.
  std::vector<uint32_t> shared;
};
using EndpointMap = std::map<std::string, Endpoint, std::less<>>;

// One service's entry: its definition (made from the resources alone) as compact JSON texts,
// and its endpoints, which the compiler edits instance by instance as the registry changes.
struct ServiceEntry {
  std::string protocol; // "\"http\""
  std::string cluster;  // {"lb":...} without name and endpoints
  std::string routes;   // [{"match":...},...]
  EndpointMap endpoints;
  size_t endpoint_items_size = 0; // the length of the endpoints' items in endpointsJson()

  // The same definition and the same (address, weight) endpoints, whenever they changed.
  bool operator==(const ServiceEntry& other) const;
  // ["ip:port", {"address":"ip:port","weight":5}, ...], sorted by address.
  std::string endpointsJson() const;
  // endpointsJson().size(), without making it.
  size_t endpointsJsonSize() const {
    return 2 + endpoint_items_size + (endpoints.empty() ? 0 : endpoints.size() - 1);
  }
  // The complete entry as a JSON object's text.
  std::string json() const;
};

struct GatewayEntry {
  std::string routes;
  bool operator==(const GatewayEntry&) const = default;
  std::string json() const;
};

// nullopt when no HTTPRoute names the gateway.
std::optional<GatewayEntry> compileGateway(const MeshResources& resources,
                                           std::string_view gateway);

struct CompilerStats {
  uint64_t services_compiled = 0;  // service entries made or brought up to date
  uint64_t instances_compiled = 0; // instances whose endpoint was worked out again
  uint64_t full_rebuilds = 0;     // resources changed (or start)
  uint64_t deltas = 0;
  uint64_t endpoints_skipped = 0; // passing instances left out: address not an IP, or port 0
};

// The compiled state of the whole mesh and the incremental path. Threading: the catalog's
// loop thread only (it reads the catalog).
class MeshCompiler {
public:
  // Removed endpoint addresses remembered per service for deltaSince's endpoint-level changes
  // (the default of the constructor's `max_endpoint_tombstones`; the server's
  // --mesh-endpoint-tombstones, MeshSettings::endpoint_tombstones).
  static constexpr size_t kMaxEndpointTombstones = 1024;

  explicit MeshCompiler(const registry::Catalog& catalog,
                        size_t max_endpoint_tombstones = kMaxEndpointTombstones);

  // Compiles everything from scratch (start); version becomes the catalog's index.
  void rebuild();
  // Marks what an applied batch touched: the instances it changed, directly or through their
  // checks or node (a node's address or node checks: every instance of the node), and their
  // services; a resource write marks every service's definition to be compiled again
  // (resources change rarely).
  void noteBatch(const registry::Batch& batch);
  bool dirty() const {
    return resources_dirty_ || !dirty_instances_.empty() || !dirty_services_.empty();
  }

  // Recomputes what is dirty, updates the state and returns the delta message (one NDJSON
  // line, shared by every stream), or null when nothing visible changed. A service that
  // existed before and whose endpoints changed gets `endpoints_added`/`endpoints_removed`
  // instead of `endpoints` when that text is shorter (docs/protocol.md "Deltas").
  std::shared_ptr<const std::string> flush();

  // The delta from `base`, a version this compiler produced, to the current version, for a
  // stream that was still busy with an earlier message when deltas were produced: it gets
  // one of these instead of every delta in between. Applied to the state at `base` it gives
  // the current state. It carries the services and gateways that changed after `base` and
  // the names of those that existed at `base` and are gone (possibly also a name gone before
  // `base`, re-created and gone again since, which the receiver ignores). A service that
  // existed at `base`
  // and whose protocol, cluster and routes did not change since, but whose endpoints did,
  // gets `endpoints_added` (endpoints added or reweighted since) / `endpoints_removed`
  // (addresses removed since; possibly also ones added and removed since, which the receiver
  // ignores) when that text is shorter than its full list, and when `base` is not older than
  // the removals the service remembers (max_endpoint_tombstones); every other one its
  // complete entry. Null when `base` is older than what the compiler remembers of removed
  // services and gateways (kMaxTombstones).
  std::shared_ptr<const std::string> deltaSince(uint64_t base) const;
  // Removed services and gateways remembered for deltaSince.
  static constexpr size_t kMaxTombstones = 4096;

  // The snapshot message's body after `{"type":"snapshot",` and any per-stream fields:
  // `"version":V,"services":{...},"gateways":{...}}\n`. Built once per version.
  std::shared_ptr<const std::string> snapshotBody();

  uint64_t version() const { return version_; }
  const std::map<std::string, ServiceEntry>& services() const { return services_; }
  const std::map<std::string, GatewayEntry>& gateways() const { return gateways_; }
  const MeshResources& resources() const { return resources_; }
  const CompilerStats& stats() const { return stats_; }

private:
  void markNode(const std::string& folded_node);
  void indexInstance(const registry::Service& s);

  // When each service and gateway entry was created and last changed, and when the removed
  // ones were (for deltaSince).
  struct Versions {
    uint64_t created = 0; // this incarnation of the name
    uint64_t changed = 0; // the removal, for a tombstone
    // The first creation of the name over the removals and re-creations remembered: a
    // removal is sent to a base at or after it (the receiver may have an earlier incarnation).
    uint64_t since = 0;
  };
  void noteCreated(std::map<std::string, Versions>& live,
                   std::map<std::string, Versions>& tombstones, const std::string& name,
                   uint64_t v);
  void noteRemoved(std::map<std::string, Versions>& live,
                   std::map<std::string, Versions>& tombstones, const std::string& name,
                   uint64_t v);

  // What deltaSince needs, beyond the entry (each endpoint's `changed`), to send a live
  // service's endpoint-level change: a bounded set of removed addresses.
  struct EndpointHistory {
    uint64_t definition = 0; // protocol, cluster or routes last changed (or service created)
    uint64_t horizon = 0;    // a base below this gets the full list (removals were forgotten)
    std::map<std::string, uint64_t> removed; // address never live now -> when removed
  };
  // `h` starts afresh at version `v` (service created, or rebuild).
  static void resetHistory(EndpointHistory& h, uint64_t v);
  // Forgets the oldest removals past max_endpoint_tombstones_, raising the horizon.
  void pruneRemoved(EndpointHistory& h) const;
  // `"endpoints_added":[..],"endpoints_removed":[..]` (an empty one left out) since `base` for
  // the live service `e`, or empty when the full list is shorter or the history cannot say.
  static std::string endpointsSince(const ServiceEntry& e, const EndpointHistory& h,
                                    uint64_t base);

  // What one instance adds to its service's endpoints: it passes every check (its own and its
  // node's) and has an IP address and a port.
  struct Contribution {
    std::string service; // folded name
    std::string address; // "ip:port"
    uint32_t weight = 1;
    bool operator==(const Contribution&) const = default;
  };
  std::optional<Contribution> contributionOf(const std::string& node, const std::string& id);
  // What each touched address of a service was before this flush: its weight (0: absent) and
  // when that last changed (an endpoint taken out and put back as it was keeps its version).
  struct Was {
    uint32_t weight = 0;
    uint64_t changed = 0;
  };
  using Before = std::map<std::string, std::map<std::string, Was>>;
  // Brings the instance's contribution up to date in its services' entries (created empty
  // when missing: `created` names them); `before` (if given) records what each address it
  // touches had first.
  void updateInstance(const std::string& node, const std::string& id, Before* before,
                      std::set<std::string>* created);

  const registry::Catalog& catalog_;
  const size_t max_endpoint_tombstones_;
  std::map<std::string, EndpointHistory> endpoint_history_; // live services, folded name
  std::map<std::string, Versions> service_versions_, gateway_versions_;
  std::map<std::string, Versions> service_tombstones_, gateway_tombstones_;
  uint64_t horizon_ = 0; // deltaSince needs a base at least this
  MeshResources resources_;
  uint64_t version_ = 0;
  std::map<std::string, ServiceEntry> services_; // folded name
  std::map<std::string, GatewayEntry> gateways_;
  // folded node -> folded instance ID -> folded service name: the instances a node change
  // touches, and the service an instance had before a rename or deregistration.
  std::map<std::string, std::map<std::string, std::string>> instances_;
  // folded node -> folded check ID -> the folded ID of the instance it gates, "" for a node
  // check. A check's deletion names only its node and ID, and a check re-registered may move
  // to another instance or to the node: the instances it gated before are evaluated again too
  // (without this, every instance of the node, on one machine all of them).
  std::map<std::string, std::map<std::string, std::string>> check_owners_;
  // Indexes the check's owner; returns the one it had before (nullopt: the check is new).
  std::optional<std::string> indexCheck(const registry::Check& c);
  // Marks what a check gates: its instance, or every instance of the node.
  void markOwner(const std::string& folded_node, const std::string& owner);
  // folded node -> its address: a node write that keeps it changes no endpoint.
  std::map<std::string, std::string> node_addresses_;
  // "node\0id" (folded) -> what the instance adds to its service's endpoints now.
  std::map<std::string, Contribution> contributions_;
  std::set<std::pair<std::string, std::string>> dirty_instances_; // (folded node, folded ID)
  std::set<std::string> dirty_services_; // whose existence may have changed
  bool resources_dirty_ = false;
  std::shared_ptr<const std::string> snapshot_;
  CompilerStats stats_;
};

} // namespace trellis::control::mesh
