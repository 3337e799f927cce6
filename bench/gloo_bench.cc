// Throughput of the gloo communicator against raw Gloo, measured in the same
// run between the same two processes over loopback.
//
//   raw:  plain Gloo (rendezvous + tcp pair) sending one large buffer with an
//         unbound-buffer send/recv: what Gloo itself can do
//         (bench/support/two_ranks.h, RawGloo).
//   eplb: ConnectGlooCommunicator + Execute moving the same bytes, as one
//         transfer and as expert-sized transfers (8 MiB each by default).
//
// Each iteration moves the bytes once each way (raw, then eplb, or the other
// order, alternating), so both see the same load on a shared machine.
//
// This process is rank 0 and runs the benchmarks; it starts a copy of itself
// as rank 1 (`--peer DIR`), which mirrors every iteration. Each timed
// iteration ends when rank 1 confirms it is done (support/two_ranks.h), so
// both sides are timed end to end. Flags: --bytes=N (per direction, default
// 256 MiB), --piece=N (transfer size, default 8 MiB), plus Google Benchmark's.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "eplb/bootstrap.h"
#include "eplb/gloo.h"
#include "support/two_ranks.h"

namespace {

using namespace std::chrono_literals;
using eplb::bench::Command;
using eplb::bench::Median;
using eplb::bench::Quantile;

enum Kind : uint32_t { kRaw = 1, kEplb = 2 };

// Command fields: flags = both ways, a = bytes per direction, b = bytes per transfer.
struct Rank {
  std::unique_ptr<eplb::bench::TwoRanks> link;
  std::vector<uint8_t> src, dst;
  eplb::RegionId raw_src = -1, raw_dst = -1;
  std::unique_ptr<eplb::Communicator> comm;
  eplb::RegionId comm_src = -1, comm_dst = -1;
};

void Setup(Rank& r, uint64_t capacity) {
  const int rank = r.link->rank();
  r.src.assign(capacity, static_cast<uint8_t>(rank + 1));  // touched: no page faults while timed
  r.dst.assign(capacity, 0);
  r.raw_src = r.link->raw().AddRegion(r.src.data(), capacity);
  r.raw_dst = r.link->raw().AddRegion(r.dst.data(), capacity);
  // eplb, through its own store and rendezvous.
  eplb::GlooOptions o;
  o.store = eplb::MakeFileStore(r.link->dir() + "/eplb");
  o.rank = rank;
  o.world_size = 2;
  o.name = "bench";
  r.comm = eplb::ConnectGlooCommunicator(o, eplb::DeadlineAfter(60s));
  r.comm_src = r.comm->RegisterRegion({r.src.data(), capacity, eplb::MemoryKind::kHost}, eplb::DeadlineAfter(60s));
  r.comm_dst = r.comm->RegisterRegion({r.dst.data(), capacity, eplb::MemoryKind::kHost}, eplb::DeadlineAfter(60s));
}

// `bytes` from rank 0 to rank 1 in transfers of `piece`, and back when both
// ways, between regions `src` and `dst` (of raw Gloo or of the communicator).
std::vector<eplb::Transfer> Transfers(bool both_ways, uint64_t bytes, uint64_t piece, eplb::RegionId src,
                                      eplb::RegionId dst) {
  std::vector<eplb::Transfer> list;
  for (int s = 0; s < (both_ways ? 2 : 1); ++s) {
    for (uint64_t off = 0; off < bytes; off += piece) {
      list.push_back({s, src, off, 1 - s, dst, off, std::min(piece, bytes - off)});
    }
  }
  return list;
}

// One iteration, either rank: raw Gloo sends each direction's bytes as one
// message; eplb as the command's transfers.
void Run(Rank& r, const Command& c) {
  if (c.kind == kRaw) {
    r.link->raw().Move(Transfers(c.flags != 0, c.a, c.a, r.raw_src, r.raw_dst), 60000ms);
  } else {
    r.comm->Execute(Transfers(c.flags != 0, c.a, c.b, r.comm_src, r.comm_dst), eplb::DeadlineAfter(60s));
  }
}

Rank* g_rank = nullptr;

// Per comparison: every paired sample of (raw seconds, eplb seconds).
struct Samples {
  uint64_t bytes = 0;  // moved per iteration
  std::vector<double> raw, eplb;
};
std::map<std::string, Samples> g_samples;

double Seconds(const Command& c) {
  return g_rank->link->Time(c, [](const Command& x) { Run(*g_rank, x); });
}

// Each iteration moves the bytes once with raw Gloo and once with eplb, in
// alternating order, so both see the same machine load (this box is shared).
// The benchmark's time is eplb's; counters give both rates and the ratio.
void Compare(benchmark::State& state, const std::string& name, Command eplb_cmd) {
  Command raw_cmd = eplb_cmd;
  raw_cmd.kind = kRaw;
  const uint64_t moved = eplb_cmd.a * (eplb_cmd.flags ? 2 : 1);
  Samples& s = g_samples[name];
  s.bytes = moved;
  for (auto _ : state) {
    auto t = eplb::bench::RunInTurn(s.raw.size(), {[&] { return Seconds(raw_cmd); }, [&] { return Seconds(eplb_cmd); }});
    s.raw.push_back(t[0]);
    s.eplb.push_back(t[1]);
    state.SetIterationTime(t[1]);
  }
  // The last iteration landed: rank 0 received rank 1's bytes when both ways.
  if (eplb_cmd.flags && g_rank->dst[eplb_cmd.a - 1] != 2) state.SkipWithError("received bytes are wrong");
  double raw_total = 0, eplb_total = 0;
  std::vector<double> ratios;
  for (size_t i = 0; i < s.raw.size(); ++i) {
    raw_total += s.raw[i];
    eplb_total += s.eplb[i];
    ratios.push_back(s.raw[i] / s.eplb[i]);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * moved));
  state.counters["raw_GB/s"] = moved * s.raw.size() / raw_total / 1e9;
  state.counters["eplb_GB/s"] = moved * s.eplb.size() / eplb_total / 1e9;
  state.counters["eplb/raw_%"] = 100.0 * Median(ratios);
}

}  // namespace

