// Bad input is refused alike by every communicator that moves host memory on
// this machine: InvalidArgument naming the backend, before any byte moves, on
// every rank, and the communicator still works afterwards
// (support/bad_input_checks.h). Ranks are real processes meeting through a
// real file store. The device-memory backends run the same table in the GPU
// suite (tests/gpu/communicator_errors_test.cc).
#include <gtest/gtest.h>

#include <cstring>
#include <list>
#include <string>
#include <vector>

#include "eplb/communicator_factory.h"
#include "eplb/detect.h"
#include "support/bad_input_checks.h"
#include "support/multiprocess.h"
#include "support/worker_util.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

EPLB_TEST_WORKER(bad_input) {
  test::WorkerArgs kv(args);
  std::string backend;
  kv.Read("backend", backend);
  auto w = test::JoinRun();
  CommunicatorOptions o;
  o.rank = w.env.rank;
  o.world_size = w.env.world_size;
  o.store = w.store;
  o.key_prefix = "bad-input";
  o.connect_timeout = 30s;
  auto comm = MakeCommunicator(backend, o);

  std::list<std::vector<uint8_t>> owned;  // stable addresses
  test::BadInputMemory memory;
  memory.make = [&](size_t bytes) {
    owned.emplace_back(bytes);
    return MemoryRegion{owned.back().data(), bytes, MemoryKind::kHost};
  };
  if (backend == "gloo") {
    // No device 999 anywhere: gloo cannot stage it.
    static uint8_t byte;
    memory.refused = MemoryRegion{&byte, 1, MemoryKind::kCuda, 999};
  }
  memory.fill = [](const MemoryRegion& r, const std::string& text) {
    auto* p = static_cast<uint8_t*>(r.base);
    for (size_t i = 0; i < r.bytes; ++i) p[i] = static_cast<uint8_t>(text[i % text.size()]);
  };
  memory.read = [](const MemoryRegion& r, size_t bytes) {
    return std::string(static_cast<const char*>(r.base), bytes);
  };
  const std::string problem = test::CheckBadInputIsRefused(*comm, memory);
  if (!problem.empty()) {
    std::fprintf(stderr, "rank %d: %s\n", w.env.rank, problem.c_str());
    return 1;
  }
  return 0;
}

class CommunicatorErrors : public testing::TestWithParam<std::string> {};

TEST_P(CommunicatorErrors, BadRegionsAndTransfersAreInvalidArgumentOnEveryRank) {
  if (GetParam() == "nixl" && !nixl_available()) GTEST_SKIP() << "NIXL is not installed here";
  test::RankGroup group(test::Ranks("bad_input", 2, {"backend=" + GetParam()}));
  auto exits = group.Wait(DeadlineAfter(90s));
  for (const auto& e : exits) EXPECT_TRUE(e.status.ok()) << test::Describe(exits);
}

INSTANTIATE_TEST_SUITE_P(HostMemory, CommunicatorErrors, testing::Values("gloo", "nixl"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace eplb
