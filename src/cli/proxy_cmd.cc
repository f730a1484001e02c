#include <cctype>
#include <cstdio>
#include <set>

#include <unistd.h>

#include "base/dispatcher.h"
#include "base/log.h"
#include "base/signals.h"
#include "cli/command.h"
#include "proxy/mesh/mesh_client.h"
#include "proxy/mesh/registration.h"
#include "proxy/proxy_server.h"

namespace trellis::cli {

namespace {

struct ProxyFlags {
  proxy::ProxyOptions options;
  // mesh mode
  std::vector<std::string> servers;
  std::string service, instance_id, app, inbound = "127.0.0.1:0", http_proxy, token;
  std::vector<std::string> upstreams, tags, meta;
  std::string health_path;
  bool health_tcp = false;
  std::string gateway, listen, admin = "127.0.0.1:0", access_log;
  std::string heartbeat = "10s";
};

int runProxy(const proxy::ProxyOptions& options) {
  Dispatcher main("main", realTimeSource());
  proxy::ProxyServer server(main, options);
  if (auto st = server.start(); !st.ok()) {
    std::fprintf(stderr, "trellis proxy: %s\n", st.error().message().c_str());
    return st.error().code() == ErrorCode::kInvalidArgument ? kExitUsage : kExitRuntime;
  }
  SignalWatcher signals(
      main,
      [&](int signo) {
        TLOG_INFO("signal {}: stopping", signo);
        server.stop();
        main.exit();
      },
      [&] { (void)server.reload(); });
  main.run();
  return kExitOk;
}

// ---- mesh mode -------------------------------------------------------------------------------

bool isServiceName(std::string_view s) {
  if (s.empty() || s.size() > 128)
    return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.'))
      return false;
  return true;
}

// Node ids are [A-Za-z0-9._:-]; anything else in a host name becomes '-'.
std::string nodeSafe(std::string s) {
  for (char& c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == ':' ||
          c == '-'))
      c = '-';
  return s;
}

std::string hostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0')
    return "localhost";
  return buf;
}

Result<net::SocketAddress> flagAddress(const char* flag, const std::string& v) {
  auto a = net::parseSocketAddress(v);
  if (!a.ok())
    return makeError(ErrorCode::kInvalidArgument, "{} {}: {}", flag, v, a.error().message());
  return a;
}

struct MeshSetup {
  proxy::mesh::ProxySpec spec;
  proxy::mesh::MeshClientOptions client;
  std::optional<proxy::mesh::InstanceRegistration> registration;
};

