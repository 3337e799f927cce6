// LayerThreads (runtime/layer_threads.h): every layer runs exactly once, in
// ranges, and every policy gives the same placement bit for bit with threads
// lent as without, on a measured DeepSeek-V3 load.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "eplb/error.h"
#include "eplb/policy.h"
#include "io/files.h"
#include "runtime/layer_threads.h"
#include "support/paths.h"

namespace eplb {
namespace {

TEST(LayerThreads, AbsurdCountsAreRefused) {
  EXPECT_THROW(runtime::LayerThreads(runtime::LayerThreads::kMaxThreads + 1), InvalidArgument);
  EXPECT_THROW(runtime::LayerThreads(-1), InvalidArgument);
}

// A process that cannot start the threads it asks for (its address space
// capped below their stacks) gets an error and exits, instead of hanging or
// terminating. In a child process: the cap must not reach the test runner.
TEST(LayerThreads, ThreadsThatCannotStartAreAnErrorNotAHang) {
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    rlimit cap{};
    getrlimit(RLIMIT_AS, &cap);
    // What this process maps now, plus room for a few 8 MiB stacks.
    FILE* statm = std::fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (statm == nullptr || std::fscanf(statm, "%lu", &pages) != 1) _exit(10);
    std::fclose(statm);
    cap.rlim_cur = pages * static_cast<unsigned long>(sysconf(_SC_PAGESIZE)) + (64ul << 20);
    if (setrlimit(RLIMIT_AS, &cap) != 0) _exit(11);
    try {
      runtime::LayerThreads pool(runtime::LayerThreads::kMaxThreads);
      _exit(12);  // every thread started: the cap did not bite
    } catch (const Error& e) {
      _exit(std::strstr(e.what(), "could not start thread") != nullptr ? 0 : 13);
    } catch (...) {
      _exit(14);
    }
  }
  int status = 0;
  const auto start = std::chrono::steady_clock::now();
  pid_t done = 0;
  while ((done = waitpid(child, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(20))
    usleep(10000);
  if (done == 0) {
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    FAIL() << "the pool hung when its threads could not start";
  }
  ASSERT_TRUE(WIFEXITED(status)) << "child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10-11: setup, 12: no failure, 13: wrong error, 14: other exception";
}

TEST(LayerThreads, EveryLayerOnceInRangesAndErrorsPassThrough) {
  for (int threads : {1, 2, 3, 7}) {
    runtime::LayerThreads pool(threads);
    EXPECT_EQ(pool.threads(), threads);
    for (int n : {1, 2, 5, 58, 61}) {
      std::vector<std::atomic<int>> seen(n);
      pool.Run(n, [&](int begin, int end) {
        ASSERT_LE(begin, end);
        for (int l = begin; l < end; ++l) seen[l]++;
      });
      for (int l = 0; l < n; ++l) EXPECT_EQ(seen[l].load(), 1) << threads << " threads, layer " << l << " of " << n;
    }
    EXPECT_THROW(pool.Run(8, [](int begin, int) {
      if (begin == 0) throw std::runtime_error("layer 0 failed");
    }),
                 std::runtime_error);
    // Still usable after an error.
    std::atomic<int> count{0};
    pool.Run(10, [&](int begin, int end) { count += end - begin; });
    EXPECT_EQ(count.load(), 10);
  }
}

TEST(LayerThreads, PoliciesGiveTheSamePlacementWithAndWithoutThreads) {
  const LoadMatrix load =
      io::ReadLoadFile(test::DataDir() + "/loads/deepseek-v3-prefill_in1024.json").load;
  const LoadMatrix other =
      io::ReadLoadFile(test::DataDir() + "/loads/deepseek-v3-prefill_in512.json").load;
  runtime::LayerThreads pool(3);
  for (const std::string& name : PolicyNames()) {
    auto policy = MakePolicy(name);
    PolicyInput in;
    in.load = &other;
    in.num_replicas = 288;
    in.num_groups = 8;
    in.num_nodes = 4;
    in.num_ranks = 32;
    const Placement previous = ComputePlacement(*policy, in);
    in.load = &load;
    in.previous = &previous;
    const Placement alone = ComputePlacement(*policy, in);
    in.run_layers = pool.runner();
    const Placement lent = ComputePlacement(*policy, in);
    EXPECT_EQ(alone.phy2log, lent.phy2log) << name;
  }
}

}  // namespace
}  // namespace eplb
