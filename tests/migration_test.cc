// Migration executor on one rank: the local path (keeps, local copies,
// several tensors per expert, strides), bounds of staging, and bad input.
// Multi-rank migrations over real Gloo are in migration_gloo_test.cc.
#include "eplb/migration.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "eplb/bootstrap.h"
#include "eplb/error.h"
#include "eplb/gloo.h"
#include "support/paths.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

// A run of one rank: real gloo communicator and control group of world size
// 1 over a file store. A plan for one rank never crosses the wire.
struct SingleRank {
  static GlooOptions Options(std::shared_ptr<Store> store, const char* name) {
    GlooOptions o;
    o.store = std::move(store);
    o.rank = 0;
    o.world_size = 1;
    o.name = name;
    return o;
  }
  std::shared_ptr<Store> store = MakeFileStore(test::MakeTempDir("eplb-migration-"));
  std::unique_ptr<Communicator> comm =
      ConnectGlooCommunicator(Options(store, "weights"), DeadlineAfter(10s));
  std::unique_ptr<ControlGroup> control =
      ConnectGlooControlGroup(Options(store, "control"), DeadlineAfter(10s));

  MigrationExecutor Executor(std::vector<LayerWeights> weights, int slots_per_rank,
                             int staging_layers = 1) {
    MigrationOptions options;
    options.staging_layers = staging_layers;
    return MigrationExecutor(*comm, *control, std::move(weights), slots_per_rank,
                             staging_layers == 2 ? MakeThreadedHostCopier(3) : MakeHostCopier(),
                             options, DeadlineAfter(10s));
  }
};

// Byte i of tensor t of expert e of layer l.
uint8_t Byte(int l, int t, int e, size_t i) {
  return static_cast<uint8_t>((l * 131 + t * 31 + e * 7 + i * 13 + (i >> 8)) ^ (e << 3));
}

struct Model {
  int layers, slots;
  std::vector<uint64_t> tensor_bytes;                           // per tensor, bytes of one expert
  uint64_t pad = 0;                                             // stride = bytes + pad
  std::vector<std::vector<std::vector<uint8_t>>> storage = {};  // [layer][tensor]

  std::vector<LayerWeights> Weights() {
    storage.assign(layers, {});
    std::vector<LayerWeights> out(layers);
    for (int l = 0; l < layers; ++l) {
      for (uint64_t b : tensor_bytes) {
        storage[l].emplace_back((b + pad) * slots, 0xEE);
        out[l].tensors.push_back(ExpertTensor{
            MemoryRegion{storage[l].back().data(), storage[l].back().size(), MemoryKind::kHost, -1},
            b, b + pad});
      }
    }
    return out;
  }
  void Fill(const Placement& p) {
    for (int l = 0; l < layers; ++l)
      for (size_t t = 0; t < tensor_bytes.size(); ++t)
        for (int s = 0; s < slots; ++s)
          for (uint64_t i = 0; i < tensor_bytes[t]; ++i)
            storage[l][t][s * (tensor_bytes[t] + pad) + i] =
                Byte(l, static_cast<int>(t), p.expert_at(l, s), i);
  }
  // Every slot holds exactly its expert's bytes; padding untouched.
  void Verify(const Placement& p) {
    for (int l = 0; l < layers; ++l)
      for (size_t t = 0; t < tensor_bytes.size(); ++t)
        for (int s = 0; s < slots; ++s) {
          const uint8_t* at = storage[l][t].data() + s * (tensor_bytes[t] + pad);
          for (uint64_t i = 0; i < tensor_bytes[t]; ++i)
            ASSERT_EQ(at[i], Byte(l, static_cast<int>(t), p.expert_at(l, s), i))
                << "layer " << l << " tensor " << t << " slot " << s << " byte " << i;
          for (uint64_t i = tensor_bytes[t]; i < tensor_bytes[t] + pad; ++i)
            ASSERT_EQ(at[i], 0xEE) << "padding written";
        }
  }
};

