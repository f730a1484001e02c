#include <cstdio>
#include <string>
#include <tuple>

#include "base/dispatcher.h"
#include "base/log.h"
#include "base/signals.h"
#include "base/units.h"
#include "cli/command.h"
#include "control/control_plane.h"

namespace trellis::cli {

namespace {

struct ServerFlags {
  std::string data_dir;
  std::string http_addr = "127.0.0.1:8500";
  std::string dns_addr = "127.0.0.1:8600";
  std::string dns_domain = "trellis";
  std::vector<std::string> recursors;
  std::string node_name;
  std::string mesh_heartbeat = "10s";
  std::string mesh_coalesce = "2ms";
  std::string mesh_max_ack_wait = "1s";
  int64_t mesh_endpoint_tombstones = 1024;
};

int usage(const std::string& msg) {
  std::fprintf(stderr, "trellis server: %s\n", msg.c_str());
  return kExitUsage;
}

int runServer(const ServerFlags& f) {
  control::ControlPlaneOptions o;
  o.data_dir = f.data_dir.empty() ? control::defaultDataDir() : f.data_dir;
  auto http = net::parseSocketAddress(f.http_addr);
  if (!http)
    return usage("--http-addr: " + http.error().message());
  auto dns = net::parseSocketAddress(f.dns_addr);
  if (!dns)
    return usage("--dns-addr: " + dns.error().message());
  o.http_addr = *http;
  o.dns_addr = *dns;
  o.dns_domain = f.dns_domain;
  for (const auto& r : f.recursors) {
    auto a = net::parseSocketAddress(r.find(':') == std::string::npos ? r + ":53" : r);
    if (!a)
      return usage("--recursor: " + a.error().message());
    o.recursors.push_back(*a);
  }
  o.node_name = f.node_name;
  using std::chrono::milliseconds;
  for (const auto& [flag, text, out, min, max, range] :
       {std::tuple{"--mesh-heartbeat", &f.mesh_heartbeat, &o.mesh_heartbeat,
                   Duration(milliseconds(100)), Duration(std::chrono::hours(1)), "100ms..1h"},
        std::tuple{"--mesh-coalesce", &f.mesh_coalesce, &o.mesh_coalesce, Duration::zero(),
                   Duration(std::chrono::seconds(1)), "0..1s"},
        std::tuple{"--mesh-max-ack-wait", &f.mesh_max_ack_wait, &o.mesh_max_ack_wait,
                   Duration::zero(), Duration(std::chrono::minutes(1)), "0..1m"}}) {
    auto d = parseDuration(*text);
    if (!d)
      return usage(std::string(flag) + ": " + d.error().message());
    if (*d < min || *d > max)
      return usage(fmt::format("{}: must be {}, got {}", flag, range, *text));
    *out = *d;
  }
  if (f.mesh_endpoint_tombstones < 1 || f.mesh_endpoint_tombstones > 1000000)
    return usage("--mesh-endpoint-tombstones: must be 1..1000000, got " +
                 std::to_string(f.mesh_endpoint_tombstones));
  o.mesh_endpoint_tombstones = static_cast<size_t>(f.mesh_endpoint_tombstones);

  Dispatcher main("main", realTimeSource());
  int rc = kExitOk;
  control::ControlPlane cp(main, o);
  auto st = cp.start([&](Status ready) {
    if (!ready.ok()) {
      TLOG_ERROR("trellis server: {}", ready.error().message());
      rc = kExitRuntime;
      main.exit();
      return;
    }
    TLOG_INFO("data dir {}", o.data_dir);
    TLOG_INFO("http api listening on {}", cp.httpAddress().toString());
    TLOG_INFO("dns listening on {} (udp+tcp)", cp.dnsAddress().toString());
  });
  if (!st.ok()) {
    std::fprintf(stderr, "trellis server: %s\n", st.error().message().c_str());
    return st.error().code() == ErrorCode::kInvalidArgument ? kExitUsage : kExitRuntime;
  }
  SignalWatcher signals(
      main,
      [&](int signo) {
        TLOG_INFO("signal {}: stopping", signo);
        cp.stop();
        main.exit();
      },
      [] {});
  main.run();
  return rc;
}

} // namespace

void addServerCommand(CLI::App& app, const GlobalOptions&, Action& action) {
  auto* cmd = app.add_subcommand(
      "server", "Run the control plane: registry, Consul-compatible HTTP API, DNS (docs/api.md)");
  auto f = std::make_shared<ServerFlags>();
  cmd->add_option("--data-dir", f->data_dir,
                  "Where the registry's store lives (default $XDG_STATE_HOME/trellis or "
                  "~/.local/state/trellis)");
  cmd->add_option("--http-addr", f->http_addr, "HTTP API listen address (port 0: any free)")
      ->capture_default_str();
  cmd->add_option("--dns-addr", f->dns_addr, "DNS listen address, UDP and TCP (port 0: any free)")
      ->capture_default_str();
  cmd->add_option("--dns-domain", f->dns_domain,
                  "DNS domain answered (\"consul\" is answered too)")
      ->capture_default_str();
  cmd->add_option("--recursor", f->recursors,
                  "Upstream resolver IP[:PORT] for names outside the domain (repeatable)");
  cmd->add_option("--node-name", f->node_name, "This server's node name (default: host name)");
  cmd->add_option("--mesh-heartbeat", f->mesh_heartbeat,
                  "Mesh streams get a heartbeat after this long without a message (100ms..1h)")
      ->capture_default_str();
  cmd->add_option("--mesh-coalesce", f->mesh_coalesce,
                  "Push mesh deltas at most once per this window; a change after a quiet "
                  "period goes at once (0..1s)")
      ->capture_default_str();
  cmd->add_option("--mesh-max-ack-wait", f->mesh_max_ack_wait,
                  "A proxy is sent its next mesh delta once it acked the last one, or after "
                  "this long without that ack; 0 sends every delta at once (0..1m)")
      ->capture_default_str();
  cmd->add_option("--mesh-endpoint-tombstones", f->mesh_endpoint_tombstones,
                  "Removed endpoints remembered per service for catch-up deltas; a proxy "
                  "further behind gets that service's full list (1..1000000)")
      ->capture_default_str();
  cmd->footer("SIGINT/SIGTERM stop gracefully.");
  cmd->callback([&action, f] { action = [f] { return runServer(*f); }; });
}

} // namespace trellis::cli
