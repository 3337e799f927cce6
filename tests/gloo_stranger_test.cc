// Strangers at the Gloo ports of a real run: a local process that is not part
// of the run connects to the ranks' listening sockets while they rendezvous
// (support/stranger.h), and writes a crafted frame, garbage, or nothing.
#include <gtest/gtest.h>

#include <cstdio>

#include "support/multiprocess.h"
#include "support/stranger.h"
#include "support/worker_util.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

// The stranger as its own process: root=PID mode=frame|garbage|hold ms=N.
EPLB_TEST_WORKER(stranger) {
  test::WorkerArgs kv(args);
  std::string mode = "frame";
  long root = 0, ms = 10000;
  kv.Read("mode", mode);
  kv.Read("root", root);
  kv.Read("ms", ms);
  const auto report = test::RunStranger(static_cast<pid_t>(root), test::ParseStrangerMode(mode),
                                        DeadlineAfter(std::chrono::milliseconds(ms)),
                                        std::chrono::microseconds(200), [](const std::string& line) {
                                          std::printf("%s\n", line.c_str());
                                          std::fflush(stdout);
                                        });
  std::printf("%s\n", report.Describe().c_str());
  return 0;
}

}  // namespace
}  // namespace eplb
