// LayerThreads (runtime/layer_threads.h): every layer runs exactly once, in
// ranges, and every policy gives the same placement bit for bit with threads
// lent as without, on a measured DeepSeek-V3 load.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "eplb/policy.h"
#include "io/files.h"
#include "runtime/layer_threads.h"
#include "support/paths.h"

namespace eplb {
namespace {

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
