#include <cstdio>

#include "base/dispatcher.h"
#include "base/log.h"
#include "base/signals.h"
#include "cli/command.h"
#include "proxy/proxy_server.h"

namespace trellis::cli {

namespace {

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

} // namespace

void addProxyCommand(CLI::App& app, const GlobalOptions&, Action& action) {
  auto* cmd = app.add_subcommand(
      "proxy", "Run the data-plane proxy from a configuration file (docs/proxy.md)");
  auto opts = std::make_shared<proxy::ProxyOptions>();
  cmd->add_option("--config,-c", opts->config_path, "The proxy's YAML configuration file")
      ->required();
  cmd->add_option("--concurrency", opts->concurrency,
                  "Worker threads (default: the file's `concurrency`, else one per CPU)")
      ->check(CLI::Range(1, 256));
  cmd->footer("SIGHUP or POST /reload on the admin listener reloads the file; "
              "SIGINT/SIGTERM stop gracefully.");
  cmd->callback([&action, opts] { action = [opts] { return runProxy(*opts); }; });
}

} // namespace trellis::cli