int main(int argc, char** argv) {
  const eplb::bench::BenchArgs args = eplb::bench::SplitArgs(argc, argv, {"bytes", "piece"});
  std::vector<char*> rest = args.rest;
  const std::string& peer_dir = args.peer_dir;
  uint64_t bytes = 0, piece = 0;
  try {
    bytes = eplb::bench::ParseBytes(args.Get("bytes", "256M"));
    piece = eplb::bench::ParseBytes(args.Get("piece", "8M"));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  if (bytes == 0 || piece == 0) {
    std::fprintf(stderr, "--bytes and --piece must be positive\n");
    return 2;
  }
  Rank r;
  if (!peer_dir.empty()) {
    r.link = eplb::bench::TwoRanks::Follow(peer_dir);
    Setup(r, bytes);
    r.link->Serve([&](const Command& c) { Run(r, c); });
    return 0;
  }
  r.link = eplb::bench::TwoRanks::Lead("gloo-bench", {"--bytes=" + std::to_string(bytes), "--piece=" + std::to_string(piece)});
  Setup(r, bytes);
  g_rank = &r;

  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  const std::string mib = std::to_string(bytes >> 20) + "MiB";
  const std::string pieces = std::to_string(piece >> 20) + "MiB";
  struct Case {
    std::string name;
    Command cmd;
  };
  std::vector<Case> cases = {
      {"one_way/64KiB/1_transfer", {kEplb, 0, 64 << 10, 64 << 10}},  // per-call overhead
      {"one_way/" + mib + "/1_transfer", {kEplb, 0, bytes, bytes}},
      {"one_way/" + mib + "/transfers_of_" + pieces, {kEplb, 0, bytes, piece}},
      {"both_ways/" + mib + "/transfers_of_" + pieces, {kEplb, 1, bytes, piece}},
  };
  for (const auto& c : cases) {
    benchmark::RegisterBenchmark(("eplb_vs_raw_gloo/" + c.name).c_str(),
                                 [c](benchmark::State& s) { Compare(s, c.name, c.cmd); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->MinTime(c.cmd.a < (1 << 20) ? 0.5 : 2.0);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  const bool peer_ok = r.link->Finish();

  // Summary over every paired iteration of every run of each comparison.
  std::printf("\nsummary: GB/s over all timed iterations (raw Gloo and eplb alternating, same run);\n"
              "eplb/raw = median over iterations of raw time / eplb time\n");
  for (const auto& c : cases) {
    auto it = g_samples.find(c.name);
    if (it == g_samples.end() || it->second.raw.empty()) continue;
    const Samples& s = it->second;
    double rt = 0, et = 0;
    std::vector<double> ratios;
    for (size_t i = 0; i < s.raw.size(); ++i) {
      rt += s.raw[i];
      et += s.eplb[i];
      ratios.push_back(s.raw[i] / s.eplb[i]);
    }
    std::printf("  %-36s raw %5.2f GB/s  eplb %5.2f GB/s  eplb/raw %5.1f%%  ms p50/p90 raw %.3f/%.3f eplb %.3f/%.3f (%zu)\n",
                c.name.c_str(), s.bytes * s.raw.size() / rt / 1e9, s.bytes * s.eplb.size() / et / 1e9,
                100 * Median(ratios), 1e3 * Median(s.raw), 1e3 * Quantile(s.raw, 0.9), 1e3 * Median(s.eplb),
                1e3 * Quantile(s.eplb, 0.9), s.raw.size());
  }
  return peer_ok ? 0 : 1;
}
