// The balancer's agreements: the commit agreement of a layer, the end
// round of a cycle with nothing to commit, and following the blame to the
// rank that stalled or died.
#include "runtime/balancer_state.h"

namespace eplb {
using namespace balancer_internal;

// The commit agreement of one layer. Round 1: every rank says whether it
// staged the layer. Round 2 (async): the step to commit it at. A collective
// that fails part-way (a rank dies while its vote is in flight) can complete
// on some survivors and not on others, so no rank acts on its own view: each
// one that staged the layer records the outcome it saw -- commit at a step,
// or abandon -- in the store under the layer's key, where the first record
// stands (Store::SetIfAbsent), and every rank follows the record. Commit is
// recorded only by a rank that saw every rank's vote, so a layer some rank
// did not stage is never committed; and a survivor whose exchange failed
// still commits at the same step as one whose exchange completed.
//
// Returns the agreed commit step (sync mode: 0). `after` is set when this
// rank's exchange failed but the record says commit: the caller commits,
// then rethrows it to abandon the rest of the cycle. Throws when the layer is
// abandoned; if the record cannot be read or written the layer stays in
// doubt, settled at the next handshake.
int64_t Balancer::State::Decide(const Staged& staged, bool staged_ok, std::exception_ptr stage_error,
                                int layer, std::exception_ptr* after) {
  // A rank whose transfers timed out skips the vote: a peer is stalled, so
  // the vote would only wait out a second deadline. Other failures are voted
  // on, so every rank abandons the layer at once.
  if (stage_error) {
    try {
      std::rethrow_exception(stage_error);
    } catch (const TimeoutError&) {
      throw;
    } catch (...) {
    }
  }
  const std::string operation = fmt::format("commit agreement of MoE layer {}", layer);
  auto gather = [&](const Vote& mine) REQUIRES(cycle_role) {
    auto all = control->AllGather(mine.Encode(), WaitDeadline());
    std::vector<Vote> votes(world);
    for (int r = 0; r < world; ++r) votes[r] = Vote::Decode(all[r], {"balancer", operation, me, r});
    return votes;
  };
  auto clear_floor = [&] {
    util::MutexLock lock(&mu);
    floor_step = -1;
    cv.NotifyAll();
  };
  // Records this rank's outcome (commit at `step`, or abandon when empty)
  // and returns the one that stands.
  auto record = [&](std::optional<int64_t> step) -> std::optional<int64_t> {
    const std::vector<uint8_t> mine = EncodeDecision(step);
    SetOp(fmt::format("recording the decision on MoE layer {}", layer));
    std::vector<uint8_t> stands;
    try {
      stands = links.store->SetIfAbsent(
          fmt::format("{}/decision/{}/{}", cfg.name, staged.cycle, layer), mine);
    } catch (const std::exception& e) {
      util::MutexLock lock(&mu);
      doubt = Doubt{0, staged, versions[layer] + 1};  // a peer may commit it
      throw Error("balancer", operation,
                  fmt::format("could not record the decision in the store ({}); the layer is in "
                              "doubt until the next handshake",
                              e.what()),
                  me);
    }
    // The record is whoever wrote first: a peer, or an outsider with the
    // store's address (named as "a peer").
    return DecodeDecision(stands, {"balancer", "the decision recorded on MoE layer " + std::to_string(layer), me, -1});
  };
  // After this rank's exchange failed: records "abandon" and follows what
  // stands. If the store cannot be reached the layer is left in doubt and
  // the exchange's own error (naming the peer) is what surfaces.
  auto follow_record = [&](std::exception_ptr failure) -> int64_t {
    std::optional<int64_t> stands;
    try {
      stands = record(std::nullopt);
    } catch (const std::exception& e) {
      spdlog::error("eplb: rank {}: {}", me, e.what());
      std::rethrow_exception(failure);
    }
    if (!stands) std::rethrow_exception(failure);
    spdlog::warn("eplb: rank {}: the vote on MoE layer {} failed here but a peer saw every vote and "
                 "recorded the commit: committing it here too",
                 me, layer);
    *after = failure;
    return *stands;
  };

  // Round 1: did every rank stage the layer? Ranks get here when their own
  // transfers are done, at different times; no step waits on this round.
  SetOp(fmt::format("the staging vote of MoE layer {}", layer));
  std::vector<Vote> votes;
  try {
    votes = gather(Vote{staged_ok ? 1 : 0, me, 0});
  } catch (...) {
    std::exception_ptr failure = stage_error ? stage_error : std::current_exception();
    if (!staged_ok) std::rethrow_exception(failure);
    return follow_record(failure);
  }
  if (stage_error) std::rethrow_exception(stage_error);
  std::vector<int> failed;
  for (const Vote& v : votes)
    if (!v.ok) failed.push_back(v.rank);
  if (!failed.empty())
    throw Error("balancer", fmt::format("stage of MoE layer {}", layer),
                fmt::format("rank{} {} could not stage it", failed.size() > 1 ? "s" : "",
                            RankList(failed)),
                me, failed[0]);
  const std::string abandoned = "a peer's vote exchange failed and it recorded abandoning the layer";
  if (!async()) {
    if (!record(0)) throw Error("balancer", operation, abandoned, me);
    return 0;
  }

  // Round 2 (async): the commit step. Every rank arrives within a round trip
  // of the others, so the engine reaching its own proposal first (and
  // waiting for the answer) is rare and short.
  Vote mine{1, me, 0};
  {
    util::MutexLock lock(&mu);
    mine.proposal = step + cfg.commit_lead_steps;
    floor_step = mine.proposal;
    veto = false;
  }
  SetOp(fmt::format("the commit-step agreement of MoE layer {}", layer));
  try {
    votes = gather(mine);
  } catch (...) {
    std::exception_ptr failure = std::current_exception();
    try {
      return follow_record(failure);
    } catch (...) {
      clear_floor();
      throw;
    }
  }
  int64_t proposal = 0;
  for (const Vote& v : votes) proposal = std::max(proposal, v.proposal);
  std::optional<int64_t> stands;
  try {
    stands = record(proposal);
  } catch (...) {
    clear_floor();
    throw;
  }
  if (!stands) {
    clear_floor();
    throw Error("balancer", operation, abandoned, me);
  }
  return *stands;
}

// A cycle with nothing to commit still ends at an agreed step, so the next
// trigger is taken or skipped alike on every rank.
void Balancer::State::EndRound() {
  Vote mine{1, me, 0};
  {
    util::MutexLock lock(&mu);
    mine.proposal = step + cfg.commit_lead_steps;
    floor_step = mine.proposal;
    veto = false;
  }
  SetOp("the end-of-cycle agreement");
  std::vector<std::vector<uint8_t>> all;
  try {
    all = control->AllGather(mine.Encode(), WaitDeadline());
  } catch (...) {
    util::MutexLock lock(&mu);
    floor_step = -1;
    cv.NotifyAll();
    throw;
  }
  int64_t end = 0;
  for (int r = 0; r < world; ++r)
    end = std::max(end, Vote::Decode(all[r], {"balancer", "end-of-cycle agreement", me, r}).proposal);
  {
    util::MutexLock lock(&mu);
    floor_step = -1;
    if (veto || step >= end) {
      veto = false;
      throw Error("balancer", "end-of-cycle agreement",
                  "this rank's engine passed its proposed step before the agreement arrived", me);
    }
    end_step = end;
  }
  cv.NotifyAll();
}

// A rank that times out blames the peer it was waiting for, but that peer
// may itself have been waiting for a third (a stalled rank holds up its
// neighbours first). Each failing rank notes whom it blames in the store;
// this follows the notes to the rank that has none (the one stalled or
// dead), waiting briefly for peers that fail at about the same time.
int Balancer::State::FollowBlame(int64_t cycle, int blamed, std::string* chain) {
  auto key = [&](int r) {
    return cfg.name + "/blame/" + std::to_string(cycle) + "/" + std::to_string(r);
  };
  try {
    links.store->Set(key(me), wire::Writer(wire::Kind::kBlame).Put(int32_t{blamed}).Take());
  } catch (const std::exception& e) {
    spdlog::debug("eplb: rank {}: could not note whom it blames: {}", me, e.what());
  }
  const Deadline budget = DeadlineAfter(std::min<std::chrono::milliseconds>(cfg.deadline / 2, 500ms));
  // A note, waited for in slices so that a balancer being destroyed (a
  // process ending after the failure) does not wait out the budget.
  auto get_note = [&](int r) -> std::vector<uint8_t> {
    for (;;) {
      {
        util::MutexLock lock(&mu);
        if (stop) throw TimeoutError("balancer", "following the blame", "the balancer is stopping", me, r);
      }
      try {
        return links.store->Get(key(r), std::min(budget, DeadlineAfter(25ms)));
      } catch (const TimeoutError&) {
        if (Expired(budget)) throw;
      }
    }
  };
  std::vector<bool> seen(world, false);
  seen[me] = true;
  int root = blamed;
  while (root >= 0 && root < world && !seen[root]) {
    seen[root] = true;
    int next = -1;
    try {
      auto note = get_note(root);
      wire::Reader r(note, wire::Kind::kBlame, {"balancer", "following the blame", me, root});
      next = r.Get<int32_t>();
      r.Finish();
    } catch (const TimeoutError&) {
      break;  // no note: this one is stalled or dead
    } catch (const std::exception& e) {
      spdlog::warn("eplb: rank {}: {}", me, e.what());
      break;  // an unreadable note: blame the rank that wrote it
    }
    if (next < 0 || next >= world || seen[next]) break;
    *chain += fmt::format(", which waited for rank {}", next);
    root = next;
  }
  if (!chain->empty()) *chain = fmt::format(": this rank waited for rank {}", blamed) + *chain;
  return root;
}

}  // namespace eplb
