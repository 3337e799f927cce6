// Migration throughput: the migration executor (plan -> transfers into
// staging -> agreement -> commit, per layer) against two baselines moving
// exactly the same wire bytes, measured in the same run between the same two
// processes over loopback:
//
//   raw:  plain Gloo point-to-point (bench/support/two_ranks.h, RawGloo): per
//         layer, one unbound-buffer message per wire transfer (the same
//         pairs and sizes), receives posted first, then sends, then waits.
//   comm: the bare gloo communicator, one Execute per layer (no staging, no
//         agreement, no commit).
//
// Executors: one staging layer with memcpy copies (the default), the same
// with --threads copier threads splitting each commit (default:
// DefaultHostCopierThreads() of this machine; when that is more than one),
// and two staging layers with a threaded copier, where a layer's commit
// overlaps the next layer's transfers: with one copier thread, and with
// --threads copier threads.
//
// The model: --layers MoE layers (default 16; DeepSeek-V3 has 58), 8 slots
// per rank, 16 experts, each expert three tensors (w1, w2, w3: 3/8, 2/8, 3/8
// of --expert bytes, default 8 MiB). Each iteration swaps every rank's
// experts with the other rank's, so every slot receives over the wire:
// 64 MiB per layer each way. Each iteration runs raw, comm and the executor
// once, rotating which goes first.
//
// This process is rank 0 and runs the benchmarks; it starts a copy of itself
// as rank 1 (`--peer DIR`), which follows rank 0's commands until told to
// quit. Each timed run ends when both ranks are done.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "eplb/bootstrap.h"
#include "eplb/gloo.h"
#include "eplb/migration.h"
#include "support/two_ranks.h"

namespace {

using namespace std::chrono_literals;
using eplb::bench::Command;
using eplb::bench::Median;

enum Kind : uint32_t { kRaw = 1, kComm = 2, kExecutor = 3 };  // kExecutor: a = which

constexpr int kRanks = 2, kSlotsPerRank = 8, kExperts = 16;

struct Executor {
  std::string name;
  int staging_layers = 1;
  int copier_threads = 0;  // 0: memcpy on the calling thread
  std::unique_ptr<eplb::MigrationExecutor> executor;
};

struct Rank {
  std::unique_ptr<eplb::bench::TwoRanks> link;
  int rank = 0;
  int layers = 16;
  uint64_t tensor_bytes[3] = {};
  std::unique_ptr<eplb::Communicator> comm;
  std::unique_ptr<eplb::ControlGroup> control;
  std::vector<std::vector<std::vector<uint8_t>>> weights;  // [layer][tensor]
  std::vector<uint8_t> landing;                            // the baselines' destination
  std::vector<Executor> executors;
  eplb::Placement a, b;
  bool at_a = true;  // which placement the weights hold
  // [a->b / b->a][layer]: the wire transfers, with the communicator's and raw Gloo's regions.
  std::vector<std::vector<eplb::Transfer>> comm_transfers[2], raw_transfers[2];
  std::vector<eplb::LayerMigrationReport> last_reports;

