// What the online Balancer and the demo are fed: the load window (the sum
// of the last steps' counts), the synthetic load (skewed, drifting,
// deterministic) and the fingerprints expert weights are checked against.
#include <gtest/gtest.h>

#include <set>

#include "eplb/error.h"
#include "demo/synthetic_load.h"
#include "demo/fingerprint.h"
#include "runtime/load_window.h"

namespace eplb {
namespace {

// ---- load window ---------------------------------------------------------------

TEST(LoadWindow, SumsTheLastStepsOnly) {
  runtime::LoadWindow w(2, 3, 3);
  auto add = [&](int64_t a) {
    std::vector<int64_t> c0{a, 2 * a, 0}, c1{0, 0, a};
    w.Add(0, c0);
    w.Add(1, c1);
    w.Add(1, c1);  // two records of one layer in a step add up
    w.CloseStep();
  };
  add(1);
  add(10);
  EXPECT_EQ(w.steps(), 2);
  EXPECT_EQ(std::vector<int64_t>(w.sum().begin(), w.sum().end()),
            (std::vector<int64_t>{11, 22, 0, 0, 0, 22}));
  add(100);
  add(1000);  // step 1 leaves the window
  EXPECT_EQ(w.steps(), 3);
  EXPECT_EQ(std::vector<int64_t>(w.sum().begin(), w.sum().end()),
            (std::vector<int64_t>{1110, 2220, 0, 0, 0, 2220}));
  w.CloseStep();
  w.CloseStep();
  w.CloseStep();  // three empty steps empty it
  EXPECT_EQ(std::vector<int64_t>(w.sum().begin(), w.sum().end()), std::vector<int64_t>(6, 0));
}

TEST(LoadWindow, RejectsBadCounts) {
  runtime::LoadWindow w(2, 3, 4);
  std::vector<int64_t> ok{1, 2, 3}, short_row{1, 2}, negative{1, -2, 3};
  EXPECT_THROW(w.Add(2, ok), InvalidArgument);
  EXPECT_THROW(w.Add(-1, ok), InvalidArgument);
  EXPECT_THROW(w.Add(0, short_row), InvalidArgument);
  EXPECT_THROW(w.Add(0, negative), InvalidArgument);
  std::vector<int64_t> huge{0, int64_t{1} << 33, 0};
  EXPECT_THROW(w.Add(0, huge), InvalidArgument);
  EXPECT_THROW(runtime::LoadWindow(0, 3, 4), InvalidArgument);
}

// ---- synthetic load and fingerprints ---------------------------------------------

TEST(SyntheticLoad, DeterministicSkewedAndDrifting) {
  SyntheticLoadOptions o;
  o.num_layers = 2;
  o.num_experts = 16;
  o.skew = 1.2;
  o.tokens_per_step = 10000;
  o.drift_period_steps = 10;
  SyntheticLoad a(o), b(o);
  std::vector<int64_t> x(16), y(16);
  a.Counts(5, 1, 0, x);
  b.Counts(5, 1, 0, y);
  EXPECT_EQ(x, y);
  b.Counts(5, 2, 0, y);
  EXPECT_NE(x, y) << "ranks see different loads";
  int64_t total = 0, hottest = 0;
  for (int64_t c : x) total += c, hottest = std::max(hottest, c);
  EXPECT_NEAR(total, 10000, 1000);
  EXPECT_GT(hottest, 3 * total / 16) << "skewed";
  // After one drift period the hot expert has moved by one.
  std::vector<double> s0(16), s1(16);
  a.Shares(0, 0, s0);
  a.Shares(10, 0, s1);
  const int h0 = int(std::max_element(s0.begin(), s0.end()) - s0.begin());
  const int h1 = int(std::max_element(s1.begin(), s1.end()) - s1.begin());
  EXPECT_EQ((h1 + 1) % 16, h0);
}

TEST(Fingerprint, NamesItsExpert) {
  std::vector<uint8_t> buf(1003);
  runtime::FillFingerprint(buf.data(), buf.size(), 3, 7, 1);
  EXPECT_EQ(runtime::FindFingerprintMismatch(buf.data(), buf.size(), 3, 7, 1), -1);
  EXPECT_EQ(runtime::FindFingerprintMismatch(buf.data(), buf.size(), 3, 8, 1), 0);
  EXPECT_EQ(runtime::FindFingerprintMismatch(buf.data(), buf.size(), 3, 7, 2), 0);
  buf[1001] ^= 1;
  EXPECT_EQ(runtime::FindFingerprintMismatch(buf.data(), buf.size(), 3, 7, 1), 1001);
}

}  // namespace
}  // namespace eplb
