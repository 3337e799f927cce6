// The gloo control group across real processes: barrier, sums, all-gather,
// misuse, and a stalled rank that costs one call, not the group.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "eplb/error.h"
#include "eplb/gloo.h"
#include "support/multiprocess.h"
#include "support/paths.h"
#include "support/worker_util.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

int failures = 0;

void Check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "CHECK FAILED: %s\n", what.c_str());
  }
}

double ValueOf(int rank, size_t i) { return 0.1 * (rank + 1) * (i + 1) + 1e-9 * rank; }

// Runs f, which must throw an eplb::Error whose message holds `text`.
template <typename F>
void ExpectError(F f, const std::string& text, const std::string& what) {
  try {
    f();
    Check(false, what + ": no error");
  } catch (const Error& e) {
    test::ReportError(e, 0);
    Check(std::string(e.what()).find(text) != std::string::npos, what + ": " + e.what());
  }
}

EPLB_TEST_WORKER(collectives) {
  auto w = test::JoinRun();
  const int me = w.env.rank, n = w.env.world_size;
  auto group = ConnectGlooControlGroup(w.Gloo("control"), DeadlineAfter(20s));
  Check(group->name() == "gloo" && group->rank() == me && group->size() == n, "identity");

  group->Barrier(DeadlineAfter(5s));

  // Sums: the same bits on every rank, equal to summing in rank order here.
  std::vector<double> d(1000);
  for (size_t i = 0; i < d.size(); ++i) d[i] = ValueOf(me, i);
  group->AllReduceSum(std::span<double>(d), DeadlineAfter(5s));
  for (size_t i = 0; i < d.size(); ++i) {
    double expect = ValueOf(0, i);
    for (int r = 1; r < n; ++r) expect += ValueOf(r, i);
    if (std::memcmp(&expect, &d[i], sizeof(double)) != 0) {
      Check(false, "double sum at " + std::to_string(i));
      break;
    }
  }
  std::vector<int64_t> v = {me, int64_t(1) << 40, -7 * me, 1};
  group->AllReduceSum(std::span<int64_t>(v), DeadlineAfter(5s));
  Check(v[0] == int64_t(n) * (n - 1) / 2 && v[1] == int64_t(n) << 40 && v[2] == -7 * int64_t(n) * (n - 1) / 2 &&
            v[3] == n,
        "int64 sum");
  std::vector<double> none;
  group->AllReduceSum(std::span<double>(none), DeadlineAfter(5s));

  // All-gather of blobs of different sizes (rank 0's is empty).
  std::vector<uint8_t> blob(size_t(me) * 1000, static_cast<uint8_t>(me + 1));
  auto all = group->AllGather(blob, DeadlineAfter(5s));
  Check(all.size() == size_t(n), "all-gather size");
  for (int r = 0; r < n && r < int(all.size()); ++r) {
    Check(all[r] == std::vector<uint8_t>(size_t(r) * 1000, static_cast<uint8_t>(r + 1)),
          "all-gather blob of rank " + std::to_string(r));
  }

  // The barrier waits for the last rank.
  if (me == n - 1) std::this_thread::sleep_for(300ms);
  auto start = Clock::now();
  group->Barrier(DeadlineAfter(5s));
  if (me != n - 1) Check(Clock::now() - start >= 250ms, "barrier returned before the last rank came");

  // Different element counts: every rank fails, the group stays usable.
  std::vector<int64_t> counts(me == 0 ? 3 : 4, 1);
  ExpectError([&] { group->AllReduceSum(std::span<int64_t>(counts), DeadlineAfter(5s)); }, "different arguments",
              "count mismatch");
  group->Barrier(DeadlineAfter(5s));

  // A rank that calls something else: out of step, named.
  ExpectError(
      [&] {
        if (me == 0) {
          group->Barrier(DeadlineAfter(5s));
        } else {
          group->AllGather(blob, DeadlineAfter(5s));
        }
      },
      "out of step", "operation mismatch");
  group->Barrier(DeadlineAfter(5s));

  // The last rank stalls past the others' deadline: they time out naming it;
  // it learns at once that they left; the next call rebuilds the group.
  if (me == n - 1) {
    std::this_thread::sleep_for(1500ms);
    ExpectError([&] { group->Barrier(DeadlineAfter(5s)); }, "left the group", "late rank");
  } else {
    start = Clock::now();
    try {
      group->Barrier(DeadlineAfter(700ms));
      Check(false, "barrier without the stalled rank succeeded");
    } catch (const TimeoutError& e) {
      test::ReportError(e, test::MsSince(start));
      Check(e.peer() == n - 1 && e.layer() == "gloo" && e.operation() == "barrier", e.what());
    }
  }
  v = {1};
  group->AllReduceSum(std::span<int64_t>(v), DeadlineAfter(10s));
  Check(v[0] == n, "sum after the rebuild");
  group->Barrier(DeadlineAfter(5s));

  std::fprintf(stderr, "collectives %s rank=%d\n", failures == 0 ? "ok" : "FAILED", me);
  return failures == 0 ? 0 : 1;
}

TEST(GlooControlGroup, CollectivesOnFourRanks) {
  test::RankGroup group(test::Ranks("collectives", 4));
  auto exits = group.Wait(DeadlineAfter(60s));
  for (const auto& e : exits) {
    EXPECT_TRUE(e.status.ok()) << test::Describe(exits);
    EXPECT_NE(e.stderr_text.find("collectives ok rank=" + std::to_string(e.rank)), std::string::npos);
  }
  for (int r = 0; r < 3; ++r) {
    EXPECT_NE(exits[r].stderr_text.find("kind=timeout rank=" + std::to_string(r) + " peer=3 layer=gloo op=barrier"),
              std::string::npos)
        << exits[r].stderr_text;
  }
}

TEST(GlooControlGroup, CollectivesOnTwoRanks) {
  test::RankGroup group(test::Ranks("collectives", 2));
  auto exits = group.Wait(DeadlineAfter(60s));
  for (const auto& e : exits) EXPECT_TRUE(e.status.ok()) << test::Describe(exits);
}

TEST(GlooControlGroup, OneRankIsItsOwnGroup) {
  GlooOptions o;
  o.store = MakeFileStore(test::MakeTempDir("eplb-control-"));
  o.rank = 0;
  o.world_size = 1;
  auto group = ConnectGlooControlGroup(o, DeadlineAfter(5s));
  group->Barrier(DeadlineAfter(1s));
  std::vector<double> d = {1.5, -2};
  group->AllReduceSum(std::span<double>(d), DeadlineAfter(1s));
  EXPECT_EQ(d, (std::vector<double>{1.5, -2}));
  std::vector<uint8_t> blob = {1, 2, 3};
  auto all = group->AllGather(blob, DeadlineAfter(1s));
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0], blob);
}

}  // namespace
}  // namespace eplb
