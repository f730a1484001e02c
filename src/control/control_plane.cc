#include "control/control_plane.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "base/log.h"
#include "control/api.h"
#include "control/directory.h"
#include "control/mesh/server.h"
#include "control/prober.h"
#include "dns/server.h"
#include "http/server.h"
#include "registry/health.h"
#include "registry/registry.h"
#include "registry/store/sqlite_store.h"
#include "telemetry/metrics.h"

namespace trellis::control {

std::string defaultDataDir() {
  if (const char* x = std::getenv("XDG_STATE_HOME"); x && *x)
    return std::string(x) + "/trellis";
  if (const char* h = std::getenv("HOME"); h && *h)
    return std::string(h) + "/.local/state/trellis";
  return "trellis-data";
}

struct ControlPlane::Impl {
  Impl(Dispatcher& l, ControlPlaneOptions o) : loop(l), options(std::move(o)) {}

  Dispatcher& loop;
  ControlPlaneOptions options;
  telemetry::Registry metrics{telemetry::RegistryOptions{}};
  std::unique_ptr<registry::SqliteStore> store;
  std::unique_ptr<registry::Registry> reg;
  registry::DefaultRandomSource random;
  std::unique_ptr<CheckProberImpl> prober;
  std::unique_ptr<registry::HealthScheduler> health;
  std::unique_ptr<Api> api;
  std::unique_ptr<mesh::MeshServer> mesh;
  std::unique_ptr<http::Server> http;
  std::unique_ptr<CatalogDirectory> directory;
  dns::RandomSourceImpl dns_random;
  std::unique_ptr<dns::Server> dns;
  std::vector<telemetry::CallbackRegistration> callbacks;

