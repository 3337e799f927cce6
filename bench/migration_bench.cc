// Migration throughput: the migration executor (plan -> transfers into
// staging -> agreement -> commit, per layer) against the bare gloo
// communicator moving exactly the same wire bytes (one Execute per layer, no
// staging, no agreement, no commit), measured in the same run between the
// same two processes over loopback. (bench/gloo_bench.cc relates the
// communicator to raw Gloo.)
//
// Two executors: one staging layer with memcpy copies (the default), and two
// staging layers with a copier thread, where a layer's commit overlaps the
// next layer's transfers.
//
// The model: --layers MoE layers (default 4), 8 slots per rank, 16 experts,
// each expert three tensors (w1, w2, w3: 3/8, 2/8, 3/8 of --expert bytes,
// default 8 MiB). Each iteration swaps every rank's experts with the other
// rank's, so every slot receives over the wire: 64 MiB per layer each way.
// Iterations alternate which of the two goes first.
//
// This process is rank 0 and runs the benchmarks; it starts a copy of itself
// as rank 1 (`--peer DIR`), which follows rank 0's commands (sent over the
// control group) until told to quit.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "eplb/bootstrap.h"
#include "eplb/gloo.h"
#include "eplb/migration.h"
#include "io/process.h"

namespace {

using namespace std::chrono_literals;

enum Kind : uint8_t { kQuit = 0, kComm = 1, kExecutor = 2, kPipelined = 3 };

constexpr int kRanks = 2, kSlotsPerRank = 8, kExperts = 16;

struct Rank {
  int rank = 0;
  int layers = 4;
  uint64_t tensor_bytes[3] = {};
  std::unique_ptr<eplb::Communicator> comm;
  std::unique_ptr<eplb::ControlGroup> control;
  std::vector<std::vector<std::vector<uint8_t>>> weights;  // [layer][tensor]
  std::vector<uint8_t> landing;                            // baseline destination
  std::unique_ptr<eplb::MigrationExecutor> executor;       // one staging layer, memcpy
  std::unique_ptr<eplb::MigrationExecutor> pipelined;      // two, copier thread
  eplb::Placement a, b;
  bool at_a = true;                                            // which placement the weights hold
  std::vector<std::vector<eplb::Transfer>> comm_transfers[2];  // [a->b / b->a][layer]
  std::vector<eplb::LayerMigrationReport> last_reports;

