// The nixl communicator between two processes (host memory, UCX over
// loopback). Needs NIXL (>= 1.0, with its C API and UCX plugin) installed;
// skipped with the reason otherwise. The same tests run with device memory
// in the GPU suite's copy of this scenario once NIXL is on the GPU machine.
#include <gtest/gtest.h>

#include "eplb/communicator_factory.h"
#include "eplb/detect.h"
#include "eplb/error.h"
#include "eplb/bootstrap.h"
#include "support/fork_ranks.h"
#include "support/paths.h"
#include "support/transfer_pattern.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

#define SKIP_WITHOUT_NIXL()                                                      \
  do {                                                                           \
    NixlDetection d = DetectNixl(SearchEnvironment::FromProcess());              \
    if (!d.available) GTEST_SKIP() << "NIXL not usable here: " << d.reason;      \
  } while (0)

struct HostRegions {
  explicit HostRegions(int rank) : rank(rank) {
    for (int r = 0; r < 2; ++r) bytes[r] = test::PatternBytes(rank, r, test::kTwoRankRegionBytes[r]);
  }
  MemoryRegion Region(int r) { return {bytes[r].data(), bytes[r].size(), MemoryKind::kHost, -1}; }
  std::string Check(const std::vector<Transfer>& transfers) const {
    for (int r = 0; r < 2; ++r) {
      std::string bad = test::CheckRegion(rank, r, bytes[r], transfers);
      if (!bad.empty()) return bad;
    }
    return "";
  }
  int rank;
  std::vector<uint8_t> bytes[2];
};

std::unique_ptr<Communicator> MakeNixl(int rank, std::shared_ptr<Store> store) {
  CommunicatorOptions o;
  o.rank = rank;
  o.world_size = 2;
  o.store = std::move(store);
  o.key_prefix = "test";
  o.connect_timeout = 30s;
  return MakeCommunicator("nixl", o);
}

TEST(NixlCommunicator, MigratesBetweenTwoProcesses) {
  SKIP_WITHOUT_NIXL();
  auto store = MakeFileStore(test::MakeTempDir("eplb-nixl-"));
  auto out = test::ForkRanks(
      2,
      [&](int rank) -> std::string {
        HostRegions mem(rank);
        auto comm = MakeNixl(rank, store);
        for (int r = 0; r < 2; ++r) comm->RegisterRegion(mem.Region(r), DeadlineAfter(30s));
        auto migration = test::TwoRankMigration();
        comm->Execute(migration, DeadlineAfter(30s));
        std::string bad = mem.Check(migration);
        if (!bad.empty()) return bad;
        auto second = test::TwoRankFollowUp();
        comm->Execute(second, DeadlineAfter(30s));
        migration.insert(migration.end(), second.begin(), second.end());
        return mem.Check(migration);
      },
      120s);
  EXPECT_TRUE(out[0].ok && out[1].ok) << test::Describe(out);
}

TEST(NixlCommunicator, TimesOutWhenThePeerNeverExecutes) {
  SKIP_WITHOUT_NIXL();
  auto store = MakeFileStore(test::MakeTempDir("eplb-nixl-timeout-"));
  auto out = test::ForkRanks(
      2,
      [&](int rank) -> std::string {
        HostRegions mem(rank);
        auto comm = MakeNixl(rank, store);
        for (int r = 0; r < 2; ++r) comm->RegisterRegion(mem.Region(r), DeadlineAfter(30s));
        auto first = test::TwoRankFollowUp();
        comm->Execute(first, DeadlineAfter(30s));  // both connected
        if (rank == 1) {
          store->Get("rank0/done", DeadlineAfter(60s));  // alive, but silent
          return "";
        }
        auto start = Clock::now();
        try {
          comm->Execute(test::TwoRankMigration(), DeadlineAfter(2s));
          store->SetString("rank0/done", "1");
          return "Execute returned although rank 1 never took part";
        } catch (const TimeoutError& e) {
          store->SetString("rank0/done", "1");
          if (e.peer() != 1 || e.layer() != "nixl") return std::string("unclear timeout: ") + e.what();
          if (Clock::now() - start > 4s) return std::string("timed out late: ") + e.what();
          std::fprintf(stderr, "[rank 0] %s\n", e.what());
        }
        return "";
      },
      120s);
  EXPECT_TRUE(out[0].ok && out[1].ok) << test::Describe(out);
}

}  // namespace
}  // namespace eplb
