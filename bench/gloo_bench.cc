// Throughput of the gloo communicator against raw Gloo, measured in the same
// run between the same two processes over loopback.
//
//   raw:  plain Gloo (rendezvous + tcp pair) sending one large buffer with an
//         unbound-buffer send/recv: what Gloo itself can do.
//   eplb: ConnectGlooCommunicator + Execute moving the same bytes, as one
//         transfer and as expert-sized transfers (8 MiB each by default).
//
// Each iteration moves the bytes once each way (raw, then eplb, or the other
// order, alternating), so both see the same load on a shared machine.
//
// This process is rank 0 and runs the benchmarks; it starts a copy of itself
// as rank 1 (`--peer DIR`), which mirrors every iteration. Each timed
// iteration ends when rank 1 confirms it holds every byte (an 8-byte ack), so
// both sides are timed end to end. Flags: --bytes=N (per direction, default
// 256 MiB), --piece=N (transfer size, default 8 MiB), plus Google Benchmark's.
#include <benchmark/benchmark.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "eplb/bootstrap.h"
#include "eplb/gloo.h"
#include "io/process.h"

namespace {

using namespace std::chrono_literals;

constexpr uint64_t kCmdSlot = 1, kAckSlot = 2, kDataSlot = 3;

enum Kind : uint32_t { kQuit = 0, kRaw = 1, kEplb = 2 };

struct Cmd {
  uint32_t kind = kQuit;
  uint32_t both_ways = 0;
  uint64_t bytes = 0;
  uint64_t piece = 0;  // eplb: bytes per transfer
};

struct Rank {
  int rank = 0;
  uint64_t capacity = 0;
  std::vector<uint8_t> src, dst;
  std::shared_ptr<gloo::Context> raw;  // plain Gloo
  std::unique_ptr<gloo::transport::UnboundBuffer> raw_src, raw_dst, cmd_buf, ack_buf;
  Cmd cmd;
  uint64_t ack = 0;
  std::unique_ptr<eplb::Communicator> comm;  // eplb
};

Rank Setup(int rank, const std::string& dir, uint64_t capacity) {
  Rank r;
  r.rank = rank;
  r.capacity = capacity;
  r.src.assign(capacity, static_cast<uint8_t>(rank + 1));  // touched: no page faults while timed
  r.dst.assign(capacity, 0);
  // Raw Gloo, as a Gloo user would set it up.
  std::filesystem::create_directories(dir + "/raw");
  gloo::rendezvous::FileStore file(dir + "/raw");
  gloo::rendezvous::PrefixStore prefix("bench", file);
  gloo::transport::tcp::attr attr;
  attr.hostname = "127.0.0.1";
  auto device = gloo::transport::tcp::CreateDevice(attr);
  auto context = std::make_shared<gloo::rendezvous::Context>(rank, 2);
  context->setTimeout(60s);
  context->connectFullMesh(prefix, device);
  r.raw = context;
  r.raw_src = r.raw->createUnboundBuffer(r.src.data(), capacity);
  r.raw_dst = r.raw->createUnboundBuffer(r.dst.data(), capacity);
  r.cmd_buf = r.raw->createUnboundBuffer(&r.cmd, sizeof(Cmd));
  r.ack_buf = r.raw->createUnboundBuffer(&r.ack, sizeof(uint64_t));
  // eplb, through its own store and rendezvous.
  eplb::GlooOptions o;
  o.store = eplb::MakeFileStore(dir + "/eplb");
  o.rank = rank;
  o.world_size = 2;
  o.name = "bench";
  r.comm = eplb::ConnectGlooCommunicator(o, eplb::DeadlineAfter(60s));
  r.comm->RegisterRegion({r.src.data(), capacity, eplb::MemoryKind::kHost}, eplb::DeadlineAfter(60s));
  r.comm->RegisterRegion({r.dst.data(), capacity, eplb::MemoryKind::kHost}, eplb::DeadlineAfter(60s));
  return r;
}

// The transfers of one eplb iteration: `bytes` from rank 0 to rank 1 in
// pieces, and back when both ways.
std::vector<eplb::Transfer> Transfers(const Cmd& c) {
  std::vector<eplb::Transfer> list;
  for (int s = 0; s < (c.both_ways ? 2 : 1); ++s) {
    for (uint64_t off = 0; off < c.bytes; off += c.piece) {
      list.push_back({s, 0, off, 1 - s, 1, off, std::min(c.piece, c.bytes - off)});
    }
  }
  return list;
}

// One iteration, either rank. Rank 1 acks when it holds every byte.
void Iterate(Rank& r, const Cmd& c) {
  const int peer = 1 - r.rank;
  if (c.kind == kRaw) {
    const bool recv = r.rank == 1 || c.both_ways, send = r.rank == 0 || c.both_ways;
    if (recv) r.raw_dst->recv(peer, kDataSlot, 0, c.bytes);
    if (send) r.raw_src->send(peer, kDataSlot, 0, c.bytes);
    if (recv) r.raw_dst->waitRecv(60000ms);
    if (send) r.raw_src->waitSend(60000ms);
  } else {
    auto list = Transfers(c);
    r.comm->Execute(list, eplb::DeadlineAfter(60s));
  }
  if (r.rank == 1) {
    r.ack_buf->send(0, kAckSlot);
    r.ack_buf->waitSend(60000ms);
  } else {
    r.ack_buf->recv(1, kAckSlot);
    r.ack_buf->waitRecv(60000ms);
  }
}

int RunPeer(const std::string& dir, uint64_t capacity) {
  Rank r = Setup(1, dir, capacity);
  for (;;) {
    r.cmd_buf->recv(0, kCmdSlot);
    r.cmd_buf->waitRecv(600000ms);
    Cmd c = r.cmd;
    if (c.kind == kQuit) return 0;
    Iterate(r, c);
  }
}

Rank* g_rank = nullptr;

void SendCmd(const Cmd& c) {
  g_rank->cmd = c;
  g_rank->cmd_buf->send(1, kCmdSlot);
  g_rank->cmd_buf->waitSend(60000ms);
}

// One timed iteration of `c` (the peer is told first, untimed). Seconds.
double TimeOnce(const Cmd& c) {
  SendCmd(c);
  auto t0 = std::chrono::steady_clock::now();
  Iterate(*g_rank, c);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Per comparison: every paired sample of (raw seconds, eplb seconds).
struct Samples {
  uint64_t bytes = 0;  // moved per iteration
  std::vector<double> raw, eplb;
};
std::map<std::string, Samples> g_samples;

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))];
}
double Median(std::vector<double> v) { return Quantile(std::move(v), 0.5); }

