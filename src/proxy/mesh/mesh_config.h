#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "net/address.h"
#include "proxy/config.h"
#include "proxy/mesh/mesh_state.h"

// Turns the received mesh state into a proxy configuration (a Snapshot, docs/proxy.md):
// one cluster per service named after it, and this proxy's own listeners from its flags.
namespace trellis::proxy::mesh {

// Name of the sidecar's cluster of its local app. Underscores are not allowed in service
// names (they are DNS labels), so no service can take it; a state that has one is rejected.
inline constexpr const char* kLocalAppCluster = "local_app";
inline constexpr const char* kInboundListener = "inbound";
inline constexpr const char* kHttpProxyListener = "http-proxy";
inline constexpr const char* kGatewayListener = "gateway";

struct Upstream {
  std::string service;
  net::SocketAddress address; // the local listener, "upstream-<service>"
};

// What this proxy is, from its command line.
struct ProxySpec {
  enum class Kind { kSidecar, kGateway };
  Kind kind = Kind::kSidecar;
  // sidecar
  std::string service;
  net::SocketAddress app;
  net::SocketAddress inbound{asio::ip::address_v4::loopback(), 0};
  std::vector<Upstream> upstreams;
  std::optional<net::SocketAddress> http_proxy;
  // gateway
  std::string gateway;
  net::SocketAddress listen;
  // both
  AdminConfig admin;
  uint32_t concurrency = 0;
  std::optional<AccessLogConfig> access_log;
};

// What one parse of a list leaves for the next parse of the same service's list: each
// address as written and as parsed, in list order. A delta changes a few endpoints of a long
// list; the addresses that were there before are then not parsed again.
struct EndpointTexts {
  std::vector<std::string> text;
  std::vector<net::SocketAddress> address;
};

// Keeps what it parsed per service (by revision) and what it assembled, so a delta that only
// moves one service's endpoints costs their validation and one new Cluster: every other
// cluster and every listener of the new Snapshot is shared with the previous one.
class ConfigBuilder {
public:
  explicit ConfigBuilder(ProxySpec spec) : spec_(std::move(spec)) {}

  // The configuration for `state` (which may be empty: before the server ever answered, the
  // sidecar still has its listeners, routing to clusters without endpoints). Errors name the
  // service or gateway and the field: `services.orders.cluster.lb: unknown policy "x" (...)`.
  Result<std::shared_ptr<const Snapshot>> build(const MeshState& state);

  const ProxySpec& spec() const { return spec_; }
  // Builds that visited every service (the others replaced only the changed ones' clusters).
  uint64_t fullBuilds() const { return full_builds_; }

private:
  struct ParsedDefinition {
    uint64_t rev = 0;
    Protocol protocol = Protocol::kHttp;
    Cluster cluster; // no endpoints; route cluster indices are resolved at assembly
    std::vector<Route> routes;
    std::optional<Error> error;
  };
  struct ParsedEndpoints {
    uint64_t rev = 0;
    std::vector<Endpoint> endpoints;                // until assembled: then in the cluster (moved)
    std::shared_ptr<const EndpointLineage> lineage; // of `endpoints`, for their cluster
    std::optional<Error> error;
  };
  struct ParsedGateway {
    uint64_t rev = 0;
    std::vector<Route> routes;
    std::optional<Error> error;
  };

  // A service's cluster as put into the last Snapshot, reused by the next one while neither
  // the definition nor the endpoints it was made from changed.
  struct AssembledCluster {
    uint64_t definition_rev = 0;
    uint64_t endpoints_rev = 0;
    std::shared_ptr<const Cluster> cluster;
  };

  // Rebuilds the listeners and the clusters that follow the services' (local_app, and the
  // endpoint-less clusters of services named but absent).
  void assembleLayout(const MeshState& state, const std::vector<Route>* gateway_routes);

  struct ServiceCache;
  // Re-parses what changed of one service (definition, endpoints) since its cache was made.
  // A changed definition invalidates the layout.
  Status refresh(const std::string& name, const ServiceEntry& entry, ServiceCache& cache);
  // The service's endpoints made from its last cluster's by the state's edits since (the
  // endpoints a delta added or changed are read, the others copied), when the state's origins
  // refer to that cluster's list. False when they do not, the kept endpoints are out of their
  // base order, or an edited element is not valid (then a full parse names the error).
  bool editEndpoints(const ServiceEntry& entry, ServiceCache& cache);
  // Makes the service's cluster anew if its definition or endpoints changed since.
  Status assemble(const std::string& name, const ServiceEntry& entry, ServiceCache& cache);
  // The configuration when only the services named by deltas since the last build may have
  // changed, and only in their endpoints: the last snapshot with those clusters replaced,
  // without visiting the others. nullopt when that does not apply (services added or removed,
  // a definition or the gateway's routes changed, nothing built yet): build all.
  std::optional<Result<std::shared_ptr<const Snapshot>>> buildChanged(const MeshState& state);
  // Keeps a successful build as the base of the next one.
  std::shared_ptr<const Snapshot> remember(const MeshState& state, std::shared_ptr<Snapshot> snap);

  ProxySpec spec_;

  // The listeners and trailing clusters depend only on the services' names and definitions
  // and the gateway's routes (not on endpoints), so a delta that moves endpoints reuses them.
  bool layout_valid_ = false;
  uint64_t layout_gateway_rev_ = 0;
  std::vector<std::shared_ptr<const Listener>> layout_listeners_;
  std::vector<std::shared_ptr<const Cluster>> layout_clusters_;
  // Per service of the state (by name, in the state's order): what was parsed and assembled.
  struct ServiceCache {
    ParsedDefinition def;
    ParsedEndpoints eps;
    EndpointTexts texts; // of the last good parse of eps
    AssembledCluster assembled;
    size_t index = 0; // of its cluster in the last snapshot
  };
  std::map<std::string, ServiceCache, std::less<>> services_;
  std::map<std::string, ParsedGateway, std::less<>> gateways_;
  // The last snapshot built and the state's nextRev() then: what buildChanged starts from.
  std::shared_ptr<const Snapshot> last_;
  uint64_t seen_rev_ = 0;
  uint64_t full_builds_ = 0;
};

// Validates a service's endpoints list (`[{"address": "ip:port", "weight": 1}, ...]` or
// address strings). `path` prefixes errors. With `reuse`, addresses written as in the last
// parse are taken from it (the lists are walked in step, so this works for lists in the same
// order, as the server sends them) and it is replaced by this parse's; the result and the
// errors are the same as without.
Result<std::vector<Endpoint>> parseEndpoints(const nlohmann::json& eps, const std::string& path,
                                             EndpointTexts* reuse = nullptr);

} // namespace trellis::proxy::mesh