Placement RandomPlacement(std::mt19937& rng, int layers, int experts, int slots) {
  std::vector<int32_t> p2l;
  for (int l = 0; l < layers; ++l) {
    std::vector<int32_t> p(slots);
    for (int s = 0; s < slots; ++s)
      p[s] = s < experts ? s : std::uniform_int_distribution<int>(0, experts - 1)(rng);
    std::shuffle(p.begin(), p.end(), rng);
    p2l.insert(p2l.end(), p.begin(), p.end());
  }
  return Placement::FromPhy2Log(layers, experts, 1, std::move(p2l));
}

// With one staging layer (memcpy) and two (a copier thread, commits
// overlapping the next layer).
class MigrationStaging : public testing::TestWithParam<int> {};

TEST_P(MigrationStaging, SingleRankRandomRebalances) {
  std::mt19937 rng(99);
  Model m{3, 12, {64, 40, 8}, 5};
  SingleRank run;
  MigrationExecutor ex = run.Executor(m.Weights(), m.slots, GetParam());
  EXPECT_EQ(ex.bytes_per_expert(0), 112u);
  // One layer of this rank's slots per staging buffer.
  EXPECT_EQ(ex.staging_bytes(), 112u * 12 * GetParam());
  Placement cur = RandomPlacement(rng, 3, 7, 12);
  m.Fill(cur);
  for (int round = 0; round < 20; ++round) {
    Placement next = RandomPlacement(rng, 3, 7, 12);
    auto reports = ex.Migrate(cur, next, DeadlineAfter(std::chrono::seconds(5)));
    ASSERT_EQ(reports.size(), 3u);
    for (const auto& r : reports) {
      EXPECT_EQ(r.rank.experts_received, 0);
      EXPECT_EQ(r.rank.bytes_received, 0u);
      EXPECT_EQ(r.rank.kept + r.rank.local_copies, 12);
      EXPECT_GE(r.seconds(), 0.0);
    }
    m.Verify(next);
    cur = next;
  }
}

INSTANTIATE_TEST_SUITE_P(OneAndTwoLayers, MigrationStaging, testing::Values(1, 2));

// Two staging layers: a runtime stages layer 1 while layer 0 awaits its
// commit, commits them in any order; a Stage beyond two replaces the oldest.
TEST(Migration, TwoStagedLayersCommitIndependently) {
  Model m{3, 4, {16}, 0};
  SingleRank run;
  MigrationExecutor ex = run.Executor(m.Weights(), m.slots, 2);
  Placement a = Placement::FromPhy2Log(3, 3, 1, {0, 1, 2, 0, 0, 1, 2, 0, 0, 1, 2, 0});
  Placement b = Placement::FromPhy2Log(3, 3, 1, {2, 1, 0, 2, 1, 0, 2, 1, 1, 2, 0, 0});
  m.Fill(a);
  const auto before = m.storage;
  auto deadline = DeadlineAfter(5s);
  LayerPlan p0 = ex.Plan(a, b, 0), p1 = ex.Plan(a, b, 1), p2 = ex.Plan(a, b, 2);
  ex.Stage(p0, deadline);
  ex.Stage(p1, deadline);
  EXPECT_EQ(m.storage, before) << "staging wrote into the weights";
  ex.Commit(p1);
  ex.Commit(p0);
  ex.Stage(p2, deadline);
  ex.Commit(p2);
  m.Verify(b);
  // Back to a: three stages into two buffers drop the first (layer 0).
  LayerPlan q0 = ex.Plan(b, a, 0), q1 = ex.Plan(b, a, 1), q2 = ex.Plan(b, a, 2);
  ex.Stage(q0, deadline);
  ex.Stage(q1, deadline);
  ex.Stage(q2, deadline);
  EXPECT_THROW(ex.Commit(q0), Error);
  ex.Commit(q2);
  ex.Commit(q1);
  // Layer 0 still holds b, layers 1 and 2 hold a.
  Placement mixed = Placement::FromPhy2Log(3, 3, 1, {2, 1, 0, 2, 0, 1, 2, 0, 0, 1, 2, 0});
  m.Verify(mixed);
  ex.Stage(q0, deadline);
  ex.Commit(q0);
  m.Verify(a);
}

