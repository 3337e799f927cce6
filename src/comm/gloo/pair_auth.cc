#include "comm/gloo/pair_auth.h"

#include <gloo/transport/unbound_buffer.h>

#include <memory>
#include <thread>
#include <vector>

#include "comm/gloo/gloo_errors.h"
#include "eplb/error.h"
#include "util/mac.h"
#include "util/mutex.h"

namespace eplb::gloo_backend {
namespace {

constexpr size_t kChallengeBytes = 16;
constexpr std::chrono::milliseconds kLookInterval{100};

// The answer `from` gives `to`: it covers the group, the generation, the
// direction, the challenge `to` sent and the one `from` sent, so it is good
// for this one connection only, one way only.
util::Mac Answer(const std::array<uint8_t, 32>& key, const std::string& group, uint64_t generation, int from,
                 int to, std::span<const uint8_t> to_challenge, std::span<const uint8_t> from_challenge) {
  const uint64_t header[4] = {group.size(), generation, static_cast<uint64_t>(from), static_cast<uint64_t>(to)};
  return util::HmacSha256(key, {util::Bytes("eplb/v1/gloo-pair"),
                                std::span(reinterpret_cast<const uint8_t*>(header), sizeof header),
                                util::Bytes(group), to_challenge, from_challenge});
}

struct Peer {
  std::vector<uint8_t> mine;  // the challenge this rank sent
  std::array<uint8_t, kChallengeBytes> theirs{};
  util::Mac my_answer{}, their_answer{};
  std::unique_ptr<gloo::transport::UnboundBuffer> challenge_in, challenge_out, answer_in, answer_out;
};

// Looks every kLookInterval at the peers still awaited and aborts the waits
// on one that `failure` says will not answer.
class Lookout {
 public:
  Lookout(std::vector<Peer>& peers, int me, const PeerFailure& failure)
      : peers_(peers), me_(me), failure_(failure), thread_([this] { Run(); }) {}
  ~Lookout() {
    {
      util::MutexLock lock(&mu_);
      stop_ = true;
    }
    cv_.NotifyAll();
    thread_.join();
  }
  void Done(int peer) EXCLUDES(mu_) {
    util::MutexLock lock(&mu_);
    done_.at(peer) = true;
  }
  std::optional<std::string> Why(int peer) EXCLUDES(mu_) {
    util::MutexLock lock(&mu_);
    return why_.at(peer);
  }

 private:
  void Run() EXCLUDES(mu_) {
    util::MutexLock lock(&mu_);
    while (!stop_) {
      cv_.WaitUntil(&mu_, Clock::now() + kLookInterval);
      for (int p = 0; p < static_cast<int>(peers_.size()) && !stop_; ++p) {
        if (p == me_ || done_[p] || why_[p]) continue;
        std::optional<std::string> why = failure_ ? failure_(p) : std::nullopt;
        if (!why) continue;
        why_[p] = std::move(why);
        // A wait not yet begun is not missed: the main thread checks Why()
        // before each wait, and an abort before a wait ends that wait at once.
        for (auto* b : {peers_[p].challenge_in.get(), peers_[p].answer_in.get()})
          if (b != nullptr) b->abortWaitRecv();
      }
    }
  }

