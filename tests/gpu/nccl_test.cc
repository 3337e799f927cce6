// GPU suite: the nccl and nccl_stateless communicators on 2 GPUs, one
// process per rank (forked; the parent never touches CUDA).
//
//   ctest --test-dir build -L gpu --output-on-failure
//
// Covers: a migration of device memory in both directions across two
// regions (odd sizes, cross-region), a second Execute on the same
// communicator, and the timeout when the peer never posts its side (clear
// TimeoutError within the deadline, communicator aborted, then rebuilt by
// nccl_stateless / reported unusable for the engine's nccl).
#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "comm/cuda_driver.h"
#include "comm/nccl/nccl_api.h"
#include "eplb/communicator_factory.h"
#include "eplb/error.h"
#include "eplb/bootstrap.h"
#include "support/fork_ranks.h"
#include "support/paths.h"
#include "support/transfer_pattern.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

const auto& kRegionBytes = test::kTwoRankRegionBytes;

// Asks a child process (CUDA must stay uninitialised in this one) how many
// GPUs there are and whether NCCL loads. Empty = ready for 2 ranks.
std::string WhyNotRunnable() {
  auto out = test::ForkRanks(
      1,
      [](int) -> std::string {
        std::string why;
        int n = cuda::DeviceCount(&why);
        if (n < 0) return "no usable CUDA driver: " + why;
        if (n < 2) return "needs 2 GPUs, found " + std::to_string(n);
        nccl::GetApi();  // throws with the reason when NCCL cannot load
        return "";
      },
      60s);
  return out[0].ok ? "" : out[0].message;
}

const std::string& WhyNotRunnableOnce() {
  static const std::string why = WhyNotRunnable();
  return why;
}

#define SKIP_WITHOUT_TWO_GPUS() \
  if (!WhyNotRunnableOnce().empty()) GTEST_SKIP() << WhyNotRunnableOnce()

// One rank's device memory: two regions with a known pattern.
struct DeviceRegions {
  explicit DeviceRegions(int rank) : rank(rank), ctx(rank, "test", rank) {
    ctx.MakeCurrent();
    const auto& d = cuda::GetDriver();
    for (int r = 0; r < 2; ++r) {
      cuda::Check(d.MemAlloc(&ptr[r], kRegionBytes[r]), "cuMemAlloc", "test", "alloc", rank);
      std::vector<uint8_t> host = test::PatternBytes(rank, r, kRegionBytes[r]);
      cuda::Check(d.MemcpyHtoD(ptr[r], host.data(), host.size()), "cuMemcpyHtoD", "test", "fill", rank);
    }
  }
  ~DeviceRegions() {
    for (auto p : ptr) cuda::GetDriver().MemFree(p);
  }
  MemoryRegion Region(int r) const {
    return {reinterpret_cast<void*>(ptr[r]), kRegionBytes[r], MemoryKind::kCuda, rank};
  }
  std::vector<uint8_t> Read(int r) const {
    std::vector<uint8_t> host(kRegionBytes[r]);
    cuda::Check(cuda::GetDriver().MemcpyDtoH(host.data(), ptr[r], host.size()), "cuMemcpyDtoH", "test", "read", rank);
    return host;
  }
  int rank;
  cuda::DeviceContext ctx;
  cuda::CuDevicePtr ptr[2] = {0, 0};
};

// What `rank`'s regions must hold after `transfers` ran on the initial patterns.
std::string Verify(const DeviceRegions& mem, const std::vector<Transfer>& transfers) {
  for (int r = 0; r < 2; ++r) {
    std::string bad = test::CheckRegion(mem.rank, r, mem.Read(r), transfers);
    if (!bad.empty()) return bad;
  }
  return "";
}

const std::vector<Transfer> kMigration = test::TwoRankMigration();
const std::vector<Transfer> kSecond = test::TwoRankFollowUp();

// The engine's communicator, made the way an engine would (blocking mode).
nccl::Comm MakeEngineComm(const nccl::Api& api, Store& store, int rank, const DeviceRegions& mem) {
  mem.ctx.MakeCurrent();
  nccl::UniqueId id{};
  if (rank == 0) {
    if (api.GetUniqueId(&id) != nccl::kSuccess) throw std::runtime_error("ncclGetUniqueId failed");
    store.Set("engine/id", {reinterpret_cast<uint8_t*>(&id), sizeof id});
  } else {
    auto bytes = store.Get("engine/id", DeadlineAfter(60s));
    std::memcpy(&id, bytes.data(), sizeof id);
  }
  nccl::Comm comm = nullptr;
  nccl::Config config;  // defaults: blocking
  nccl::Result r = api.CommInitRankConfig(&comm, 2, id, rank, &config);
  if (r != nccl::kSuccess) throw std::runtime_error("engine ncclCommInitRankConfig: " + api.Describe(r));
  return comm;
}

