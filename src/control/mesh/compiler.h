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
// catalog batch recomputes only what the batch touched and produces the delta.
namespace trellis::control::mesh {

// Defaults where no TrafficPolicy says otherwise (docs/protocol.md).
proxy::Cluster meshDefaultCluster();
proxy::Route meshDefaultRoute(std::string_view service);

// One service's entry, each field kept as its compact JSON text: comparing two entries field
// by field is a string compare, and a snapshot or delta is assembled by concatenation.
struct ServiceEntry {
  std::string protocol;  // "\"http\""
  std::string cluster;   // {"lb":...} without name and endpoints
  std::string endpoints; // ["ip:port", {"address":"ip:port","weight":5}, ...], sorted by address
  std::string routes;    // [{"match":...},...]
  // The same endpoints as (address, weight), sorted by address, each address once: what
  // flush() diffs to send endpoints_added/endpoints_removed instead of the whole list.
  std::vector<std::pair<std::string, uint32_t>> endpoint_list;

  bool operator==(const ServiceEntry&) const = default;
  // The complete entry as a JSON object's text.
  std::string json() const;
};

struct GatewayEntry {
  std::string routes;
  bool operator==(const GatewayEntry&) const = default;
  std::string json() const;
};

// Compiles one service (name folded to lowercase). nullopt when the service does not exist:
// no instance is registered and no resource defines it or routes to it. `skipped` (if given)
// is increased by the passing instances left out for an address that is not an IP, or port 0.
// With `definition`, the entry's protocol, cluster and routes are taken from it instead of
// compiled: they depend only on the resources, so an entry compiled from the same resources
// has them (MeshCompiler::flush passes the service's previous entry while they are unchanged).
std::optional<ServiceEntry> compileService(const registry::Catalog& catalog,
                                           const MeshResources& resources, std::string_view service,
                                           uint64_t* skipped = nullptr,
                                           const ServiceEntry* definition = nullptr);
// nullopt when no HTTPRoute names the gateway.
std::optional<GatewayEntry> compileGateway(const MeshResources& resources,
                                           std::string_view gateway);

struct CompilerStats {
  uint64_t services_compiled = 0; // compileService calls
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
  // Marks what an applied batch touched: the services of the instances, checks and nodes it
  // changed; a resource write marks everything (resources change rarely).
  void noteBatch(const registry::Batch& batch);
  bool dirty() const { return resources_dirty_ || !dirty_services_.empty(); }

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

  // What deltaSince needs, beyond the entry, to send a live service's endpoint-level change:
  // one version per live endpoint and a bounded list of removed addresses.
  struct EndpointHistory {
    uint64_t definition = 0; // protocol, cluster or routes last changed (or service created)
    uint64_t horizon = 0;    // a base below this gets the full list (removals were forgotten)
    std::vector<uint64_t> changed; // entry.endpoint_list[i] was added or reweighted at [i]
    // Removed addresses, never live ones, sorted by address: (address, when removed).
    std::vector<std::pair<std::string, uint64_t>> removed;
  };
  // `h` starts afresh for `e` at version `v` (service created, or rebuild).
  static void resetHistory(EndpointHistory& h, const ServiceEntry& e, uint64_t v);
  // Records the change of the service's endpoints from `before` to `after` at version `v`.
  void noteEndpoints(EndpointHistory& h, const ServiceEntry& before, const ServiceEntry& after,
                     uint64_t v) const;
  // `"endpoints_added":[..],"endpoints_removed":[..]` (an empty one left out) since `base` for
  // the live service `e`, or empty when the full list is shorter or the history cannot say.
  static std::string endpointsSince(const ServiceEntry& e, const EndpointHistory& h,
                                    uint64_t base);

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
  // folded node -> folded instance ID -> folded service name: which services a node, instance
  // or check mutation touches (the old name too when an instance was renamed).
  std::map<std::string, std::map<std::string, std::string>> instances_;
  // folded node -> folded check ID -> folded service name, for service checks: a check's
  // deletion names only its node and ID, and without this every service of the node (on one
  // machine: all of them) would be recompiled for one instance's deregistration.
  std::map<std::string, std::map<std::string, std::string>> service_checks_;
  void indexCheck(const registry::Check& c);
  std::set<std::string> dirty_services_;
  bool resources_dirty_ = false;
  std::shared_ptr<const std::string> snapshot_;
  CompilerStats stats_;
};

} // namespace trellis::control::mesh
