// The parts of the CUDA data path that run without a GPU: the node-local
// flags (the cuda_ipc fence), the start-up check's agreement among ranks,
// and clear errors from every CUDA entry point when no GPU or driver exists.
// Ranks are threads over an in-memory store here (the GPU suite runs real
// processes).
#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "comm/cuda_ipc/cuda_ipc.h"
#include "comm/cuda_ipc/node_flags.h"
#include "cuda/runtime.h"
#include "eplb/error.h"
#include "eplb/load_counter.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;
using cuda_ipc::NodeFlags;

// Threads of one process stand in for ranks: a store in memory.
class MemoryStore : public Store {
 public:
  std::string_view kind() const override { return "memory"; }
  void Set(const std::string& key, std::span<const uint8_t> value) override {
    std::lock_guard lock(mutex_);
    values_[key].assign(value.begin(), value.end());
    changed_.notify_all();
  }
  std::vector<uint8_t> Get(const std::string& key, Deadline deadline) override {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_until(lock, deadline, [&] { return values_.count(key) > 0; })) {
      throw TimeoutError("store", "get", "key '" + key + "' did not appear");
    }
    return values_[key];
  }
  std::vector<uint8_t> SetIfAbsent(const std::string& key, std::span<const uint8_t> value) override {
    std::lock_guard lock(mutex_);
    auto [it, inserted] = values_.try_emplace(key, value.begin(), value.end());
    if (inserted) changed_.notify_all();
    return it->second;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, std::vector<uint8_t>> values_;
};

template <typename F>
void OnRanks(int size, F&& body) {
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) threads.emplace_back([&, r] { body(r); });
  for (auto& t : threads) t.join();
}

int CountFlagSegments() {
  int n = 0;
  const std::string mine = "eplb-flags-" + std::to_string(getpid()) + "-";
  if (DIR* dir = opendir("/dev/shm")) {
    while (dirent* entry = readdir(dir)) n += std::string(entry->d_name).rfind(mine, 0) == 0;
    closedir(dir);
  }
  return n;
}

TEST(NodeFlags, RanksSeeEachOthersCountersAndNothingIsLeftInDevShm) {
  MemoryStore store;
  constexpr int kSize = 3;
  std::vector<std::unique_ptr<NodeFlags>> flags(kSize);
  OnRanks(kSize, [&](int r) { flags[r] = NodeFlags::Join(store, "t", r, kSize, DeadlineAfter(10s)); });
  EXPECT_EQ(CountFlagSegments(), 0);  // unlinked once everyone mapped it
  for (int r = 0; r < kSize; ++r) {
    for (int peer = 0; peer < kSize; ++peer) EXPECT_EQ(flags[r]->Get(peer, NodeFlags::kReady, r), 0u);
  }
  flags[1]->Set(NodeFlags::kDone, 2, 41);
  flags[2]->Set(NodeFlags::kReady, 0, 7);
  EXPECT_EQ(flags[0]->Get(1, NodeFlags::kDone, 2), 41u);
  EXPECT_EQ(flags[0]->Get(1, NodeFlags::kDone, 0), 0u);
  EXPECT_EQ(flags[1]->Get(2, NodeFlags::kReady, 0), 7u);
  EXPECT_FALSE(flags[0]->PeerExited(1));  // same process, alive
}

TEST(NodeFlags, MissingPeerTimesOutNamingTheKey) {
  MemoryStore store;
  try {
    NodeFlags::Join(store, "t", 1, 2, DeadlineAfter(100ms));
    FAIL() << "joined without rank 0";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("t/flags"), std::string::npos) << e.what();
  }
}

TEST(NodeFlags, PeerThatCannotMapIsNamed) {
  MemoryStore store;
  store.SetString("t/flags", "ok:/eplb-flags-does-not-exist");
  try {
    NodeFlags::Join(store, "t", 1, 2, DeadlineAfter(1s));
    FAIL() << "mapped a segment that does not exist";
  } catch (const Error& e) {
    EXPECT_EQ(e.layer(), "cuda_ipc");
    EXPECT_EQ(e.peer(), 0);
  }
  // Rank 1 reported its failure, so rank 0 (had it been waiting) stops too.
  EXPECT_NE(store.GetString("t/flags_attached/1", DeadlineAfter(1s)).find("shm_open"), std::string::npos);
}

// Every rank reaches the same verdict; without a GPU it is "no".
TEST(CudaIpcCheck, RanksAgree) {
  MemoryStore store;
  constexpr int kSize = 2;
  std::vector<CudaIpcCheck> checks(kSize);
  OnRanks(kSize, [&](int r) { checks[r] = CudaIpcUsable(store, r, kSize, 0, "c", DeadlineAfter(30s)); });
  EXPECT_EQ(checks[0].usable, checks[1].usable);
  EXPECT_EQ(checks[0].reason, checks[1].reason);
  EXPECT_FALSE(checks[0].reason.empty());
  if (cuda::Probe().devices == 0) {
    EXPECT_FALSE(checks[0].usable);
    EXPECT_NE(checks[0].reason.find("CUDA"), std::string::npos) << checks[0].reason;
  }
  std::printf("verdict: %s (%s)\n", checks[0].usable ? "usable" : "not usable", checks[0].reason.c_str());
}

TEST(CudaIpcCheck, AbsentRankTimesOut) {
  MemoryStore store;
  EXPECT_THROW(CudaIpcUsable(store, 0, 2, 0, "c", DeadlineAfter(200ms)), TimeoutError);
}

TEST(CudaWithoutGpu, ProbeNeverThrowsAndSaysWhy) {
  auto available = cuda::Probe();
  EXPECT_GE(available.devices, 0);
  if (available.devices == 0) {
    EXPECT_FALSE(available.reason.empty());
  }
  std::printf("CUDA devices: %d %s\n", available.devices, available.reason.c_str());
}

TEST(CudaWithoutGpu, EntryPointsFailClearly) {
  if (cuda::Probe().devices > 0) GTEST_SKIP() << "a GPU is present; covered by the GPU suite";
  try {
    DeviceLoadCounter counter(0, 1, 8, 8, DeadlineAfter(std::chrono::seconds(10)));
    FAIL() << "made a load counter without a GPU";
  } catch (const Error& e) {
    EXPECT_EQ(e.layer(), "cuda");
  }
  CommunicatorOptions options;
  options.rank = 0;
  options.world_size = 1;
  options.device = 0;
  options.store = std::make_shared<MemoryStore>();
  try {
    MakeCommunicator("cuda_ipc", options);
    FAIL() << "made a cuda_ipc communicator without a GPU";
  } catch (const Error& e) {
    EXPECT_EQ(e.layer(), "cuda_ipc");
  }
  TopkIds topk{nullptr, IndexType::kInt32, 4, 2};
  DeviceExpertMap map{nullptr, nullptr, 4, 1, 4};
  EXPECT_THROW(CountExpertLoad(topk, map, nullptr, nullptr, nullptr, nullptr), InvalidArgument);
}

}  // namespace
}  // namespace eplb