TEST(Migration, NoChangeWritesNothing) {
  std::mt19937 rng(5);
  Model m{2, 8, {32}, 0};
  SingleRank run;
  MigrationExecutor ex = run.Executor(m.Weights(), m.slots);
  Placement p = RandomPlacement(rng, 2, 5, 8);
  m.Fill(p);
  auto before = m.storage;
  auto reports = ex.Migrate(p, p, DeadlineAfter(std::chrono::seconds(5)));
  for (const auto& r : reports) {
    EXPECT_EQ(r.total.slots_changed(), 0);
    EXPECT_EQ(r.total.bytes_sent, 0u);
  }
  EXPECT_EQ(m.storage, before);
}

TEST(Migration, StageLeavesWeightsUntilCommit) {
  Model m{1, 4, {16, 16}, 0};
  SingleRank run;
  MigrationExecutor ex = run.Executor(m.Weights(), m.slots);
  Placement a = Placement::FromPhy2Log(1, 3, 1, {0, 1, 2, 0});
  Placement b = Placement::FromPhy2Log(1, 3, 1, {2, 1, 0, 2});
  m.Fill(a);
  auto before = m.storage;
  LayerPlan plan = ex.Plan(a, b, 0);
  auto report = ex.Stage(plan, DeadlineAfter(std::chrono::seconds(5)));
  EXPECT_EQ(report.rank.local_copies, 3);
  EXPECT_EQ(m.storage, before) << "staging wrote into the weights";
  ex.Commit(plan, &report);
  m.Verify(b);
  // Committing twice (nothing staged) is refused rather than copying stale bytes.
  EXPECT_THROW(ex.Commit(plan), Error);
}

TEST(Migration, RejectsInconsistentWeights) {
  SingleRank run;
  Communicator& comm = *run.comm;
  ControlGroup& control = *run.control;
  std::vector<uint8_t> small(100);
  auto make = [&](uint64_t bytes, uint64_t stride, MemoryKind kind) {
    std::vector<LayerWeights> w(1);
    w[0].tensors.push_back({MemoryRegion{small.data(), small.size(), kind, 0}, bytes, stride});
    return w;
  };
  auto deadline = DeadlineAfter(std::chrono::seconds(5));
  EXPECT_THROW(MigrationExecutor(comm, control, make(30, 0, MemoryKind::kHost), 4, MakeHostCopier(),
                                 {}, deadline),
               InvalidArgument);  // 4 x 30 > 100
  EXPECT_THROW(MigrationExecutor(comm, control, make(20, 10, MemoryKind::kHost), 4,
                                 MakeHostCopier(), {}, deadline),
               InvalidArgument);  // stride < bytes
  EXPECT_THROW(MigrationExecutor(comm, control, make(20, 0, MemoryKind::kCuda), 4, MakeHostCopier(),
                                 {}, deadline),
               InvalidArgument);  // device memory, host copier
  EXPECT_THROW(MigrationExecutor(comm, control, {}, 4, MakeHostCopier(), {}, deadline),
               InvalidArgument);
  MigrationExecutor ok(comm, control, make(25, 0, MemoryKind::kHost), 4, MakeHostCopier(), {},
                       deadline);
  // A plan for another shape is refused.
  Placement a = Placement::Identity(1, 4, 8, 1);
  EXPECT_THROW(ok.MigrateLayer(PlanLayer(a, a, 0, {}), deadline), InvalidArgument);
  // A membership change's plan (a slot from the weight source, slots out of
  // service) is not this executor's to run.
  const std::vector<int32_t> before{0, 1, 2, 3}, after{-1, -1, 3, 2};
  EXPECT_THROW(ok.MigrateLayer(PlanLayer(before, after, 1, 0, {}, PlanSources{{}, true}), deadline),
               InvalidArgument);
}

}  // namespace
}  // namespace eplb
