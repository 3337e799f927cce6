// Subcommands of the eplb tool. Each lives in its own cmd_*.cc file and
// registers itself with EPLB_COMMAND; main.cc knows none of them by name.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace eplb::cli {

// Adds the subcommand to `app` and returns the function to run when it is
// selected; that function returns the process exit status.
using CommandSetup = std::function<std::function<int()>(CLI::App& app)>;

struct CommandRegistration {
  CommandRegistration(const char* name, CommandSetup setup);
};

struct RegisteredCommand {
  std::string name;
  CommandSetup setup;
};
std::vector<RegisteredCommand>& Commands();

// For options naming a file: an empty path is refused at parse time (exit 2)
// instead of being taken for "not given".
inline const CLI::Validator& NonEmptyPath() {
  static const CLI::Validator v(
      [](std::string& path) { return path.empty() ? std::string("the path is empty") : std::string(); },
      "PATH");
  return v;
}

}  // namespace eplb::cli

#define EPLB_COMMAND(name, setup) \
  static ::eplb::cli::CommandRegistration eplb_command_registration_##name(#name, setup)
