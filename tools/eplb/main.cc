// eplb: expert-parallel load balancer command-line tool.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <map>

#include "eplb/command.h"
#include "eplb/error.h"

namespace eplb::cli {

std::vector<RegisteredCommand>& Commands() {
  static std::vector<RegisteredCommand> commands;
  return commands;
}

CommandRegistration::CommandRegistration(const char* name, CommandSetup setup) {
  Commands().push_back({name, std::move(setup)});
}

}  // namespace eplb::cli

int main(int argc, char** argv) {
  CLI::App app{"eplb: expert-parallel load balancer for Mixture-of-Experts inference"};
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "debug logging");
  std::map<CLI::App*, std::function<int()>> runners;
  for (auto& command : eplb::cli::Commands()) {
    CLI::App* sub = nullptr;
    auto run = command.setup(app);
    for (auto* s : app.get_subcommands({})) {
      if (s->get_name() == command.name) sub = s;
    }
    runners[sub] = std::move(run);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  spdlog::set_level(verbose ? spdlog::level::debug : spdlog::level::info);
  spdlog::set_pattern("%^[%H:%M:%S.%e] [%l]%$ %v");
  try {
    for (auto* sub : app.get_subcommands()) {
      auto it = runners.find(sub);
      if (it != runners.end()) return it->second();
    }
    return 2;
  } catch (const eplb::InvalidArgument& e) {
    std::fprintf(stderr, "eplb: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eplb: error: %s\n", e.what());
    return 1;
  }
}