  uint64_t expert_bytes() const { return tensor_bytes[0] + tensor_bytes[1] + tensor_bytes[2]; }
};

Rank Setup(int rank, const std::string& dir, int layers, uint64_t expert_bytes) {
  Rank r;
  r.rank = rank;
  r.layers = layers;
  r.tensor_bytes[0] = expert_bytes / 8 * 3;
  r.tensor_bytes[1] = expert_bytes / 8 * 2;
  r.tensor_bytes[2] = expert_bytes - r.tensor_bytes[0] - r.tensor_bytes[1];
  auto store = eplb::MakeFileStore(dir);
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
  r.executor = std::make_unique<eplb::MigrationExecutor>(*r.comm, *r.control, lw, kSlotsPerRank,
                                                         eplb::MakeHostCopier(),
                                                         eplb::MigrationOptions{}, deadline);
  eplb::MigrationOptions two;
  two.staging_layers = 2;
  r.pipelined = std::make_unique<eplb::MigrationExecutor>(
      *r.comm, *r.control, lw, kSlotsPerRank, eplb::MakeThreadedHostCopier(), two, deadline);

  // The baseline moves the same wire bytes from the same weights into a
  // landing buffer of one layer, registered separately.
  r.landing.resize(r.expert_bytes() * kSlotsPerRank);
  std::vector<std::vector<eplb::RegionId>> src(layers);
  for (int l = 0; l < layers; ++l)
    for (int t = 0; t < 3; ++t)
      src[l].push_back(r.comm->RegisterRegion(lw[l].tensors[t].memory, deadline));
  const eplb::RegionId dst = r.comm->RegisterRegion(
      {r.landing.data(), r.landing.size(), eplb::MemoryKind::kHost, -1}, deadline);
  for (int dir_index = 0; dir_index < 2; ++dir_index) {
    const eplb::Placement& from = dir_index == 0 ? r.a : r.b;
    const eplb::Placement& to = dir_index == 0 ? r.b : r.a;
    for (int l = 0; l < layers; ++l) {
      eplb::LayerPlan plan = eplb::PlanLayer(from, to, l, {0, r.expert_bytes()});
      std::vector<eplb::WireTensor> wt;
      uint64_t offset = 0;
      for (int t = 0; t < 3; ++t) {
        wt.push_back(
            {r.tensor_bytes[t], src[l][t], 0, r.tensor_bytes[t], dst, offset, r.tensor_bytes[t]});
        offset += r.tensor_bytes[t] * kSlotsPerRank;
      }
      r.comm_transfers[dir_index].push_back(eplb::WireTransfers(plan, wt));
    }
  }
  return r;
}

// Runs one command on this rank. Both ranks call it with the same command.
void Run(Rank& r, Kind kind) {
  auto deadline = eplb::DeadlineAfter(60s);
  if (kind == kComm) {
    for (const auto& transfers : r.comm_transfers[r.at_a ? 0 : 1])
      r.comm->Execute(transfers, deadline);
  } else if (kind == kExecutor || kind == kPipelined) {
    auto& ex = kind == kExecutor ? r.executor : r.pipelined;
    r.last_reports = ex->Migrate(r.at_a ? r.a : r.b, r.at_a ? r.b : r.a, deadline);
    r.at_a = !r.at_a;
  }
}

// Rank 0 tells rank 1 what to run next: an all-gather of one byte.
Kind Exchange(Rank& r, Kind kind) {
  std::vector<uint8_t> blob;
  if (r.rank == 0) blob.push_back(kind);
  auto all = r.control->AllGather(blob, eplb::DeadlineAfter(600s));
  return static_cast<Kind>(all[0].at(0));
}

int RunPeer(const std::string& dir, int layers, uint64_t expert_bytes) {
  Rank r = Setup(1, dir, layers, expert_bytes);
  for (;;) {
    Kind k = Exchange(r, kQuit);
    if (k == kQuit) return 0;
    Run(r, k);
  }
}

Rank* g_rank = nullptr;

double TimeOnce(Kind kind) {
  Exchange(*g_rank, kind);
  auto t0 = std::chrono::steady_clock::now();
  Run(*g_rank, kind);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Samples {
  std::vector<double> comm, executor, commit, stage;
};
std::map<Kind, Samples> g_samples;

// Each iteration migrates the model once with the executor and moves the
// same wire bytes once with the bare communicator, alternating the order.
void Compare(benchmark::State& state, Kind kind) {
  Rank& r = *g_rank;
  // Bytes over the wire per iteration, both directions together.
  const uint64_t moved =
      static_cast<uint64_t>(r.layers) * kRanks * kSlotsPerRank * r.expert_bytes();
  Samples& samples = g_samples[kind];
  bool comm_first = true;
  for (auto _ : state) {
    double c = 0, e = 0;
    if (comm_first) {
      c = TimeOnce(kComm);
      e = TimeOnce(kind);
    } else {
      e = TimeOnce(kind);
      c = TimeOnce(kComm);
    }
    comm_first = !comm_first;
    double commit = 0, stage = 0;
    for (const auto& rep : r.last_reports) {
      commit += rep.commit_seconds;
      stage += rep.stage_seconds;
    }
    samples.stage.push_back(stage);
    samples.comm.push_back(c);
    samples.executor.push_back(e);
    samples.commit.push_back(commit);
    state.SetIterationTime(e);
  }
  // The weights hold the expected experts after the last migration.
  const eplb::Placement& now = r.at_a ? r.a : r.b;
  for (int l = 0; l < r.layers; ++l)
    for (int t = 0; t < 3; ++t)
      for (int s = 0; s < kSlotsPerRank; ++s) {
        int32_t e = 0;
        std::memcpy(&e, r.weights[l][t].data() + s * r.tensor_bytes[t], sizeof(e));
        if (e != now.expert_at(l, r.rank * kSlotsPerRank + s))
          state.SkipWithError("a slot holds the wrong expert after migration");
      }
  double ct = 0, et = 0, kt = 0, st = 0;
  std::vector<double> ratios;
  for (size_t i = 0; i < samples.comm.size(); ++i) {
    ct += samples.comm[i];
    et += samples.executor[i];
    kt += samples.commit[i];
    st += samples.stage[i];
    ratios.push_back(samples.comm[i] / samples.executor[i]);
  }
  const double n = static_cast<double>(samples.comm.size());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * moved));
  state.counters["comm_GB/s"] = moved * n / ct / 1e9;
  state.counters["executor_GB/s"] = moved * n / et / 1e9;
  state.counters["executor/comm_%"] = 100.0 * Median(ratios);
  state.counters["commit_ms"] = 1e3 * kt / n;
  // Transfers + local copies + agreement alone, against the communicator.
  state.counters["stage/comm_%"] = 100.0 * ct / st;
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
  uint64_t expert_bytes = 8ull << 20;
  int layers = 4;
  std::vector<char*> rest;
  std::string peer_dir;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--expert=", 0) == 0) {
      expert_bytes = ParseBytes(a.substr(9));
    } else if (a.rfind("--layers=", 0) == 0) {
      layers = std::stoi(a.substr(9));
    } else if (a == "--peer" && i + 1 < argc) {
      peer_dir = argv[++i];
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (expert_bytes < 8 || layers <= 0) {
    std::fprintf(stderr, "--expert must be at least 8 bytes and --layers positive\n");
    return 2;
  }
  if (!peer_dir.empty()) return RunPeer(peer_dir, layers, expert_bytes);

  char tmpl[] = "/tmp/eplb-migration-bench-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return 1;
  const std::string dir = tmpl;
  eplb::io::SpawnOptions spawn;
  spawn.argv = {eplb::io::SelfExecutable(), "--peer", dir,
                "--expert=" + std::to_string(expert_bytes), "--layers=" + std::to_string(layers)};
  auto peer = eplb::io::Process::Spawn(spawn);
  Rank r = Setup(0, dir, layers, expert_bytes);
  g_rank = &r;

  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  const std::string shape = "/" + std::to_string(layers) + "_layers/" +
                            std::to_string(expert_bytes >> 20) + "MiB_experts";
  for (Kind kind : {kExecutor, kPipelined}) {
    const std::string name =
        std::string(kind == kExecutor ? "executor" : "executor_2_staging_layers") +
        "_vs_communicator" + shape;
    benchmark::RegisterBenchmark(name.c_str(), [kind](benchmark::State& s) { Compare(s, kind); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->MinTime(2.0);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  Exchange(r, kQuit);
  auto status = peer.Wait(eplb::DeadlineAfter(30s));
  std::filesystem::remove_all(dir);
  return status && status->ok() ? 0 : 1;
}
