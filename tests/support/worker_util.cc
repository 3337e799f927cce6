#include "support/worker_util.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace eplb::test {
namespace {

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t PatternWord(int rank, int round, uint64_t word) {
  return Mix((uint64_t(rank) << 56) ^ (uint64_t(round) << 40) ^ word);
}

}  // namespace

GlooOptions WorkerRank::Gloo(const std::string& name) const {
  GlooOptions o;
  o.store = store;
  o.rank = env.rank;
  o.world_size = env.world_size;
  o.name = name;
  return o;
}

WorkerRank JoinRun() {
  auto logger = spdlog::stderr_color_mt("worker");
  spdlog::set_default_logger(logger);
  WorkerRank w;
  w.env = ReadLaunchEnv();
  spdlog::set_pattern("[%H:%M:%S.%e] [rank " + std::to_string(w.env.rank) + "] [%l] %v");
  w.store = OpenRunStore("", w.env);
  return w;
}

uint8_t PatternByte(int rank, int round, uint64_t offset) {
  return static_cast<uint8_t>(PatternWord(rank, round, offset >> 3) >> ((offset & 7) * 8));
}

void FillPattern(uint8_t* data, uint64_t bytes, int rank, int round, uint64_t offset) {
  for (uint64_t i = 0; i < bytes; ++i) {
    uint64_t o = offset + i;
    if ((o & 7) == 0 && i + 8 <= bytes) {
      uint64_t w = PatternWord(rank, round, o >> 3);
      for (int b = 0; b < 8; ++b) data[i + b] = static_cast<uint8_t>(w >> (b * 8));
      i += 7;
    } else {
      data[i] = PatternByte(rank, round, o);
    }
  }
}

int64_t FindMismatch(const uint8_t* data, uint64_t bytes, int rank, int round, uint64_t offset) {
  for (uint64_t i = 0; i < bytes; ++i) {
    if (data[i] != PatternByte(rank, round, offset + i)) return static_cast<int64_t>(i);
  }
  return -1;
}

void ReportError(const std::exception& e, double ms) {
  const char* kind = "other";
  int rank = -1, peer = -1;
  std::string layer = "-", op = "-";
  if (auto* err = dynamic_cast<const Error*>(&e)) {
    kind = dynamic_cast<const TimeoutError*>(&e) ? "timeout" : "error";
    rank = err->rank();
    peer = err->peer();
    layer = err->layer();
    op = err->operation();
  } else if (dynamic_cast<const InvalidArgument*>(&e)) {
    kind = "invalid";
  }
  std::fprintf(stderr, "EPLB-ERROR kind=%s rank=%d peer=%d layer=%s op=%s ms=%.0f: %s\n", kind, rank, peer,
               layer.c_str(), op.c_str(), ms, e.what());
  std::fflush(stderr);
}

}  // namespace eplb::test