// Every flag checked before anything binds, with a message naming the flag.
Result<MeshSetup> meshSetup(const ProxyFlags& f) {
  using proxy::mesh::ProxySpec;
  MeshSetup m;
  const bool gateway = !f.gateway.empty();
  if (gateway == !f.service.empty())
    return makeError(ErrorCode::kInvalidArgument,
                     "--server needs exactly one of --service (a sidecar) and --gateway");
  for (const auto& s : f.servers) {
    auto a = flagAddress("--server", s);
    if (!a.ok())
      return a.error();
    m.client.servers.push_back(*a);
  }
  auto admin = flagAddress("--admin", f.admin);
  if (!admin.ok())
    return admin.error();
  m.spec.admin.address = *admin;
  if (f.options.concurrency)
    m.spec.concurrency = static_cast<uint32_t>(f.options.concurrency);
  if (!f.access_log.empty())
    m.spec.access_log = proxy::AccessLogConfig{f.access_log};
  auto hb = parseDuration(f.heartbeat);
  if (!hb.ok() || *hb <= Duration::zero())
    return makeError(ErrorCode::kInvalidArgument,
                     "--mesh-heartbeat {}: must be a positive duration such as 10s", f.heartbeat);
  m.client.heartbeat = *hb;
  m.client.token = f.token;
  std::set<std::pair<std::string, uint16_t>> ports; // listeners must not share an address
  auto claim = [&](const char* flag, const net::SocketAddress& a) -> Status {
    if (a.port != 0 && !ports.emplace(a.ip.to_string(), a.port).second)
      return makeError(ErrorCode::kInvalidArgument,
                       "{} {}: the address is already used by "
                       "another listener of this proxy",
                       flag, a.toString());
    return okStatus();
  };
  TRELLIS_RETURN_IF_ERROR(claim("--admin", m.spec.admin.address));

  if (gateway) {
    for (const char* bad : {"--app", "--inbound", "--upstream", "--http-proxy", "--instance-id",
                            "--tag", "--meta", "--health-path", "--health-tcp"}) {
      const std::string b(bad);
      bool set =
          (b == "--app" && !f.app.empty()) || (b == "--upstream" && !f.upstreams.empty()) ||
          (b == "--http-proxy" && !f.http_proxy.empty()) ||
          (b == "--instance-id" && !f.instance_id.empty()) || (b == "--tag" && !f.tags.empty()) ||
          (b == "--meta" && !f.meta.empty()) || (b == "--health-path" && !f.health_path.empty()) ||
          (b == "--health-tcp" && f.health_tcp) || (b == "--inbound" && f.inbound != "127.0.0.1:0");
      if (set)
        return makeError(ErrorCode::kInvalidArgument, "{} is for sidecars, not with --gateway",
                         bad);
    }
    if (!isServiceName(f.gateway))
      return makeError(ErrorCode::kInvalidArgument,
                       "--gateway {}: 1..128 letters, digits, '-' or '.'", f.gateway);
    if (f.listen.empty())
      return makeError(ErrorCode::kInvalidArgument, "--gateway needs --listen ADDR");
    auto l = flagAddress("--listen", f.listen);
    if (!l.ok())
      return l.error();
    TRELLIS_RETURN_IF_ERROR(claim("--listen", *l));
    m.spec.kind = ProxySpec::Kind::kGateway;
    m.spec.gateway = f.gateway;
    m.spec.listen = *l;
    m.client.kind = "gateway";
    m.client.gateway = f.gateway;
    m.client.node =
        nodeSafe("gateway-" + f.gateway + "-" + hostName() + "-" + std::to_string(::getpid()));
    return m;
  }

  if (!f.listen.empty())
    return makeError(ErrorCode::kInvalidArgument, "--listen is for gateways; a sidecar takes "
                                                  "--inbound");
  if (!isServiceName(f.service))
    return makeError(ErrorCode::kInvalidArgument,
                     "--service {}: 1..128 letters, digits, '-' or '.'", f.service);
  if (f.app.empty())
    return makeError(ErrorCode::kInvalidArgument,
                     "--service needs --app 127.0.0.1:PORT (where the app listens)");
  auto app = flagAddress("--app", f.app);
  if (!app.ok())
    return app.error();
  if (app->port == 0)
    return makeError(ErrorCode::kInvalidArgument, "--app {}: needs a port", f.app);
  auto inbound = flagAddress("--inbound", f.inbound);
  if (!inbound.ok())
    return inbound.error();
  TRELLIS_RETURN_IF_ERROR(claim("--inbound", *inbound));
  if (!f.instance_id.empty() &&
      (f.instance_id.size() > 128 || nodeSafe(f.instance_id) != f.instance_id))
    return makeError(ErrorCode::kInvalidArgument,
                     "--instance-id {}: 1..128 letters, digits, '.', '_', ':' or '-'",
                     f.instance_id);
  if (f.health_tcp && !f.health_path.empty())
    return makeError(ErrorCode::kInvalidArgument, "--health-path and --health-tcp exclude each "
                                                  "other");
  if (!f.health_path.empty() && f.health_path.front() != '/')
    return makeError(ErrorCode::kInvalidArgument, "--health-path {}: must start with '/'",
                     f.health_path);
  std::set<std::string> upstream_names;
  for (const auto& u : f.upstreams) {
    const size_t colon = u.rfind(':');
    const std::string svc = colon == std::string::npos ? u : u.substr(0, colon);
    if (colon == std::string::npos || !isServiceName(svc))
      return makeError(ErrorCode::kInvalidArgument,
                       "--upstream {}: expected SERVICE:LOCALPORT (e.g. orders:9191)", u);
    auto port = flagAddress("--upstream", "127.0.0.1:" + u.substr(colon + 1));
    if (!port.ok() || port->port == 0)
      return makeError(ErrorCode::kInvalidArgument,
                       "--upstream {}: the local port must be 1..65535", u);
    if (!upstream_names.insert(svc).second)
      return makeError(ErrorCode::kInvalidArgument, "--upstream {}: service {} is given twice", u,
                       svc);
    TRELLIS_RETURN_IF_ERROR(claim("--upstream", *port));
    m.spec.upstreams.push_back(proxy::mesh::Upstream{svc, *port});
  }
  if (!f.http_proxy.empty()) {
    auto hp = flagAddress("--http-proxy", f.http_proxy);
    if (!hp.ok())
      return hp.error();
    TRELLIS_RETURN_IF_ERROR(claim("--http-proxy", *hp));
    m.spec.http_proxy = *hp;
  }
  proxy::mesh::InstanceRegistration reg;
  for (const auto& kv : f.meta) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      return makeError(ErrorCode::kInvalidArgument, "--meta {}: expected KEY=VALUE", kv);
    reg.meta[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  reg.tags = f.tags;
  reg.id = f.instance_id;
  reg.service = f.service;
  reg.app = *app;
  reg.health_tcp = f.health_tcp;
  if (!f.health_tcp)
    reg.health_path = f.health_path.empty() ? "/healthz" : f.health_path;
  m.registration = std::move(reg);
  m.spec.kind = ProxySpec::Kind::kSidecar;
  m.spec.service = f.service;
  m.spec.app = *app;
  m.spec.inbound = *inbound;
  m.client.kind = "sidecar";
  m.client.service = f.service;
  return m;
}

class ServerApplier : public proxy::mesh::ConfigApplier {
public:
  explicit ServerApplier(proxy::ProxyServer& server) : server_(server) {}
  Status apply(std::shared_ptr<const proxy::Snapshot> snapshot) override {
    return server_.apply(std::move(snapshot));
  }

private:
  proxy::ProxyServer& server_;
};

int runMesh(const ProxyFlags& flags) {
  auto setup = meshSetup(flags);
  if (!setup.ok()) {
    std::fprintf(stderr, "trellis proxy: %s\n", setup.error().message().c_str());
    return kExitUsage;
  }
  MeshSetup& m = *setup;
  Dispatcher main("main", realTimeSource());
  proxy::mesh::ConfigBuilder builder(m.spec);
  // Listeners come up before the server ever answers: 503 until endpoints arrive.
  auto initial = builder.build(proxy::mesh::MeshState{});
  if (!initial.ok()) {
    std::fprintf(stderr, "trellis proxy: %s\n", initial.error().message().c_str());
    return kExitUsage;
  }
  proxy::ProxyOptions po = flags.options;
  po.config_path.clear();
  proxy::ProxyServer server(main, po);
  if (auto st = server.start(*initial); !st.ok()) {
    std::fprintf(stderr, "trellis proxy: %s\n", st.error().message().c_str());
    return st.error().code() == ErrorCode::kInvalidArgument ? kExitUsage : kExitRuntime;
  }
  const uint64_t seed = static_cast<uint64_t>(::getpid()) * 0x9E3779B97F4A7C15ull ^
                        static_cast<uint64_t>(main.now().time_since_epoch().count());
  std::unique_ptr<proxy::mesh::Registrar> registrar;
  if (m.registration) {
    auto bound = server.listenerAddress(proxy::mesh::kInboundListener);
    net::SocketAddress addr = *bound;
    if (addr.ip.is_unspecified())
      addr.ip = addr.ip.is_v4() ? asio::ip::address(asio::ip::address_v4::loopback())
                                : asio::ip::address(asio::ip::address_v6::loopback());
    m.registration->address = addr;
    if (m.registration->id.empty())
      m.registration->id =
          nodeSafe(m.spec.service + "-" + hostName() + "-" + std::to_string(addr.port));
    m.client.node = m.registration->id;
    registrar = std::make_unique<proxy::mesh::Registrar>(main, m.client.servers, flags.token,
                                                         *m.registration, seed + 1);
  }
  ServerApplier applier(server);
  proxy::mesh::MeshClient client(main, m.client, builder, applier, seed);
  if (auto st = client.registerMetrics(server.metrics()); !st.ok()) {
    std::fprintf(stderr, "trellis proxy: %s\n", st.error().message().c_str());
    return kExitRuntime;
  }
  client.start();
  if (registrar)
    registrar->start();
  bool stopping = false;
  auto finish = [&] {
    server.stop();
    main.exit();
  };
  SignalWatcher signals(
      main,
      [&](int signo) {
        if (stopping) { // a second signal: stop now
          finish();
          return;
        }
        stopping = true;
        TLOG_INFO("signal {}: stopping", signo);
        client.stop();
        if (registrar)
          registrar->deregister(std::chrono::seconds(2), finish);
        else
          finish();
      },
      [&] { TLOG_INFO("SIGHUP ignored: the control plane configures this proxy"); });
  main.run();
  return kExitOk;
}

} // namespace

