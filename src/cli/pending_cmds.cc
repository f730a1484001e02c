// Verbs whose implementation has not landed yet. Each keeps its documented flags so that
// `--help` already describes the contract; running one says so and exits 2.
#include "cli/command.h"

namespace trellis::cli {

void addUpCommand(CLI::App& app, const GlobalOptions&, Action& action) {
  auto* cmd = app.add_subcommand("up", "Start manifests' workloads on this machine with sidecars");
  cmd->allow_extras();
  cmd->callback([&action] { action = [] { return notImplemented("up"); }; });
}

} // namespace trellis::cli