std::unique_ptr<Communicator> Make(const std::string& name, int rank, std::shared_ptr<Store> store,
                                   const DeviceRegions& mem) {
  CommunicatorOptions o;
  o.rank = rank;
  o.world_size = 2;
  o.store = store;
  o.key_prefix = "test";
  o.device = rank;
  o.connect_timeout = 60s;
  if (name == "nccl") o.nccl_comm = MakeEngineComm(nccl::GetApi(), *store, rank, mem);
  return MakeCommunicator(name, o);
}

class NcclGpu : public ::testing::TestWithParam<std::string> {};

TEST_P(NcclGpu, MigratesDeviceMemoryBothWays) {
  SKIP_WITHOUT_TWO_GPUS();
  auto store = MakeFileStore(test::MakeTempDir("eplb-nccl-"));
  const std::string name = GetParam();
  auto out = test::ForkRanks(
      2,
      [&](int rank) -> std::string {
        DeviceRegions mem(rank);
        auto comm = Make(name, rank, store, mem);
        if (comm->name() != name) return "wrong backend " + std::string(comm->name());
        for (int r = 0; r < 2; ++r) comm->RegisterRegion(mem.Region(r), DeadlineAfter(30s));
        comm->Execute(kMigration, DeadlineAfter(60s));
        std::string bad = Verify(mem, kMigration);
        if (!bad.empty()) return bad;
        // Same communicator again: rank 1 -> rank 0 only.
        comm->Execute(kSecond, DeadlineAfter(60s));
        std::vector<Transfer> all = kMigration;
        all.insert(all.end(), kSecond.begin(), kSecond.end());
        return Verify(mem, all);
      },
      240s);
  EXPECT_TRUE(out[0].ok && out[1].ok) << test::Describe(out);
}

TEST_P(NcclGpu, TimesOutWhenPeerNeverPosts) {
  SKIP_WITHOUT_TWO_GPUS();
  auto store = MakeFileStore(test::MakeTempDir("eplb-nccl-timeout-"));
  const std::string name = GetParam();
  constexpr auto kDeadline = 3s;
  auto out = test::ForkRanks(
      2,
      [&](int rank) -> std::string {
        DeviceRegions mem(rank);
        auto comm = Make(name, rank, store, mem);
        for (int r = 0; r < 2; ++r) comm->RegisterRegion(mem.Region(r), DeadlineAfter(30s));
        if (rank == 1) {
          // Alive but silent: never posts its side of the first migration.
          store->Get("rank0/timed_out", DeadlineAfter(120s));
          if (name == "nccl") return "";
          // nccl_stateless: rank 0 aborted the shared communicator; this
          // rank's late Execute fails too (error or timeout), then both rebuild.
          try {
            comm->Execute(kMigration, DeadlineAfter(kDeadline));
            return "rank 1's late Execute on an aborted communicator succeeded";
          } catch (const Error& e) {
          }
          store->SetString("rank1/failed", "1");
          // Rebuilt from the store. (This rank's own memory is not checked:
          // the aborted late receive may have landed part of its data.)
          comm->Execute(kSecond, DeadlineAfter(60s));
          return "";
        }
        auto start = Clock::now();
        try {
          comm->Execute(kMigration, DeadlineAfter(kDeadline));
          return "Execute returned although rank 1 never posted";
        } catch (const TimeoutError& e) {
          auto took = Clock::now() - start;
          std::string what = e.what();
          if (e.peer() != 1 || e.rank() != 0) return "TimeoutError does not name rank 0 / peer 1: " + what;
          if (e.layer() != name) return "wrong layer: " + what;
          if (what.find("aborted") == std::string::npos) return "no mention of the abort: " + what;
          if (took < kDeadline - 100ms || took > kDeadline + 3s)
            return "timed out after " + std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()) +
                   " ms, deadline " + std::to_string(kDeadline.count()) + " s: " + what;
          std::fprintf(stderr, "[rank 0] %s (after %lld ms)\n", what.c_str(),
                       static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
        }
        store->SetString("rank0/timed_out", "1");
        if (name == "nccl") {
          try {
            comm->Execute(kSecond, DeadlineAfter(kDeadline));
            return "the aborted engine communicator was used again";
          } catch (const TimeoutError& e) {
            return std::string("expected a plain Error, got a timeout: ") + e.what();
          } catch (const Error& e) {
            if (std::string(e.what()).find("engine must make a new one") == std::string::npos)
              return std::string("unclear error: ") + e.what();
          }
          return "";
        }
        store->Get("rank1/failed", DeadlineAfter(120s));
        comm->Execute(kSecond, DeadlineAfter(60s));  // rebuilt from the store
        return Verify(mem, kSecond);
      },
      240s);
  EXPECT_TRUE(out[0].ok && out[1].ok) << test::Describe(out);
}

INSTANTIATE_TEST_SUITE_P(Backends, NcclGpu, ::testing::Values("nccl_stateless", "nccl"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace eplb