  uint64_t expert_bytes() const { return tensor_bytes[0] + tensor_bytes[1] + tensor_bytes[2]; }
};

void Setup(Rank& r, int layers, uint64_t expert_bytes, int threads) {
  const int rank = r.rank = r.link->rank();
  r.layers = layers;
  r.tensor_bytes[0] = expert_bytes / 8 * 3;
  r.tensor_bytes[1] = expert_bytes / 8 * 2;
  r.tensor_bytes[2] = expert_bytes - r.tensor_bytes[0] - r.tensor_bytes[1];
  auto store = eplb::MakeFileStore(r.link->dir() + "/eplb");
  eplb::GlooOptions o;
  o.store = store;
  o.rank = rank;
  o.world_size = kRanks;
  auto deadline = eplb::DeadlineAfter(60s);
  o.name = "weights";
  r.comm = eplb::ConnectGlooCommunicator(o, deadline);
  o.name = "control";
  r.control = eplb::ConnectGlooControlGroup(o, deadline);

  // Placement a: identity; b: the two ranks' experts swapped.
  std::vector<int32_t> pa, pb;
  for (int l = 0; l < layers; ++l)
    for (int s = 0; s < kRanks * kSlotsPerRank; ++s) {
      pa.push_back(s);
      pb.push_back((s + kSlotsPerRank) % kExperts);
    }
  r.a = eplb::Placement::FromPhy2Log(layers, kExperts, kRanks, pa);
  r.b = eplb::Placement::FromPhy2Log(layers, kExperts, kRanks, pb);

  r.weights.resize(layers);
  std::vector<eplb::LayerWeights> lw(layers);
  for (int l = 0; l < layers; ++l)
    for (int t = 0; t < 3; ++t) {
      r.weights[l].emplace_back(r.tensor_bytes[t] * kSlotsPerRank, static_cast<uint8_t>(t + 1));
      // Each slot starts with its expert's id, to check where experts landed.
      for (int s = 0; s < kSlotsPerRank; ++s) {
        int32_t e = r.a.expert_at(l, rank * kSlotsPerRank + s);
        std::memcpy(r.weights[l][t].data() + s * r.tensor_bytes[t], &e, sizeof(e));
      }
      lw[l].tensors.push_back({eplb::MemoryRegion{r.weights[l][t].data(), r.weights[l][t].size(),
                                                  eplb::MemoryKind::kHost, -1},
                               r.tensor_bytes[t], 0});
    }
  r.executors.push_back({"executor", 1, 0, nullptr});
  if (threads > 1)
    r.executors.push_back(
        {"executor_1_staging_layer/" + std::to_string(threads) + "_copier_threads", 1, threads, nullptr});
  r.executors.push_back({"executor_2_staging_layers/1_copier_thread", 2, 1, nullptr});
  if (threads > 1)
    r.executors.push_back(
        {"executor_2_staging_layers/" + std::to_string(threads) + "_copier_threads", 2, threads, nullptr});
  for (Executor& x : r.executors) {
    eplb::MigrationOptions options;
    options.staging_layers = x.staging_layers;
    x.executor = std::make_unique<eplb::MigrationExecutor>(
        *r.comm, *r.control, lw, kSlotsPerRank,
        x.copier_threads == 0 ? eplb::MakeHostCopier() : eplb::MakeThreadedHostCopier(x.copier_threads),
        options, deadline);
  }

  // The baselines move the same wire bytes from the same weights into a
  // landing buffer of one layer (touched: no page faults while timed).
  r.landing.assign(r.expert_bytes() * kSlotsPerRank, 0);
  std::vector<std::vector<eplb::RegionId>> src(layers), raw_src(layers);
  for (int l = 0; l < layers; ++l)
    for (int t = 0; t < 3; ++t) {
      src[l].push_back(r.comm->RegisterRegion(lw[l].tensors[t].memory, deadline));
      raw_src[l].push_back(r.link->raw().AddRegion(r.weights[l][t].data(), r.weights[l][t].size()));
    }
  const eplb::RegionId dst = r.comm->RegisterRegion(
      {r.landing.data(), r.landing.size(), eplb::MemoryKind::kHost, -1}, deadline);
  const eplb::RegionId raw_dst = r.link->raw().AddRegion(r.landing.data(), r.landing.size());
  for (int dir_index = 0; dir_index < 2; ++dir_index) {
    const eplb::Placement& from = dir_index == 0 ? r.a : r.b;
    const eplb::Placement& to = dir_index == 0 ? r.b : r.a;
    for (int l = 0; l < layers; ++l) {
      eplb::LayerPlan plan = eplb::PlanLayer(from, to, l, {0, r.expert_bytes()});
      std::vector<eplb::WireTensor> wt, raw_wt;
      uint64_t offset = 0;
      for (int t = 0; t < 3; ++t) {
        const uint64_t n = r.tensor_bytes[t];
        wt.push_back({n, src[l][t], 0, n, dst, offset, n});
        raw_wt.push_back({n, raw_src[l][t], 0, n, raw_dst, offset, n});
        offset += n * kSlotsPerRank;
      }
      r.comm_transfers[dir_index].push_back(eplb::WireTransfers(plan, wt));
      r.raw_transfers[dir_index].push_back(eplb::WireTransfers(plan, raw_wt));
    }
  }
}

// Runs one command on this rank. Both ranks run the same commands.
void Run(Rank& r, const Command& c) {
  auto deadline = eplb::DeadlineAfter(60s);
  if (c.kind == kRaw) {
    for (const auto& transfers : r.raw_transfers[r.at_a ? 0 : 1]) r.link->raw().Move(transfers, 60000ms);
  } else if (c.kind == kComm) {
    for (const auto& transfers : r.comm_transfers[r.at_a ? 0 : 1]) r.comm->Execute(transfers, deadline);
  } else if (c.kind == kExecutor) {
    r.last_reports = r.executors.at(c.a).executor->Migrate(r.at_a ? r.a : r.b, r.at_a ? r.b : r.a, deadline);
    r.at_a = !r.at_a;
  }
}

Rank* g_rank = nullptr;

struct Samples {
  std::string name;
  uint64_t moved = 0;  // bytes over the wire per iteration, both directions
  std::vector<double> raw, comm, executor, stage, commit;
};
std::map<size_t, Samples> g_samples;  // by executor

double Seconds(uint32_t kind, uint64_t which = 0) {
  return g_rank->link->Time(Command{kind, 0, which, 0}, [](const Command& c) { Run(*g_rank, c); });
}

struct Totals {
  double raw_gbs, comm_gbs, executor_gbs, executor_raw, executor_comm, comm_raw, stage_comm, commit_ms, tail_ms;
};

Totals Summarize(const Samples& s) {
  double rt = 0, ct = 0, et = 0, st = 0, kt = 0;
  std::vector<double> er, ec, cr;
  for (size_t i = 0; i < s.raw.size(); ++i) {
    rt += s.raw[i];
    ct += s.comm[i];
    et += s.executor[i];
    st += s.stage[i];
    kt += s.commit[i];
    er.push_back(s.raw[i] / s.executor[i]);
    ec.push_back(s.comm[i] / s.executor[i]);
    cr.push_back(s.raw[i] / s.comm[i]);
  }
  const double n = static_cast<double>(s.raw.size());
  return {s.moved * n / rt / 1e9,
          s.moved * n / ct / 1e9,
          s.moved * n / et / 1e9,
          100 * Median(er),
          100 * Median(ec),
          100 * Median(cr),
          100 * ct / st,
          1e3 * kt / n,
          1e3 * (et - st - kt) / n};
}

// Each iteration migrates the model once with the executor and moves the
// same wire bytes once with raw Gloo and once with the bare communicator,
// rotating which goes first.
void Compare(benchmark::State& state, size_t which) {
  Rank& r = *g_rank;
  Samples& s = g_samples[which];
  s.name = r.executors[which].name;
  s.moved = static_cast<uint64_t>(r.layers) * kRanks * kSlotsPerRank * r.expert_bytes();
  for (auto _ : state) {
    auto t = eplb::bench::RunInTurn(s.raw.size(), {[] { return Seconds(kRaw); }, [] { return Seconds(kComm); },
                                                   [&] { return Seconds(kExecutor, which); }});
    double commit = 0, stage = 0;
    for (const auto& rep : r.last_reports) {
      commit += rep.commit_seconds;
      stage += rep.stage_seconds;
    }
    s.raw.push_back(t[0]);
    s.comm.push_back(t[1]);
    s.executor.push_back(t[2]);
    s.stage.push_back(stage);
    s.commit.push_back(commit);
    state.SetIterationTime(t[2]);
  }
  // The weights hold the expected experts after the last migration.
  const eplb::Placement& now = r.at_a ? r.a : r.b;
  for (int l = 0; l < r.layers; ++l)
    for (int t = 0; t < 3; ++t)
      for (int slot = 0; slot < kSlotsPerRank; ++slot) {
        int32_t e = 0;
        std::memcpy(&e, r.weights[l][t].data() + slot * r.tensor_bytes[t], sizeof(e));
        if (e != now.expert_at(l, r.rank * kSlotsPerRank + slot))
          state.SkipWithError("a slot holds the wrong expert after migration");
      }
  const Totals x = Summarize(s);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * s.moved));
  state.counters["raw_GB/s"] = x.raw_gbs;
  state.counters["comm_GB/s"] = x.comm_gbs;
  state.counters["executor_GB/s"] = x.executor_gbs;
  state.counters["executor/raw_%"] = x.executor_raw;
  state.counters["executor/comm_%"] = x.executor_comm;
  state.counters["comm/raw_%"] = x.comm_raw;
  // Transfers + local copies + agreement alone, against the communicator.
  state.counters["stage/comm_%"] = x.stage_comm;
  state.counters["commit_ms"] = x.commit_ms;
  // Neither staging nor issuing commits: the wait for the last commit (two
  // staging layers), planning, and the end-of-run acknowledgement.
  state.counters["tail_ms"] = x.tail_ms;
}

}  // namespace

