#include "support/run_command.h"

#include <filesystem>

#include "eplb/deadline.h"
#include "io/files.h"
#include "io/process.h"
#include "support/paths.h"

namespace eplb::test {

CommandResult RunCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                         Environment env) {
  const std::string dir = MakeTempDir("eplb-run-");
  io::SpawnOptions options;
  options.argv = argv;
  options.env = std::move(env);
  options.stdout_path = dir + "/stdout";
  options.stderr_path = dir + "/stderr";
  io::Process child = io::Process::Spawn(options);
  CommandResult result;
  std::optional<io::ExitStatus> status = child.Wait(DeadlineAfter(timeout));
  if (!status) {
    result.timed_out = true;
    status = child.Kill();
  }
  result.exit_code = status->exited ? status->code : 128 + status->signal;
  result.out = io::ReadFile(options.stdout_path);
  result.err = io::ReadFile(options.stderr_path);
  std::filesystem::remove_all(dir);
  return result;
}

CommandResult RunCli(const std::vector<std::string>& args, std::chrono::milliseconds timeout, Environment env) {
  std::vector<std::string> argv{CliPath()};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, timeout, std::move(env));
}

}  // namespace eplb::test