  std::vector<Peer>& peers_;
  const int me_;
  const PeerFailure& failure_;
  util::Mutex mu_;
  util::CondVar cv_;
  bool stop_ GUARDED_BY(mu_) = false;
  std::vector<bool> done_ GUARDED_BY(mu_) = std::vector<bool>(peers_.size(), false);
  std::vector<std::optional<std::string>> why_ GUARDED_BY(mu_) =
      std::vector<std::optional<std::string>>(peers_.size());
  std::thread thread_;  // last: starts when the rest exists
};

}  // namespace

void ProvePairs(gloo::Context& context, const std::array<uint8_t, 32>& key, const std::string& group,
                uint64_t generation, Deadline deadline, const char* operation, const PeerFailure& failure) {
  const int me = context.rank, size = context.size;
  const auto start = Clock::now();
  std::vector<Peer> peers(size);
  auto ms = [&] {
    return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count()) +
           " ms";
  };
  auto not_the_peer = [&](int p, const std::string& what) {
    return "rendezvous: the connection to rank " + std::to_string(p) + " in group '" + group + "' (generation " +
           std::to_string(generation) + ") " + what;
  };
  // Every buffer exists before the lookout starts and is never replaced, so
  // its thread may abort waits on them at any time.
  for (int p = 0; p < size; ++p) {
    if (p == me) continue;
    Peer& x = peers[p];
    x.mine = util::RandomBytes(kChallengeBytes);
    x.challenge_in = context.createUnboundBuffer(x.theirs.data(), x.theirs.size());
    x.challenge_out = context.createUnboundBuffer(x.mine.data(), x.mine.size());
    x.answer_in = context.createUnboundBuffer(x.their_answer.data(), x.their_answer.size());
    x.answer_out = context.createUnboundBuffer(x.my_answer.data(), x.my_answer.size());
  }
  Lookout lookout(peers, me, failure);
  auto wait_recv = [&](int p, gloo::transport::UnboundBuffer& b, const char* what) {
    if (auto why = lookout.Why(p)) throw Error("gloo", operation, not_the_peer(p, "failed: " + *why), me, p);
    bool done = false;
    try {
      done = b.waitRecv(nullptr, TimeLeft(deadline));
    } catch (const std::exception& e) {
      if (IsGlooTimeout(e))
        throw TimeoutError("gloo", operation,
                           not_the_peer(p, std::string("sent no ") + what + " within " + ms() +
                                               ": rank " + std::to_string(p) +
                                               " is stalled, or the connection is not rank " + std::to_string(p) +
                                               "'s (a process without the run's job token connected to this "
                                               "rank's port first)"),
                           me, p);
      throw Error("gloo", operation, not_the_peer(p, std::string("broke before its ") + what + ": " + e.what()), me, p);
    }
    if (!done) {
      auto why = lookout.Why(p);
      throw Error("gloo", operation, not_the_peer(p, "failed: " + why.value_or("wait aborted")), me, p);
    }
  };
  try {
    for (int p = 0; p < size; ++p) {
      if (p == me) continue;
      Peer& x = peers[p];
      x.challenge_in->recv(p, kChallengeSlot, 0, x.theirs.size());
      x.challenge_out->send(p, kChallengeSlot, 0, x.mine.size());
    }
    for (int p = 0; p < size; ++p) {
      if (p == me) continue;
      Peer& x = peers[p];
      wait_recv(p, *x.challenge_in, "challenge");
      x.my_answer = Answer(key, group, generation, me, p, x.theirs, x.mine);
      x.answer_in->recv(p, kAnswerSlot, 0, x.their_answer.size());
      x.answer_out->send(p, kAnswerSlot, 0, x.my_answer.size());
    }
    for (int p = 0; p < size; ++p) {
      if (p == me) continue;
      Peer& x = peers[p];
      wait_recv(p, *x.answer_in, "answer to this rank's challenge");
      const util::Mac expected = Answer(key, group, generation, p, me, x.mine, x.theirs);
      if (!util::ConstantTimeEqual(expected, x.their_answer))
        throw Error("gloo", operation,
                    not_the_peer(p, "is not rank " + std::to_string(p) +
                                        "'s: the other end does not hold the run's job token (a process of this "
                                        "machine that is not part of the run connected to this rank's port "
                                        "first); nothing it sent was used"),
                    me, p);
      lookout.Done(p);
    }
    for (int p = 0; p < size; ++p) {
      if (p == me) continue;
      peers[p].challenge_out->waitSend(nullptr, TimeLeft(deadline));
      peers[p].answer_out->waitSend(nullptr, TimeLeft(deadline));
    }
  } catch (const eplb::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error("gloo", operation, "rendezvous: proving the run's job token to the peers: " + std::string(e.what()), me);
  }
}

}  // namespace eplb::gloo_backend
