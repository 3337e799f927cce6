// What the two-process benchmarks (gloo_bench, migration_bench) share: a peer
// process driven by rank 0, timing that ends when both ranks are done, raw
// Gloo point-to-point as the baseline, and their statistics.
//
// Rank 0 (the benchmark process) starts a copy of itself as rank 1 with
// `--peer DIR` plus the arguments it needs to set up the same memory; rank 1
// serves rank 0's commands until told to quit. Commands and acknowledgements
// travel over the raw Gloo context, never over what is being measured.
#pragma once

#include <gloo/context.h>
#include <gloo/transport/unbound_buffer.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "eplb/communicator.h"
#include "io/process.h"

namespace eplb::bench {

// "256M", "64K", "1G", "4096" -> bytes. Throws std::invalid_argument.
uint64_t ParseBytes(const std::string& text);

// A two-rank benchmark's command line: its own `--name=value` options (those
// named in `own`), `--peer DIR` (this process is rank 1), and the rest, for
// Google Benchmark (argv[0] first).
struct BenchArgs {
  std::map<std::string, std::string> own;
  std::string peer_dir;
  std::vector<char*> rest;
  // The option's value, or `fallback` when not given.
  std::string Get(const std::string& name, const std::string& fallback) const {
    auto it = own.find(name);
    return it == own.end() ? fallback : it->second;
  }
};
BenchArgs SplitArgs(int argc, char** argv, const std::vector<std::string>& own);

// Quantile `q` (0..1) of `v` (nearest rank); 0 when empty.
double Quantile(std::vector<double> v, double q);
inline double Median(std::vector<double> v) { return Quantile(std::move(v), 0.5); }

// Plain Gloo between the ranks, as a Gloo user would write it: FileStore
// rendezvous, the tcp transport on 127.0.0.1, one unbound buffer per memory
// region made once, and point-to-point send/recv at offsets into them.
class RawGloo {
 public:
  RawGloo(int rank, int size, const std::string& dir);
  ~RawGloo();

  int rank() const { return rank_; }
  gloo::Context& context() { return *context_; }

  // Memory that Move reads or writes (kept valid by the caller). Every rank
  // adds its regions in the same order; returns the region's number, which
  // Move's transfers use as src_region / dst_region.
  RegionId AddRegion(void* base, size_t bytes);

  // Moves this rank's part of `transfers`: posts every receive, then every
  // send (one Gloo message per transfer, in its own slot), then waits for
  // all of them. Throws on Gloo errors and past `timeout`.
  void Move(std::span<const Transfer> transfers, std::chrono::milliseconds timeout);

 private:
  int rank_;
  std::shared_ptr<gloo::Context> context_;
  std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>> regions_;
};

// A command from rank 0 to rank 1; its meaning is the benchmark's. kind 0
// means quit.
struct Command {
  uint32_t kind = 0;
  uint32_t flags = 0;
  uint64_t a = 0, b = 0;
};

class TwoRanks {
 public:
  // Rank 0: makes a directory for the stores, starts rank 1 (this executable
  // with `--peer DIR` and `peer_args`) and meets it through raw Gloo.
  static std::unique_ptr<TwoRanks> Lead(const std::string& name, const std::vector<std::string>& peer_args);
  // Rank 1, started by Lead with `--peer dir`.
  static std::unique_ptr<TwoRanks> Follow(const std::string& dir);
  ~TwoRanks();

  int rank() const { return raw_->rank(); }
  // Where both ranks may keep stores (removed by Finish).
  const std::string& dir() const { return dir_; }
  RawGloo& raw() { return *raw_; }

  // Rank 0: tells rank 1 to run `c` (untimed), then runs it here and waits
  // until rank 1 says it is done too. Seconds from after rank 0 sent the
  // command to rank 1's acknowledgement.
  double Time(const Command& c, const std::function<void(const Command&)>& run);
  // Rank 1: runs rank 0's commands, acknowledging each, until told to quit.
  void Serve(const std::function<void(const Command&)>& run);
  // Rank 0: tells rank 1 to quit, waits for it to exit, removes dir().
  // True when it exited 0.
  bool Finish();

 private:
  TwoRanks() = default;
  std::string dir_;
  std::unique_ptr<RawGloo> raw_;
  io::Process peer_;  // rank 1, on rank 0
  Command command_;
  uint64_t ack_ = 0;
  std::unique_ptr<gloo::transport::UnboundBuffer> command_buffer_, ack_buffer_;
};

// Runs each of `runs` once, starting with run `round % runs.size()` and going
// round, so that over rounds each goes first equally often and all see the
// same load on a shared machine. Returns their results in the order of `runs`.
std::vector<double> RunInTurn(uint64_t round, const std::vector<std::function<double()>>& runs);

}  // namespace eplb::bench
