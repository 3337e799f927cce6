#include "support/two_ranks.h"

#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>

namespace eplb::bench {
namespace {

using namespace std::chrono_literals;

// Raw Gloo slots: commands, acknowledgements, then one per transfer of Move.
constexpr uint64_t kCommandSlot = 1, kAckSlot = 2, kFirstDataSlot = uint64_t{1} << 32;
constexpr auto kTimeout = 600000ms;  // a command may wait for a whole benchmark

}  // namespace

uint64_t ParseBytes(const std::string& text) {
  size_t used = 0;
  uint64_t n = std::stoull(text, &used);
  const std::string unit = text.substr(used);
  if (unit == "K" || unit == "k") return n << 10;
  if (unit == "M" || unit == "m") return n << 20;
  if (unit == "G" || unit == "g") return n << 30;
  if (!unit.empty()) throw std::invalid_argument("bad byte count '" + text + "' (a number, then K, M or G)");
  return n;
}

BenchArgs SplitArgs(int argc, char** argv, const std::vector<std::string>& own) {
  BenchArgs out;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    const size_t eq = a.find('=');
    if (i > 0 && a.rfind("--", 0) == 0 && eq != std::string::npos &&
        std::find(own.begin(), own.end(), a.substr(2, eq - 2)) != own.end()) {
      out.own[a.substr(2, eq - 2)] = a.substr(eq + 1);
    } else if (a == "--peer" && i + 1 < argc) {
      out.peer_dir = argv[++i];
    } else {
      out.rest.push_back(argv[i]);
    }
  }
  return out;
}

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5))];
}

std::vector<double> RunInTurn(uint64_t round, const std::vector<std::function<double()>>& runs) {
  std::vector<double> out(runs.size());
  for (size_t k = 0; k < runs.size(); ++k) {
    const size_t i = (round + k) % runs.size();
    out[i] = runs[i]();
  }
  return out;
}

// --- RawGloo -----------------------------------------------------------------

RawGloo::RawGloo(int rank, int size, const std::string& dir) : rank_(rank) {
  std::filesystem::create_directories(dir + "/raw");
  gloo::rendezvous::FileStore file(dir + "/raw");
  gloo::rendezvous::PrefixStore prefix("bench", file);
  gloo::transport::tcp::attr attr;
  attr.hostname = "127.0.0.1";
  auto device = gloo::transport::tcp::CreateDevice(attr);
  auto context = std::make_shared<gloo::rendezvous::Context>(rank, size);
  context->setTimeout(60s);
  context->connectFullMesh(prefix, device);
  context_ = context;
}

RawGloo::~RawGloo() = default;

RegionId RawGloo::AddRegion(void* base, size_t bytes) {
  regions_.push_back(context_->createUnboundBuffer(base, bytes));
  return static_cast<RegionId>(regions_.size() - 1);
}

void RawGloo::Move(std::span<const Transfer> transfers, std::chrono::milliseconds timeout) {
  std::vector<std::pair<gloo::transport::UnboundBuffer*, bool>> posted;  // (buffer, is a send)
  for (bool send : {false, true}) {
    for (size_t i = 0; i < transfers.size(); ++i) {
      const Transfer& t = transfers[i];
      if ((send ? t.src_rank : t.dst_rank) != rank_ || t.bytes == 0) continue;
      auto* buffer = regions_.at(send ? t.src_region : t.dst_region).get();
      if (send) {
        buffer->send(t.dst_rank, kFirstDataSlot + i, t.src_offset, t.bytes);
      } else {
        buffer->recv(t.src_rank, kFirstDataSlot + i, t.dst_offset, t.bytes);
      }
      posted.emplace_back(buffer, send);
    }
  }
  // An unbound buffer counts its completions: one wait per op posted on it.
  for (auto [buffer, send] : posted) {
    if (send) {
      buffer->waitSend(timeout);
    } else {
      buffer->waitRecv(timeout);
    }
  }
}

// --- TwoRanks ----------------------------------------------------------------

std::unique_ptr<TwoRanks> TwoRanks::Lead(const std::string& name, const std::vector<std::string>& peer_args) {
  std::string tmpl = "/tmp/eplb-" + name + "-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp " + tmpl + " failed");
  std::unique_ptr<TwoRanks> r(new TwoRanks);
  r->dir_ = tmpl;
  io::SpawnOptions spawn;
  spawn.argv = {io::SelfExecutable(), "--peer", r->dir_};
  spawn.argv.insert(spawn.argv.end(), peer_args.begin(), peer_args.end());
  r->peer_ = io::Process::Spawn(spawn);
  r->raw_ = std::make_unique<RawGloo>(0, 2, r->dir_);
  r->command_buffer_ = r->raw_->context().createUnboundBuffer(&r->command_, sizeof(Command));
  r->ack_buffer_ = r->raw_->context().createUnboundBuffer(&r->ack_, sizeof(uint64_t));
  return r;
}

std::unique_ptr<TwoRanks> TwoRanks::Follow(const std::string& dir) {
  std::unique_ptr<TwoRanks> r(new TwoRanks);
  r->dir_ = dir;
  r->raw_ = std::make_unique<RawGloo>(1, 2, dir);
  r->command_buffer_ = r->raw_->context().createUnboundBuffer(&r->command_, sizeof(Command));
  r->ack_buffer_ = r->raw_->context().createUnboundBuffer(&r->ack_, sizeof(uint64_t));
  return r;
}

TwoRanks::~TwoRanks() = default;

double TwoRanks::Time(const Command& c, const std::function<void(const Command&)>& run) {
  command_ = c;
  command_buffer_->send(1, kCommandSlot);
  command_buffer_->waitSend(kTimeout);
  ack_buffer_->recv(1, kAckSlot);
  const auto t0 = std::chrono::steady_clock::now();
  run(c);
  ack_buffer_->waitRecv(kTimeout);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void TwoRanks::Serve(const std::function<void(const Command&)>& run) {
  for (;;) {
    command_buffer_->recv(0, kCommandSlot);
    command_buffer_->waitRecv(kTimeout);
    const Command c = command_;
    if (c.kind == 0) return;
    run(c);
    ack_buffer_->send(0, kAckSlot);
    ack_buffer_->waitSend(kTimeout);
  }
}

bool TwoRanks::Finish() {
  command_ = Command{};
  command_buffer_->send(1, kCommandSlot);
  command_buffer_->waitSend(kTimeout);
  auto status = peer_.Wait(DeadlineAfter(30s));
  std::filesystem::remove_all(dir_);
  return status && status->ok();
}

}  // namespace eplb::bench