int main(int argc, char** argv) {
  const eplb::bench::BenchArgs args = eplb::bench::SplitArgs(argc, argv, {"expert", "layers", "threads"});
  std::vector<char*> rest = args.rest;
  const std::string& peer_dir = args.peer_dir;
  uint64_t expert_bytes = 0;
  int layers = 0, threads = 0;
  try {
    expert_bytes = eplb::bench::ParseBytes(args.Get("expert", "8M"));
    layers = std::stoi(args.Get("layers", "16"));
    threads = std::stoi(args.Get("threads", "0"));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bad argument: %s\n", e.what());
    return 2;
  }
  if (expert_bytes < 8 || layers <= 0 || threads < 0 || threads > 64) {
    std::fprintf(stderr, "--expert must be at least 8 bytes, --layers positive, --threads in [0, 64]\n");
    return 2;
  }
  if (threads == 0) threads = eplb::DefaultHostCopierThreads();
  Rank r;
  if (!peer_dir.empty()) {
    r.link = eplb::bench::TwoRanks::Follow(peer_dir);
    Setup(r, layers, expert_bytes, threads);
    r.link->Serve([&](const Command& c) { Run(r, c); });
    return 0;
  }
  r.link = eplb::bench::TwoRanks::Lead(
      "migration-bench", {"--expert=" + std::to_string(expert_bytes), "--layers=" + std::to_string(layers),
                          "--threads=" + std::to_string(threads)});
  Setup(r, layers, expert_bytes, threads);
  g_rank = &r;

  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  const std::string shape =
      "/" + std::to_string(layers) + "_layers/" + std::to_string(expert_bytes >> 20) + "MiB_experts";
  for (size_t i = 0; i < r.executors.size(); ++i) {
    const std::string name = r.executors[i].name + "_vs_raw_gloo" + shape;
    benchmark::RegisterBenchmark(name.c_str(), [i](benchmark::State& s) { Compare(s, i); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->MinTime(2.0);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  const bool peer_ok = r.link->Finish();

  std::printf("\nsummary (%d layers, %llu MiB experts, %.0f MiB over the wire per run): GB/s over all timed runs\n"
              "(raw Gloo, communicator, executor in turn, same run); ratios = median over iterations of the\n"
              "baseline's time / the other's; commit_ms = commit (or its issuing, 2 staging layers) per run;\n"
              "tail_ms = executor time outside stage and commit per run\n",
              layers, static_cast<unsigned long long>(expert_bytes >> 20),
              static_cast<double>(layers) * kRanks * kSlotsPerRank * expert_bytes / (1 << 20));
  for (const auto& [i, s] : g_samples) {
    if (s.raw.empty()) continue;
    const Totals x = Summarize(s);
    std::printf("  %-44s raw %5.2f  comm %5.2f  executor %5.2f GB/s  executor/raw %5.1f%%  executor/comm %5.1f%%  "
                "comm/raw %5.1f%%  stage/comm %5.1f%%  commit %.1f ms  tail %.1f ms (%zu)\n",
                s.name.c_str(), x.raw_gbs, x.comm_gbs, x.executor_gbs, x.executor_raw, x.executor_comm, x.comm_raw,
                x.stage_comm, x.commit_ms, x.tail_ms, s.raw.size());
  }
  return peer_ok ? 0 : 1;
}
