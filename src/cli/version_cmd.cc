#include <cstdio>

#include "base/version.h"
#include "cli/command.h"

namespace trellis::cli {

void addVersionCommand(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("version", "Print the version and the git commit it was built from");
  cmd->callback([&action] {
    action = [] {
      std::printf("trellis %s (commit %s)\n", kVersion, kGitCommit);
      return kExitOk;
    };
  });
}

int notImplemented(const std::string& verb) {
  std::fprintf(stderr, "trellis %s: not implemented yet\n", verb.c_str());
  return kExitUsage;
}

} // namespace trellis::cli