// Each iteration moves the bytes once with raw Gloo and once with eplb, in
// alternating order, so both see the same machine load (this box is shared).
// The benchmark's time is eplb's; counters give both rates and the ratio.
void Compare(benchmark::State& state, const std::string& name, Cmd eplb_cmd) {
  Cmd raw_cmd{kRaw, eplb_cmd.both_ways, eplb_cmd.bytes, eplb_cmd.bytes};
  const uint64_t moved = eplb_cmd.bytes * (eplb_cmd.both_ways ? 2 : 1);
  Samples& s = g_samples[name];
  s.bytes = moved;
  bool raw_first = true;
  for (auto _ : state) {
    double raw = 0, eplb = 0;
    if (raw_first) {
      raw = TimeOnce(raw_cmd);
      eplb = TimeOnce(eplb_cmd);
    } else {
      eplb = TimeOnce(eplb_cmd);
      raw = TimeOnce(raw_cmd);
    }
    raw_first = !raw_first;
    s.raw.push_back(raw);
    s.eplb.push_back(eplb);
    state.SetIterationTime(eplb);
  }
  // The last iteration landed: rank 0 received rank 1's bytes when both ways.
  if (eplb_cmd.both_ways && g_rank->dst[eplb_cmd.bytes - 1] != 2) state.SkipWithError("received bytes are wrong");
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

uint64_t ParseBytes(const std::string& v) {
  uint64_t n = std::stoull(v);
  char unit = v.empty() ? 0 : v.back();
  if (unit == 'K' || unit == 'k') n <<= 10;
  if (unit == 'M' || unit == 'm') n <<= 20;
  if (unit == 'G' || unit == 'g') n <<= 30;
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t bytes = 256ull << 20, piece = 8ull << 20;
  std::vector<char*> rest;
  std::string peer_dir;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--bytes=", 0) == 0) {
      bytes = ParseBytes(a.substr(8));
    } else if (a.rfind("--piece=", 0) == 0) {
      piece = ParseBytes(a.substr(8));
    } else if (a == "--peer" && i + 1 < argc) {
      peer_dir = argv[++i];
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (bytes == 0 || piece == 0) {
    std::fprintf(stderr, "--bytes and --piece must be positive\n");
    return 2;
  }
  if (!peer_dir.empty()) return RunPeer(peer_dir, bytes);

  char tmpl[] = "/tmp/eplb-gloo-bench-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return 1;
  const std::string dir = tmpl;
  eplb::io::SpawnOptions spawn;
  spawn.argv = {eplb::io::SelfExecutable(), "--peer", dir, "--bytes=" + std::to_string(bytes),
                "--piece=" + std::to_string(piece)};
  auto peer = eplb::io::Process::Spawn(spawn);
  Rank r = Setup(0, dir, bytes);
  g_rank = &r;

  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  const std::string mib = std::to_string(bytes >> 20) + "MiB";
  const std::string pieces = std::to_string(piece >> 20) + "MiB";
  struct Case {
    std::string name;
    Cmd cmd;
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
        ->MinTime(c.cmd.bytes < (1 << 20) ? 0.5 : 2.0);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  SendCmd(Cmd{});
  auto status = peer.Wait(eplb::DeadlineAfter(30s));
  std::filesystem::remove_all(dir);

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
  return status && status->ok() ? 0 : 1;
}