  void registerMetrics();
};

ControlPlane::ControlPlane(Dispatcher& loop, ControlPlaneOptions options)
    : impl_(std::make_unique<Impl>(loop, std::move(options))) {}

ControlPlane::~ControlPlane() {
  stop();
  impl_->callbacks.clear();
  impl_->dns.reset();
  impl_->http.reset();
  impl_->mesh.reset();
  impl_->api.reset();
  impl_->health.reset();
  impl_->prober.reset();
  impl_->reg.reset(); // flushes the batch in flight
  impl_->store.reset();
}

void ControlPlane::stop() {
  if (impl_->mesh)
    impl_->mesh->stop();
  if (impl_->http)
    impl_->http->stop();
  impl_->dns.reset();
}

net::SocketAddress ControlPlane::httpAddress() const {
  return impl_->http ? impl_->http->boundAddress() : net::SocketAddress{};
}
net::SocketAddress ControlPlane::dnsAddress() const {
  return impl_->dns ? impl_->dns->udpAddress() : net::SocketAddress{};
}

Status ControlPlane::start(std::function<void(Status)> ready) {
  Impl& m = *impl_;
  auto& o = m.options;
  if (o.node_name.empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0')
      return makeError(ErrorCode::kInvalidArgument, "--node-name: cannot read the host name");
    o.node_name = host;
  }
  std::error_code ec;
  std::filesystem::create_directories(o.data_dir, ec);
  if (ec)
    return makeError(ErrorCode::kUnavailable, "data dir {}: {}", o.data_dir, ec.message());
  registry::SqliteStoreSettings ss;
  ss.path = o.data_dir + "/registry.db";
  auto store = registry::SqliteStore::open(ss);
  if (!store)
    return Error(store.error().code() == ErrorCode::kInvalidArgument ? ErrorCode::kUnavailable
                                                                      : store.error().code(),
                 store.error().message());
  m.store = std::move(*store);
  m.reg = std::make_unique<registry::Registry>(m.loop, *m.store);
  TRELLIS_RETURN_IF_ERROR(m.reg->start());
  m.prober = std::make_unique<CheckProberImpl>(m.loop);
  m.health = std::make_unique<registry::HealthScheduler>(m.loop, *m.reg, *m.prober, m.random);
  m.health->start();

  asio::ip::address node_ip = o.http_addr.ip;
  if (node_ip.is_unspecified())
    node_ip = asio::ip::make_address_v4("127.0.0.1");
  ApiSettings as;
  as.node_name = o.node_name;
  as.advertise = net::SocketAddress{node_ip, o.http_addr.port}.toString();
  m.api = std::make_unique<Api>(m.loop, *m.reg, *m.health, m.metrics, m.random, as);
  http::ServerSettings hs;
  hs.max_request_body_bytes = 1024 * 1024;
  hs.idle_timeout = std::chrono::minutes(15); // longer than the longest blocking query
  hs.max_connections = 16384;
  // A proxy's stream carries its acks in its request body (docs/protocol.md).
  hs.streams_request_body = [](const http::ServerRequest& req) {
    return req.method == http::Method::kPost && req.path == "/v1/mesh/stream";
  };
  mesh::MeshSettings ms;
  ms.heartbeat = o.mesh_heartbeat;
  ms.coalesce = o.mesh_coalesce;
  ms.max_ack_wait = o.mesh_max_ack_wait;
  ms.endpoint_tombstones = o.mesh_endpoint_tombstones;
  m.mesh = std::make_unique<mesh::MeshServer>(m.loop, *m.reg, m.metrics, ms);
  m.mesh->start();
  Api* api = m.api.get();
  mesh::MeshServer* mesh = m.mesh.get();
  m.http = std::make_unique<http::Server>(
      m.loop, hs, [api, mesh](http::ServerRequest& req, std::shared_ptr<http::ResponseWriter> w) {
        static constexpr std::string_view kMesh = "/v1/mesh/";
        const std::string_view path = req.path;
        if (path.substr(0, kMesh.size()) == kMesh)
          return mesh->handle(req, std::move(w), path.substr(kMesh.size()));
        api->handle(req, std::move(w));
      });
  if (auto st = m.http->listen(o.http_addr); !st.ok())
    return Error(ErrorCode::kUnavailable, fmt::format("http api: {}", st.error().message()));
  m.api->setAdvertise(net::SocketAddress{node_ip, m.http->boundAddress().port}.toString());

  m.directory = std::make_unique<CatalogDirectory>(m.reg->catalog());
  dns::ServerConfig dc;
  dc.listen = o.dns_addr;
  dc.zone.domain = o.dns_domain;
  dc.zone.alt_domains.clear();
  if (o.dns_domain != "consul" && o.dns_domain != "consul.")
    dc.zone.alt_domains.push_back("consul");
  dc.recursors = o.recursors;
  if (auto st = dc.validate(); !st.ok())
    return Error(ErrorCode::kInvalidArgument, st.error().message());
  auto dns = dns::Server::create(m.loop, dc, *m.directory, m.dns_random);
  if (!dns)
    return Error(ErrorCode::kUnavailable, fmt::format("dns: {}", dns.error().message()));
  m.dns = std::move(*dns);
  m.registerMetrics();

  // The agent's own node, so agent endpoints have somewhere to register services.
  registry::RegisterRequest node;
  node.node.name = o.node_name;
  node.node.address = node_ip.to_string();
  if (auto existing = m.reg->catalog().node(o.node_name)) {
    node.node.id = existing->id;
    node.node.meta = existing->meta;
    node.node.tagged_addresses = existing->tagged_addresses;
  }
  m.reg->submit(std::move(node), [ready = std::move(ready)](Result<registry::WriteResult> r) {
    if (!r)
      return ready(r.error().withContext("registering the server's node"));
    ready(okStatus());
  });
  return okStatus();
}

void ControlPlane::Impl::registerMetrics() {
  registry::Catalog& cat = reg->catalog();
  auto gauge = [&](std::string_view name, std::string_view help, std::function<double()> fn) {
    if (auto r = metrics.gaugeCallback(name, help, std::move(fn)))
      callbacks.push_back(std::move(*r));
  };
  gauge("trellis_catalog_nodes", "Nodes registered", [&cat] { return double(cat.counts().nodes); });
  gauge("trellis_catalog_services", "Service names with at least one instance",
        [&cat] { return double(cat.services().value.size()); });
  gauge("trellis_catalog_service_instances", "Service instances registered",
        [&cat] { return double(cat.counts().services); });
  gauge("trellis_catalog_kv_entries", "KV entries stored",
        [&cat] { return double(cat.counts().kv); });
  gauge("trellis_catalog_watchers", "Catalog watchers (blocking queries and other watches)",
        [&cat] { return double(cat.watcherCount()); });
  if (auto f = metrics.gauge("trellis_health_checks", "Health checks by status", {"status"})) {
    for (auto st : {registry::CheckStatus::kPassing, registry::CheckStatus::kWarning,
                    registry::CheckStatus::kCritical})
      if (auto r = (*f)->addCallback({std::string(registry::checkStatusName(st))},
                                     [&cat, st] { return double(cat.checksInState(st).value.size()); }))
        callbacks.push_back(std::move(*r));
  }
  registry::Registry* r = reg.get();
  if (auto rc = metrics.counterCallback("trellis_registry_writes_total",
                                        "Registry writes acknowledged durable",
                                        [r] { return r->stats().writes_ok; }))
    callbacks.push_back(std::move(*rc));
  if (auto rc = metrics.counterCallback("trellis_registry_write_failures_total",
                                        "Registry writes rejected or failed",
                                        [r] { return r->stats().writes_failed; }))
    callbacks.push_back(std::move(*rc));
  registry::SqliteStore* s = store.get();
  if (auto rc = metrics.counterCallback("trellis_store_transactions_total",
                                        "Durable store transactions (one fsync each)",
                                        [s] { return s->stats().transactions; }))
    callbacks.push_back(std::move(*rc));
  const dns::ServerStats* ds = &dns->stats();
  if (auto f = metrics.counter("trellis_dns_queries_total", "DNS queries by question type",
                               {"type"})) {
    for (size_t i = 0; i <= dns::ServerStats::kOtherType; ++i)
      if (auto rc = (*f)->addCallback({dns::ServerStats::typeLabel(i)},
                                      [ds, i] { return ds->queries_by_type[i].load(); }))
        callbacks.push_back(std::move(*rc));
  }
  if (auto f = metrics.counter("trellis_dns_responses_total", "DNS responses by rcode",
                               {"rcode"})) {
    for (size_t i = 0; i <= dns::ServerStats::kOtherRcode; ++i)
      if (auto rc = (*f)->addCallback({dns::ServerStats::rcodeLabel(i)},
                                      [ds, i] { return ds->responses_by_rcode[i].load(); }))
        callbacks.push_back(std::move(*rc));
  }
  if (auto f = metrics.counter("trellis_dns_forwarded_total",
                               "DNS queries sent to recursors, by transport (tcp: asked again "
                               "after a truncated UDP answer)",
                               {"transport"})) {
    if (auto rc = (*f)->addCallback({"udp"}, [ds] { return ds->forwarded.load(); }))
      callbacks.push_back(std::move(*rc));
    if (auto rc = (*f)->addCallback({"tcp"}, [ds] { return ds->forwarded_tcp.load(); }))
      callbacks.push_back(std::move(*rc));
  }
  if (auto rc = metrics.counterCallback("trellis_dns_truncated_total",
                                        "DNS UDP replies sent truncated (TC)",
                                        [ds] { return ds->truncated.load(); }))
    callbacks.push_back(std::move(*rc));
}

} // namespace trellis::control
