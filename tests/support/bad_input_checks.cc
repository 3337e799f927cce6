#include "support/bad_input_checks.h"

#include <cstdint>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "eplb/error.h"

namespace eplb::test {
namespace {

using namespace std::chrono_literals;

constexpr size_t kBytes = 4096;

// "" when `body` threw InvalidArgument whose message names `backend`.
template <typename F>
std::string ExpectRefused(const std::string& what, std::string_view backend, F&& body) {
  try {
    body();
  } catch (const InvalidArgument& e) {
    const std::string message = e.what();
    if (message.find(backend) == std::string::npos)
      return fmt::format("{}: InvalidArgument does not name {}: {}", what, backend, message);
    return "";
  } catch (const std::exception& e) {
    return fmt::format("{}: expected InvalidArgument, got another error: {}", what, e.what());
  }
  return what + ": accepted";
}

Transfer Between(int src, int dst, RegionId src_region, uint64_t src_offset, RegionId dst_region,
                 uint64_t dst_offset, uint64_t bytes) {
  return {src, src_region, src_offset, dst, dst_region, dst_offset, bytes};
}

// The same bad transfer in both directions.
std::vector<Transfer> BothWays(RegionId src_region, uint64_t src_offset, RegionId dst_region,
                               uint64_t dst_offset, uint64_t bytes) {
  return {Between(0, 1, src_region, src_offset, dst_region, dst_offset, bytes),
          Between(1, 0, src_region, src_offset, dst_region, dst_offset, bytes)};
}

}  // namespace

std::string CheckBadInputIsRefused(Communicator& comm, const BadInputMemory& memory) {
  const std::string backend(comm.name());
  const int me = comm.rank();
  if (comm.size() != 2) return "needs a group of two ranks";
  std::string problem;
  auto check = [&](const std::string& what, auto&& body) {
    if (problem.empty()) problem = ExpectRefused(what, backend, body);
  };

  // Regions, refused before anything is exchanged.
  MemoryRegion no_address = memory.make(kBytes);
  no_address.base = nullptr;
  check("a region with no address",
        [&] { comm.RegisterRegion(no_address, DeadlineAfter(5s)); });
  if (memory.refused) {
    check(fmt::format("a region of {} memory", MemoryKindName(memory.refused->kind)),
          [&] { comm.RegisterRegion(*memory.refused, DeadlineAfter(5s)); });
  }
  if (!problem.empty()) return problem;

  // Two good regions: 0 the source, 1 the destination.
  const MemoryRegion src = memory.make(kBytes), dst = memory.make(kBytes);
  if (comm.RegisterRegion(src, DeadlineAfter(10s)) != 0) return "first region is not id 0";
  if (comm.RegisterRegion(dst, DeadlineAfter(10s)) != 1) return "second region is not id 1";

  const uint64_t huge = std::numeric_limits<uint64_t>::max() - 1;
  struct Case {
    const char* what;
    std::vector<Transfer> list;
  };
  const std::vector<Case> cases = {
      {"a transfer to rank 2 of 2", {Between(0, 2, 0, 0, 1, 0, 8), Between(1, 2, 0, 0, 1, 0, 8)}},
      {"a transfer from rank -1", {Between(-1, 0, 0, 0, 1, 0, 8), Between(-1, 1, 0, 0, 1, 0, 8)}},
      {"a transfer from a rank to itself", {Between(0, 0, 0, 0, 1, 0, 8), Between(1, 1, 0, 0, 1, 0, 8)}},
      {"a transfer into region 7 of 2", BothWays(0, 0, 7, 0, 8)},
      {"a transfer out of region -1", BothWays(-1, 0, 1, 0, 8)},
      {"a transfer past the destination's end", BothWays(0, 0, 1, kBytes - 4, 8)},
      {"a transfer past the source's end", BothWays(0, kBytes, 1, 0, 1)},
      {"a transfer whose offset wraps around", BothWays(0, huge, 1, 0, 4)},
  };
  for (const Case& c : cases)
    check(c.what, [&] { comm.Execute(c.list, DeadlineAfter(5s)); });
  if (!problem.empty()) return problem;

  // Still usable: each rank's first half lands in the peer's destination.
  memory.fill(src, fmt::format("rank{}", me));
  memory.fill(dst, "-");
  comm.Execute(BothWays(0, 0, 1, 0, kBytes / 2), DeadlineAfter(20s));
  const std::string got = memory.read(dst, kBytes / 2);
  const std::string peer = fmt::format("rank{}", 1 - me);
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != peer[i % peer.size()])
      return fmt::format("after the refusals, byte {} of the exchange is wrong", i);
  }
  return "";
}

}  // namespace eplb::test
