#include "comm/cuda_ipc/node_flags.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>

#include <fmt/format.h>

#include "eplb/error.h"

namespace eplb::cuda_ipc {

namespace {

constexpr uint64_t kMagic = 0x65706c62666c6167ULL;  // "eplbflag"
constexpr uint32_t kVersion = 1;
constexpr const char* kLayer = "cuda_ipc";

static_assert(std::atomic<uint64_t>::is_always_lock_free, "flags need lock-free 64-bit atomics");
static_assert(std::atomic<int64_t>::is_always_lock_free, "flags need lock-free 64-bit atomics");

uint64_t PidNamespace() {
  static const uint64_t ns = [] {
    struct stat st {};
    return stat("/proc/self/ns/pid", &st) == 0 ? static_cast<uint64_t>(st.st_ino) : uint64_t{0};
  }();
  return ns;
}

std::string Errno(const char* what) { return fmt::format("{}: {}", what, std::strerror(errno)); }

}  // namespace

// The segment: this header, then from byte 64 one slot per rank, each on its
// own cache lines: pid, PID namespace, then kNumCounters x size counters.
struct NodeFlags::Segment {
  uint64_t magic;
  uint32_t version;
  uint32_t size;

  static constexpr size_t kSlotsOffset = 64;
  static size_t SlotBytes(int size) {
    return (16 + sizeof(uint64_t) * NodeFlags::kNumCounters * size + 63) / 64 * 64;
  }
  static size_t Bytes(int size) { return kSlotsOffset + SlotBytes(size) * size; }
};

struct NodeFlags::Slot {
  std::atomic<int64_t>* pid;
  std::atomic<uint64_t>* pid_namespace;
  std::atomic<uint64_t>* counters;  // [counter][peer]
};

NodeFlags::Slot NodeFlags::slot(int rank) const {
  char* base = static_cast<char*>(mapping_) + Segment::kSlotsOffset + Segment::SlotBytes(size_) * rank;
  return {reinterpret_cast<std::atomic<int64_t>*>(base),
          reinterpret_cast<std::atomic<uint64_t>*>(base + 8),
          reinterpret_cast<std::atomic<uint64_t>*>(base + 16)};
}

NodeFlags::NodeFlags(int rank, int size, void* mapping, size_t bytes)
    : rank_(rank), size_(size), mapping_(mapping), bytes_(bytes) {
  Slot mine = slot(rank);
  mine.pid->store(getpid(), std::memory_order_relaxed);
  mine.pid_namespace->store(PidNamespace(), std::memory_order_release);
}

NodeFlags::~NodeFlags() { munmap(mapping_, bytes_); }

std::unique_ptr<NodeFlags> NodeFlags::Join(Store& store, const std::string& key_prefix, int rank,
                                           int size, Deadline deadline) {
  if (size < 1 || rank < 0 || rank >= size) {
    throw Error(kLayer, "join node flags", fmt::format("bad rank {} of {}", rank, size), rank);
  }
  const size_t bytes = Segment::Bytes(size);
  const std::string name_key = key_prefix + "/flags";
  auto attached_key = [&](int r) { return fmt::format("{}/flags_attached/{}", key_prefix, r); };

  if (rank == 0) {
    std::random_device random;
    const std::string name = fmt::format("/eplb-flags-{}-{:08x}{:08x}", getpid(), random(), random());
    int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    void* mapping = MAP_FAILED;
    std::string problem;
    if (fd < 0) {
      problem = Errno("shm_open");
    } else if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      problem = Errno("ftruncate");
    } else {
      mapping = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (mapping == MAP_FAILED) problem = Errno("mmap");
    }
    if (fd >= 0) close(fd);
    if (!problem.empty()) {
      if (fd >= 0) shm_unlink(name.c_str());
      store.SetString(name_key, "error:" + problem);
      throw Error(kLayer, "create node flags", problem + " (" + name + ")", rank);
    }
    auto* segment = static_cast<Segment*>(mapping);
    segment->size = static_cast<uint32_t>(size);
    segment->version = kVersion;
    std::atomic_thread_fence(std::memory_order_release);
    segment->magic = kMagic;
    std::unique_ptr<NodeFlags> flags(new NodeFlags(rank, size, mapping, bytes));
    store.SetString(name_key, "ok:" + name);
    // Unlink once every peer has mapped it (or failed to): the name is only
    // a rendezvous; the segment lives as long as a mapping does.
    std::string failure;
    int failed_peer = -1;
    try {
      for (int r = 1; r < size; ++r) {
        std::string answer = store.GetString(attached_key(r), deadline);
        if (answer != "ok" && failure.empty()) {
          failure = answer;
          failed_peer = r;
        }
      }
    } catch (...) {
      shm_unlink(name.c_str());
      throw;
    }
    shm_unlink(name.c_str());
    if (!failure.empty()) {
      throw Error(kLayer, "join node flags", "peer could not map the flags segment: " + failure, rank,
                  failed_peer);
    }
    return flags;
  }

  std::string answer = store.GetString(name_key, deadline);
  if (answer.rfind("ok:", 0) != 0) {
    throw Error(kLayer, "join node flags", "rank 0 could not create the segment: " + answer, rank, 0);
  }
  const std::string name = answer.substr(3);
  std::string problem;
  void* mapping = MAP_FAILED;
  int fd = shm_open(name.c_str(), O_RDWR, 0600);
  if (fd < 0) {
    problem = Errno("shm_open") + " (is rank 0 on another node?)";
  } else {
    struct stat st {};
    if (fstat(fd, &st) != 0) {
      problem = Errno("fstat");
    } else if (static_cast<size_t>(st.st_size) < bytes) {
      problem = fmt::format("segment has {} bytes, expected {}", st.st_size, bytes);
    } else {
      mapping = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (mapping == MAP_FAILED) problem = Errno("mmap");
    }
    close(fd);
  }
  if (problem.empty()) {
    auto* segment = static_cast<Segment*>(mapping);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (segment->magic != kMagic || segment->version != kVersion ||
        segment->size != static_cast<uint32_t>(size)) {
      problem = fmt::format("segment {} does not hold flags for {} ranks", name, size);
      munmap(mapping, bytes);
    }
  }
  if (!problem.empty()) {
    store.SetString(attached_key(rank), "rank " + std::to_string(rank) + ": " + problem);
    throw Error(kLayer, "join node flags", problem + " (" + name + ")", rank, 0);
  }
  std::unique_ptr<NodeFlags> flags(new NodeFlags(rank, size, mapping, bytes));
  store.SetString(attached_key(rank), "ok");
  return flags;
}

void NodeFlags::Set(Counter counter, int peer, uint64_t value) {
  slot(rank_).counters[counter * size_ + peer].store(value, std::memory_order_release);
}

uint64_t NodeFlags::Get(int rank, Counter counter, int peer) const {
  return slot(rank).counters[counter * size_ + peer].load(std::memory_order_acquire);
}

bool NodeFlags::PeerExited(int rank) const {
  Slot peer = slot(rank);
  const uint64_t ns = peer.pid_namespace->load(std::memory_order_acquire);
  const int64_t pid = peer.pid->load(std::memory_order_relaxed);
  if (ns == 0 || pid <= 0 || ns != PidNamespace()) return false;
  return kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace eplb::cuda_ipc
