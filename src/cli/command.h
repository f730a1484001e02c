#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

namespace trellis::cli {

// Exit codes shared by every verb.
inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntime = 1;
inline constexpr int kExitUsage = 2;

// Options every verb accepts.
struct GlobalOptions {
  std::string log_level;
  std::string log_format;
};

// What a verb's parser leaves behind: the action to run once flags are parsed.
using Action = std::function<int()>;

// Each verb adds its subcommand to `app` and sets `action` when it is selected.
void addVersionCommand(CLI::App& app, Action& action);
void addServerCommand(CLI::App& app, const GlobalOptions& global, Action& action);
void addProxyCommand(CLI::App& app, const GlobalOptions& global, Action& action);
void addUpCommand(CLI::App& app, const GlobalOptions& global, Action& action);
void addApplyCommand(CLI::App& app, const GlobalOptions& global, Action& action);
void addGetCommand(CLI::App& app, const GlobalOptions& global, Action& action);
void addDeleteCommand(CLI::App& app, const GlobalOptions& global, Action& action);

// For verbs whose implementation has not landed: says so and exits 2.
int notImplemented(const std::string& verb);

} // namespace trellis::cli