void addProxyCommand(CLI::App& app, const GlobalOptions&, Action& action) {
  auto* cmd = app.add_subcommand(
      "proxy", "Run the data-plane proxy from a configuration file (docs/proxy.md), or as a "
               "sidecar or gateway configured by the control plane (docs/mesh-proxy.md)");
  auto f = std::make_shared<ProxyFlags>();
  auto* config =
      cmd->add_option("--config,-c", f->options.config_path, "The proxy's YAML configuration file");
  cmd->add_option("--concurrency", f->options.concurrency,
                  "Worker threads (default: the file's `concurrency`, else one per CPU)")
      ->check(CLI::Range(1, 256));
  auto* server = cmd->add_option("--server", f->servers,
                                 "Mesh mode: the control plane's HTTP API (host:port; "
                                 "repeatable)");
  cmd->add_option("--service", f->service, "Sidecar: the service this instance belongs to");
  cmd->add_option("--instance-id", f->instance_id,
                  "Sidecar: the instance id (default SERVICE-HOST-INBOUNDPORT)");
  cmd->add_option("--app", f->app, "Sidecar: where the app listens (127.0.0.1:PORT)");
  cmd->add_option("--inbound", f->inbound,
                  "Sidecar: the mesh-facing listener (default 127.0.0.1:0)");
  cmd->add_option("--upstream", f->upstreams,
                  "Sidecar: SERVICE:LOCALPORT, a local listener reaching SERVICE (repeatable)");
  cmd->add_option("--http-proxy", f->http_proxy,
                  "Sidecar: a local HTTP proxy listener reaching every service by name");
  cmd->add_option("--token", f->token, "ACL token for the control plane");
  cmd->add_option("--health-path", f->health_path,
                  "Sidecar: the app's HTTP health check path (default /healthz)");
  cmd->add_flag("--health-tcp", f->health_tcp, "Sidecar: check the app with a TCP connect");
  cmd->add_option("--tag", f->tags, "Sidecar: an instance tag (repeatable)");
  cmd->add_option("--meta", f->meta, "Sidecar: instance metadata KEY=VALUE (repeatable)");
  cmd->add_option("--gateway", f->gateway, "Gateway: its name (routes bound to it)");
  cmd->add_option("--listen", f->listen, "Gateway: the listener address");
  cmd->add_option("--admin", f->admin, "Mesh mode: the admin listener (default 127.0.0.1:0)");
  cmd->add_option("--access-log", f->access_log, "Mesh mode: access-log path (default none)");
  cmd->add_option("--mesh-heartbeat", f->heartbeat,
                  "Mesh mode: the server's heartbeat period; 3 without a byte reconnect "
                  "(default 10s)");
  cmd->footer("File mode: SIGHUP or POST /reload on the admin listener reloads the file. "
              "SIGINT/SIGTERM stop gracefully (a sidecar deregisters first).");
  cmd->callback([&action, f, config, server] {
    if (config->count() > 0 && server->count() > 0) {
      action = [] {
        std::fprintf(stderr, "trellis proxy: --config and --server exclude each other (a file "
                             "configures the proxy, or the control plane does)\n");
        return kExitUsage;
      };
    } else if (server->count() > 0) {
      action = [f] { return runMesh(*f); };
    } else if (config->count() > 0) {
      const bool mesh_flags = !f->service.empty() || !f->gateway.empty() || !f->app.empty() ||
                              !f->upstreams.empty() || !f->http_proxy.empty() || !f->listen.empty();
      if (mesh_flags)
        action = [] {
          std::fprintf(stderr, "trellis proxy: --service, --gateway, --app, --upstream, "
                               "--http-proxy and --listen need --server, not --config\n");
          return kExitUsage;
        };
      else
        action = [f] { return runProxy(f->options); };
    } else {
      action = [] {
        std::fprintf(stderr, "trellis proxy: needs --config FILE, or --server ADDR with "
                             "--service or --gateway\n");
        return kExitUsage;
      };
    }
  });
}

} // namespace trellis::cli
