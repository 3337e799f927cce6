// Host LocalCopiers: the threaded copier (several threads, large copies split
// into chunks, later copies started early when they touch none of the bytes
// of earlier ones) gives exactly what the same copies give one after the
// other with memcpy, for random sequences full of overlaps and chains.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "eplb/error.h"
#include "eplb/migration.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

std::vector<uint8_t> RandomBytes(size_t n, std::mt19937_64& rng) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

class ThreadedHostCopier : public testing::TestWithParam<int> {};

// Copies among four small buffers, so that most copies overlap an earlier
// one's source or destination: read after write, write after read, write
// after write. Sizes from 1 byte to 3 MiB (large ones are split into chunks).
TEST_P(ThreadedHostCopier, RandomOverlappingCopiesMatchMemcpyInOrder) {
  const int threads = GetParam();
  std::mt19937_64 rng(1234 + threads);
  constexpr size_t kBuffers = 4, kBytes = size_t{4} << 20;
  std::vector<std::vector<uint8_t>> copied, expected;
  for (size_t i = 0; i < kBuffers; ++i) {
    copied.push_back(RandomBytes(kBytes, rng));
    expected.push_back(copied.back());
  }
  auto copier = MakeThreadedHostCopier(threads);
  for (int round = 0; round < 150; ++round) {
    size_t bytes = (rng() % 4 == 0) ? 1 + rng() % 64 : 1 + rng() % (size_t{3} << 20);
    size_t sb = rng() % kBuffers, db = rng() % kBuffers;
    size_t so = rng() % (kBytes - bytes + 1), dof = rng() % (kBytes - bytes + 1);
    // One copy never overlaps itself (memcpy's contract): then another buffer.
    if (sb == db && so < dof + bytes && dof < so + bytes) db = (db + 1) % kBuffers;
    std::memcpy(expected[db].data() + dof, expected[sb].data() + so, bytes);
    copier->Copy(copied[db].data() + dof, copied[sb].data() + so, bytes);
    if (rng() % 25 == 0) copier->Wait(DeadlineAfter(30s));  // sometimes mid-sequence
  }
  copier->Wait(DeadlineAfter(30s));
  for (size_t i = 0; i < kBuffers; ++i) EXPECT_TRUE(copied[i] == expected[i]) << "buffer " << i;
}

// A chain where each copy reads what the one before wrote, large enough to
// be split over every thread: a -> b, b -> c, c (front half) -> a (back half).
TEST_P(ThreadedHostCopier, ChainOfLargeCopiesSeesEachResult) {
  std::mt19937_64 rng(7);
  constexpr size_t kBytes = size_t{16} << 20;
  auto a = RandomBytes(kBytes, rng);
  std::vector<uint8_t> b(kBytes, 0), c(kBytes, 0);
  const auto original = a;
  auto copier = MakeThreadedHostCopier(GetParam());
  copier->Copy(b.data(), a.data(), kBytes);
  copier->Copy(c.data(), b.data(), kBytes);
  copier->Copy(a.data() + kBytes / 2, c.data(), kBytes / 2);
  copier->Wait(DeadlineAfter(30s));
  EXPECT_TRUE(b == original);
  EXPECT_TRUE(c == original);
  EXPECT_EQ(0, std::memcmp(a.data(), original.data(), kBytes / 2));
  EXPECT_EQ(0, std::memcmp(a.data() + kBytes / 2, original.data(), kBytes / 2));
}

// Copies still queued when the copier goes away are done first.
TEST_P(ThreadedHostCopier, DestructionFinishesQueuedCopies) {
  std::mt19937_64 rng(11);
  constexpr size_t kBytes = size_t{8} << 20;
  const auto src = RandomBytes(kBytes, rng);
  std::vector<std::vector<uint8_t>> dst(6, std::vector<uint8_t>(kBytes, 0));
  {
    auto copier = MakeThreadedHostCopier(GetParam());
    for (auto& d : dst) copier->Copy(d.data(), src.data(), kBytes);
  }
  for (const auto& d : dst) EXPECT_TRUE(d == src);
}

INSTANTIATE_TEST_SUITE_P(Threads, ThreadedHostCopier, testing::Values(1, 2, 4),
                         [](const auto& info) { return std::to_string(info.param) + "_threads"; });

TEST(HostCopier, WaitPastItsDeadlineThrowsThenSucceeds) {
  constexpr size_t kBytes = size_t{64} << 20;
  std::vector<uint8_t> src(kBytes, 5), dst(kBytes, 0);
  auto copier = MakeThreadedHostCopier(2);
  for (int i = 0; i < 4; ++i) copier->Copy(dst.data(), src.data(), kBytes);
  // 256 MiB of copies take milliseconds; this deadline has already passed.
  EXPECT_THROW(copier->Wait(Clock::now()), TimeoutError);
  copier->Wait(DeadlineAfter(30s));
  EXPECT_EQ(dst.front(), 5);
  EXPECT_EQ(dst.back(), 5);
}

TEST(HostCopier, ThreadCountsOutsideTheRangeAreRefused) {
  EXPECT_THROW(MakeThreadedHostCopier(-1), InvalidArgument);
  EXPECT_THROW(MakeThreadedHostCopier(65), InvalidArgument);
  const int n = DefaultHostCopierThreads();
  EXPECT_GE(n, 1);
  EXPECT_LE(n, 4);
  EXPECT_NE(MakeThreadedHostCopier(0), nullptr);
}

}  // namespace
}  // namespace eplb
