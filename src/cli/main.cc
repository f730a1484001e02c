#include <cstdio>

#include "base/log.h"
#include "cli/command.h"

using namespace trellis::cli;

int main(int argc, char** argv) {
  CLI::App app{"Trellis: a service mesh in one binary (registry, DNS, CA, proxy, runtime)",
               "trellis"};
  app.require_subcommand(1);
  app.fallthrough(); // global flags may follow the verb: `trellis proxy --log-level debug`
  app.set_help_all_flag("--help-all", "Print help for every verb");
  GlobalOptions global;
  app.add_option("--log-level", global.log_level,
                 "trace|debug|info|warn|error|off (default $TRELLIS_LOG_LEVEL or info)")
      ->envname("TRELLIS_LOG_LEVEL");
  app.add_option("--log-format", global.log_format,
                 "text|json (default $TRELLIS_LOG_FORMAT or text)")
      ->envname("TRELLIS_LOG_FORMAT");

  Action action;
  addVersionCommand(app, action);
  addServerCommand(app, global, action);
  addProxyCommand(app, global, action);
  addUpCommand(app, global, action);
  addApplyCommand(app, global, action);
  addGetCommand(app, global, action);
  addDeleteCommand(app, global, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  if (auto st = trellis::log::init(global.log_level, global.log_format); !st.ok()) {
    std::fprintf(stderr, "trellis: %s\n", st.error().message().c_str());
    return kExitUsage;
  }
  return action ? action() : kExitUsage;
}
