// The wire codec: round trips, and every malformed message -- short, foreign,
// another version, another kind, left-over bytes, an oversized field -- is an
// eplb::Error naming the layer, the operation, this rank and the peer.
#include "wire/codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "eplb/error.h"

namespace eplb::wire {
namespace {

using ::testing::HasSubstr;

Origin From(int peer) { return Origin{"balancer", "commit agreement of MoE layer 3", 0, peer}; }

std::vector<uint8_t> Sample() {
  return Writer(Kind::kVote).Put(int32_t{1}).Put(int64_t{-7}).PutString("group-a").Take();
}

// Runs `read` and returns the Error it throws (fails the test if none).
template <typename F>
Error Thrown(F read) {
  try {
    read();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no error";
  return Error("", "", "");
}

TEST(Wire, RoundTripsEveryFieldType) {
  const uint8_t handle[4] = {9, 8, 7, 6};
  auto bytes = Writer(Kind::kRegion)
                   .Put(uint8_t{1})
                   .Put(int32_t{-2})
                   .Put(uint64_t{1} << 40)
                   .PutString("host")
                   .PutBytes(std::vector<uint8_t>{1, 2, 3})
                   .PutFixed(handle, sizeof handle)
                   .Take();
  Reader r(bytes, Kind::kRegion, From(1));
  EXPECT_EQ(r.Get<uint8_t>(), 1);
  EXPECT_EQ(r.Get<int32_t>(), -2);
  EXPECT_EQ(r.Get<uint64_t>(), uint64_t{1} << 40);
  EXPECT_EQ(r.GetString(16), "host");
  EXPECT_EQ(r.GetBytes(16), (std::vector<uint8_t>{1, 2, 3}));
  uint8_t out[4];
  r.GetFixed(out, sizeof out);
  EXPECT_EQ(0, std::memcmp(out, handle, sizeof out));
  EXPECT_NO_THROW(r.Finish());
}

TEST(Wire, EveryTruncationIsAnErrorNamingThePeer) {
  const auto full = Sample();
  for (size_t n = 0; n < full.size(); ++n) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<long>(n));
    Error e = Thrown([&] {
      Reader r(cut, Kind::kVote, From(2));
      r.Get<int32_t>();
      r.Get<int64_t>();
      r.GetString(64);
    });
    EXPECT_EQ(e.layer(), "balancer") << n;
    EXPECT_EQ(e.operation(), "commit agreement of MoE layer 3") << n;
    EXPECT_EQ(e.rank(), 0) << n;
    EXPECT_EQ(e.peer(), 2) << n;
    EXPECT_THAT(e.what(), HasSubstr("rank 2 sent a malformed vote")) << n;
  }
}

TEST(Wire, ForeignBytesAreNotReadAsZeros) {
  std::vector<uint8_t> zeros(64, 0);
  Error e = Thrown([&] { Reader(zeros, Kind::kVote, From(1)); });
  EXPECT_THAT(e.what(), HasSubstr("not an eplb message (64 bytes)"));
  EXPECT_EQ(e.peer(), 1);
}

TEST(Wire, AnotherVersionIsRefusedSayingSo) {
  auto bytes = Sample();
  bytes[4] = static_cast<uint8_t>(kVersion + 1);
  Error e = Thrown([&] { Reader(bytes, Kind::kVote, From(3)); });
  EXPECT_THAT(e.what(), HasSubstr("every rank must run the same eplb"));
}

TEST(Wire, AnotherKindIsRefusedNamingBoth) {
  const auto bytes = Sample();
  Error e = Thrown([&] { Reader(bytes, Kind::kHandshake, From(1)); });
  EXPECT_THAT(e.what(), HasSubstr("a vote where a handshake belongs"));
}

TEST(Wire, LeftOverBytesAreAnError) {
  auto bytes = Sample();
  bytes.push_back(0);
  Reader r(bytes, Kind::kVote, From(1));
  r.Get<int32_t>();
  r.Get<int64_t>();
  r.GetString(64);
  Error e = Thrown([&] { r.Finish(); });
  EXPECT_THAT(e.what(), HasSubstr("1 bytes left over"));
}

TEST(Wire, AFieldLongerThanItsBoundIsRefusedBeforeItIsRead) {
  // A length of 4 GiB in a 20-byte message: refused by the bound, not by
  // an allocation.
  auto bytes = Writer(Kind::kVote).Put(uint32_t{0xffffffff}).Take();
  Reader r(bytes, Kind::kVote, From(1));
  Error e = Thrown([&] { r.GetString(256); });
  EXPECT_THAT(e.what(), HasSubstr("a field of 4294967295 bytes where at most 256 belong"));
}

TEST(Wire, AnUnknownPeerIsCalledAPeer) {
  std::vector<uint8_t> empty;
  Error e = Thrown([&] { Reader(empty, Kind::kDecision, Origin{"balancer", "read decision", 1, -1}); });
  EXPECT_THAT(e.what(), HasSubstr("a peer sent a malformed decision"));
}

}  // namespace
}  // namespace eplb::wire
