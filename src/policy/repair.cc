#include "policy/repair.h"

#include "policy/swap_bars.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

namespace eplb::movement_detail {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// A free action (it sends nothing, or less than it saves) must take at least
// this share of what the heaviest rank holds above the target: smaller ones
// cost a search each and, on the DeepSeek-V3 loads, sent no fewer experts in
// the end (-1% to +1.5%) while taking 8% longer.
constexpr double kFreeMinShare = 0.5;
// Swap partners and conversion targets among the lightest ranks (besides
// the ranks that held the experts before). More partners send fewer experts
// and take longer: 4 / 6 / 8 / 12 partners, +4% / +1.5% / 0 / -1.5% experts
// sent, -15% / -7% / 0 / +8% time; 2 conversion targets instead of 4 send
// 0.3% more for 8% less time.
constexpr int kLightPartners = 8;
constexpr int kLightConversionTargets = 2;
// While the heaviest rank is more than kFar over the target, big moves do
// the work and the lightest few ranks take them: ranks / kFarPartnersPer
// partners (4 to kLightPartners) instead. At 32 ranks (4 partners): 8% less
// time, experts sent -2.5% to +1%; at 64 ranks it changes nothing. Closer
// than that, conversions are not searched: 4% less time, experts sent the
// same to within 0.1%.
constexpr double kFar = 0.02;
constexpr int kFarPartnersPer = 8;

}  // namespace

class RepairSearch::Impl {
 public:
  void Reset(std::span<const double> load, std::span<const int32_t> previous, int num_ranks) {
    W_ = load;
    E_ = static_cast<int>(load.size());
    P_ = num_ranks;
    S_ = static_cast<int>(previous.size()) / num_ranks;
    const size_t cells = static_cast<size_t>(P_) * E_;
    if (prev_has_.size() != cells || prev_item_.size() != previous.size()) {
      prev_has_.assign(cells, 0);
      has_.assign(cells, 0);
      arrive_.assign(cells, 1);
    } else {
      // Only the cells of the last layer's items were touched: clear those.
      for (const std::vector<int32_t>* items : {&prev_item_, &item_})
        for (int r = 0; r < P_; ++r)
          for (int k = 0; k < S_; ++k) {
            const size_t c = Cell(r, (*items)[r * S_ + k]);
            prev_has_[c] = 0;
            has_[c] = 0;
            arrive_[c] = 1;
          }
    }
    prev_item_.assign(previous.begin(), previous.end());
    item_.assign(previous.begin(), previous.end());
    count_.assign(E_, 0);
    load_.assign(P_, 0.0);
    holder_first_.assign(E_ + 1, 0);
    for (int32_t e : item_) ++count_[e];
    for (int r = 0; r < P_; ++r)
      for (int k = 0; k < S_; ++k) {
        const int e = item_[r * S_ + k];
        if (!prev_has_[Cell(r, e)]) ++holder_first_[e + 1];
        prev_has_[Cell(r, e)] = 1;
        ++has_[Cell(r, e)];
        arrive_[Cell(r, e)] = kHeld;
      }
    // Ranks that held each expert before, ascending: where it goes back free.
    for (int e = 0; e < E_; ++e) holder_first_[e + 1] += holder_first_[e];
    holders_.resize(holder_first_[E_]);
    std::vector<int>& next = scratch_;
    next.assign(holder_first_.begin(), holder_first_.end() - 1);
    std::vector<int>& last = listed_;  // last rank listed for each expert
    last.assign(E_, -1);
    for (int r = 0; r < P_; ++r)
      for (int k = 0; k < S_; ++k) {
        const int e = item_[r * S_ + k];
        if (last[e] != r) last[e] = r, holders_[next[e]++] = r;
      }
    holding_.resize(E_);
    for (std::vector<int>& ranks : holding_) ranks.clear();
    for (int r = 0; r < P_; ++r)
      for (int k = 0; k < S_; ++k) holding_[item_[r * S_ + k]].push_back(r);
    transfers_ = 0;
    listed_.assign(P_, -1);
    holder_mark_.assign(P_, -1);
    lost_mark_.assign(P_, -1);
    stamp_ = 0;
    slot_leave_.assign(item_.size(), 0);  // nothing has arrived yet
    min_leave_.assign(P_, 0);
    RecomputeLoads();
  }

  // Repairs until the heaviest rank is at most `target`; returns whether it
  // got there.
  bool Run(double target, int max_actions) {
    const double total = std::accumulate(load_.begin(), load_.end(), 0.0);
    eps_ = total * 1e-12 + 1e-300;
    for (int step = 0; step < max_actions; ++step) {
      const int h = by_load_.back();
      if (load_[h] <= target) return true;
      lh_ = load_[h];
      target_ = target;
      min_free_drop_ = kFreeMinShare * (lh_ - target_);
      far_ = lh_ - target_ > kFar * target_;
      Action best;
      SetBars(best);
      // Near the target a conversion (the hot expert's holders all change by
      // a hot replica's share) overshoots: the swaps do the fine work.
      if (far_) ConsiderReplicas(h, best);
      ConsiderSwaps(h, best);
      if (best.kind == Action::kNone) return false;
      Apply(best);
    }
    return max_load() <= target;
  }

  int transfers() const { return transfers_; }
  double max_load() const { return load_[by_load_.back()]; }
  const std::vector<int32_t>& items() const { return item_; }

 private:
  struct Action {
    enum Kind { kNone, kSwap, kReplicate } kind = kNone;
    int h = -1, i = -1, r = -1, j = -1;  // swap: slot i of h <-> slot j of r;
                                         // replicate: slot j of r becomes expert i
    int cost = 0;
    double peak = kInf;
    double score = kInf;
  };

  size_t Cell(int r, int e) const { return static_cast<size_t>(r) * E_ + e; }
  double Weight(int e) const { return W_[e] / count_[e]; }
  // Load per replica of e with one replica fewer; kInf for a single replica.
  double FewerWeight(int e) const { return count_[e] < 2 ? kInf : W_[e] / (count_[e] - 1); }
  std::span<const int> Holders(int e) const {
    return {holders_.data() + holder_first_[e], holders_.data() + holder_first_[e + 1]};
  }

  void RecomputeLoads() {
    fewer_w_.resize(E_);
    per_w_.resize(E_);
    for (int e = 0; e < E_; ++e) {
      fewer_w_[e] = FewerWeight(e);
      if (count_[e] > 0) per_w_[e] = Weight(e);
    }
    slot_w_.resize(item_.size());
    min_w_.resize(P_);
    for (int r = 0; r < P_; ++r) {
      for (int k = 0; k < S_; ++k) slot_w_[r * S_ + k] = per_w_[item_[r * S_ + k]];
      RecomputeLoad(r);
    }
    spare_slot_.resize(P_);
    spare_w_.resize(P_);
    for (int r = 0; r < P_; ++r) UpdateSpare(r);
    by_load_.resize(P_);
    std::iota(by_load_.begin(), by_load_.end(), 0);
    std::sort(by_load_.begin(), by_load_.end(), [&](int a, int b) { return Lighter(a, b); });
    load_pos_.resize(P_);
    for (int i = 0; i < P_; ++i) load_pos_[by_load_[i]] = i;
  }

  // Sums in slot order, so every path gives the same bits. Also the
  // lightest slot weight.
  void RecomputeLoad(int r) {
    double l = 0.0, least = kInf;
    for (int k = 0; k < S_; ++k) {
      l += slot_w_[r * S_ + k];
      least = std::min(least, slot_w_[r * S_ + k]);
    }
    load_[r] = l;
    min_w_[r] = least;
  }

  bool Lighter(int a, int b) const { return load_[a] < load_[b] || (load_[a] == load_[b] && a < b); }

  // Moves rank r to its place in by_load_ after its load changed.
  void Reposition(int r) {
    int i = load_pos_[r];
    for (; i > 0 && Lighter(r, by_load_[i - 1]); --i) by_load_[i] = by_load_[i - 1], load_pos_[by_load_[i]] = i;
    for (; i + 1 < P_ && Lighter(by_load_[i + 1], r); ++i) by_load_[i] = by_load_[i + 1], load_pos_[by_load_[i]] = i;
    by_load_[i] = r;
    load_pos_[r] = i;
  }

  // Wire cost of rank r losing one copy of e (-1: it ends a transfer).
  int Leave(int r, int e) const {
    return has_[Cell(r, e)] == 1 && !prev_has_[Cell(r, e)] ? -1 : 0;
  }

  // The spare replica of rank r (of an expert with another replica) whose
  // removal raises its expert's load per replica least, after r's items or
  // any replica count changed.
  void UpdateSpare(int r) {
    int j = -1;
    double j_new = kInf;
    for (int k = 0; k < S_; ++k) {
      const double wx_new = fewer_w_[item_[r * S_ + k]];  // kInf for a single replica
      const bool lower = wx_new < j_new;  // conditional moves: a branch here mispredicts
      j = lower ? k : j;
      j_new = lower ? wx_new : j_new;
    }
    spare_slot_[r] = j;
    spare_w_[r] = j_new;
  }

  // slot_leave_ and min_leave_ of rank r, after its items changed.
  void UpdateLeave(int r) {
    int least = 0;
    for (int k = 0; k < S_; ++k) {
      slot_leave_[r * S_ + k] = static_cast<int8_t>(Leave(r, item_[r * S_ + k]));
      least = std::min<int>(least, slot_leave_[r * S_ + k]);
    }
    min_leave_[r] = static_cast<int8_t>(least);
  }

  // Whether a swap of cost `cost` or more and peak `peak` or more may beat
  // the best action so far (Offer's order): the least score such a swap can
  // have rises with both, so false means none can. A comparison with a bar
  // set when the best changes, so the searches divide only for the actions
  // they offer.
  bool MayBeat(int cost, double peak) const { return peak < bars_.of(cost); }

  // Lower is better: free actions first (by cost, then the drop), then by
  // cost per unit of drop. The drop is the load above the target an action
  // takes off the ranks it changes: a swap that only moves the excess from
  // the heaviest rank to its partner drops nothing and is never taken. For a
  // swap, drop <= lh - max(peak, target) (the heaviest rank cannot shed more
  // than it holds above the target), so the bars bound swaps by their peak.
  double ScoreOf(int cost, double drop) const {
    return cost <= 0 ? cost - 1.0 - drop / (lh_ + 1e-300) * 1e-3 : cost / drop;
  }

  // Load above the target.
  double Excess(double l) const { return std::max(l - target_, 0.0); }

  // Whether an action is taken at all: it drops something, and a free one
  // at least kFreeMinShare of the heaviest rank's excess (the bars of free
  // actions hold that too).
  bool Worth(int cost, double drop) const {
    return drop > eps_ && (cost > 0 || drop >= min_free_drop_);
  }

  void Offer(const Action& a, Action& best) {
    if (a.score < best.score || (a.score == best.score && a.peak < best.peak)) {
      best = a;
      SetBars(best);
    }
  }

  // bars_.of(cost): the peak at and above which a swap of that cost or more
  // cannot beat `best`, solved from ScoreOf with the most a swap of that
  // peak can drop (lh - max(peak, target)) and loosened by a relative 1e-9
  // for rounding, so a bar rejects no swap that Offer would take, but one:
  // a swap that only ties a best of its cost that already meets the target
  // (no drop is larger than lh - target, so the first found stands).
  void SetBars(const Action& best) {
    const double sb = best.score;
    const double slack = 1e-9 * (std::abs(lh_) + std::abs(target_)) + eps_;
    const double top = lh_ - eps_;  // every action must leave both ranks below lh
    // Free actions (cost - 1 - drop * k < sb, k = 1e-3 / lh) beat any costly
    // one, and need the drop Worth asks for.
    const double free_top = std::min(top, lh_ - min_free_drop_ + slack);
    auto capped = [&](double most) {
      return target_ + 2 * slack < most ? std::min(most, top) : -kInf;
    };
    for (int cost = -2; cost <= 0; ++cost) {
      if (sb >= 0) {
        bars_.set(cost, free_top);
      } else {
        const double v = lh_ - (cost - 1 - sb) * (lh_ + 1e-300) * 1e3;
        bars_.set(cost, std::min(capped(v + std::abs(v) * 1e-9 + slack), free_top));
      }
    }
    // Costly: cost / drop < sb needs cost / (lh - max(peak, target)) < sb,
    // that is max(peak, target) < lh - cost / sb.
    for (int cost = 1; cost <= 2; ++cost)
      bars_.set(cost, sb <= 0 ? -kInf : sb == kInf ? top : capped(lh_ - cost / sb + slack));
    // A bar holds for its cost and every higher one (a free action needs a
    // drop a costly one may do without), so the searches may bound a set of
    // swaps by its least cost.
    for (int cost = SwapBars::kMaxCost - 1; cost >= SwapBars::kMinCost; --cost)
      bars_.set(cost, std::max(bars_.of(cost), bars_.of(cost + 1)));
  }

  // Swap partners: the lightest ranks, where the heaviest rank's load can go
  // (kLightPartners; fewer while h is far over the target, kFarPartnersPer),
  // and every rank that held one of h's experts before and lacks it now,
  // where it may go back for free. A partner, and each item of h, is skipped
  // where a lower bound of the peak it could leave fails the bar of its
  // least cost; the items that remain are tested against every item of the
  // partner.
  void ConsiderSwaps(int h, Action& best) {
    const double lh = load_[h];
    const int light = far_ ? std::clamp(P_ / kFarPartnersPer, 4, kLightPartners) : kLightPartners;
    std::vector<int>& partners = partners_;
    partners.assign(by_load_.begin(), by_load_.begin() + std::min(light, P_));
    ++stamp_;
    for (int r : partners) listed_[r] = stamp_;
    for (int i = 0; i < S_; ++i) {
      const int e = item_[h * S_ + i];
      for (int r : Holders(e)) {
        holder_mark_[r] = stamp_;
        if (listed_[r] != stamp_ && has_[Cell(r, e)] == 0)
          listed_[r] = stamp_, partners.push_back(r);
      }
    }
    // Ranks holding an expert h held before and has lost: it returns free.
    for (int k = 0; k < S_; ++k) {
      const int e = prev_item_[h * S_ + k];
      if (has_[Cell(h, e)] == 0)
        for (int r : holding_[e]) lost_mark_[r] = stamp_;
    }
    const int32_t* hi = &item_[h * S_];
    const double* hw = &slot_w_[h * S_];
    const int8_t* h_leave = &slot_leave_[h * S_];
    b_cost_.resize(S_);
    a_cost_.resize(S_);
    for (int r : partners) {
      const double lr = load_[r];
      // h itself, and any rank at or over the target, has no room to give.
      if (lr >= target_ || lh - lr <= eps_) continue;
      // What a swap with r may take off, drop <= min(lh - target, room of
      // r, lh - peak), as a bound on lh - drop for the bars: a swap levels
      // the pair at best, and what r takes above the target is not dropped.
      const double min_peak = std::max((lh + lr) / 2, lh - (target_ - lr));
      // Least costs: an item arrives free only where it was before.
      const int a_least = min_leave_[h] + (holder_mark_[r] == stamp_ ? 0 : 1);
      const int b_least = min_leave_[r] + (lost_mark_[r] == stamp_ ? 0 : 1);
      if (!MayBeat(a_least + b_least, min_peak)) continue;
      const int32_t* ri = &item_[r * S_];
      const int8_t* r_leave = &slot_leave_[r * S_];
      const double* rw = &slot_w_[r * S_];
      const double min_rw = min_w_[r];
      bool costs_of_r = false;
      for (int block = 0; block < S_; block += 32) {
        const int end = std::min(S_, block + 32);
        // Cost of each item of h going to r, and the items of h that may
        // pair with some item of r: h keeps at least lh - (wa - lightest of
        // r). One branch-free pass; the bars only tighten as the search
        // goes, so an item out now stays out.
        int8_t* ac = a_cost_.data();
        uint32_t items = 0;
        for (int i = block; i < end; ++i) {
          const int arrive = arrive_[Cell(r, hi[i])];
          ac[i] = static_cast<int8_t>(arrive == kHeld ? SwapBars::kBarred : h_leave[i] + arrive);
          const double peak_lb = std::max(min_peak, lh - hw[i] + min_rw);
          items |= static_cast<uint32_t>(peak_lb < bars_.of(ac[i] + b_least)) << (i - block);
        }
        if (items == 0) continue;
        // Cost of each item of r going to h; kBarred where it may not (no
        // swap gives a rank a second copy of an expert it holds).
        int8_t* bc = b_cost_.data();
        if (!costs_of_r) {
          costs_of_r = true;
          for (int j = 0; j < S_; ++j) {
            const int arrive = arrive_[Cell(h, ri[j])];
            bc[j] = static_cast<int8_t>(arrive == kHeld ? SwapBars::kBarred : r_leave[j] + arrive);
          }
        }
        while (items != 0) {
          const int i = block + 31 - std::countl_zero(items);
          items &= ~(uint32_t{1} << (i - block));
          const int a_cost = ac[i];
          const double wa = hw[i];
          if (!MayBeat(a_cost + b_least, std::max(min_peak, lh - wa + min_rw))) continue;
          // Every item of r: a handful, and a branch-free test each. A swap
          // must lower the peak of the two ranks (the bars hold that too).
          const double* bar = bars_.Row(a_cost);
          for (int j = 0; j < S_; ++j) {
            const double d = wa - rw[j];
            const double peak = std::max(lh - d, lr + d);
            if (peak < bar[bc[j]]) [[unlikely]] {
              const int cost = a_cost + bc[j];
              const double drop = Excess(lh) + Excess(lr) - Excess(lh - d) - Excess(lr + d);
              if (Worth(cost, drop))
                Offer({Action::kSwap, h, i, r, j, cost, peak, ScoreOf(cost, drop)}, best);
            }
          }
        }
      }
    }
  }

  // Slot j of rank r (a spare replica of x) becomes one more replica of y,
  // the heaviest rank's hottest expert; every holder of x or y changes load,
  // and every holder of y sheds some. Scored by the load above the target it
  // takes off all the ranks it changes (more than a swap can, where y has
  // several holders over the target). Only the hottest expert: conversions
  // to h's next experts were as good in bytes sent, and cost a search each.
  void ConsiderReplicas(int h, Action& best) {
    const double lh = load_[h];
    int hot = 0;
    for (int k = 1; k < S_; ++k) hot = slot_w_[h * S_ + k] >= slot_w_[h * S_ + hot] ? k : hot;
    const int y = item_[h * S_ + hot];
    if (W_[y] <= eps_) return;
    // Candidate ranks: the two lightest, and those that held y before.
    std::vector<int>& ranks = ranks_;
    ranks.assign(by_load_.begin(), by_load_.begin() + std::min(kLightConversionTargets, P_));
    for (int r : Holders(y))
      if (std::find(ranks.begin(), ranks.end(), r) == ranks.end()) ranks.push_back(r);
    const double dy = W_[y] / (count_[y] + 1) - Weight(y);
    // drop_y: what y's holders shed (each once), the most any conversion to
    // y takes off (x's holders only gain; r, if over the target, aside).
    // peak_y: the highest new load of y's holders. A holder of x too ends
    // higher still (x's load per replica rises), so the conversion's peak
    // is the highest of peak_y and its x side.
    double drop_y = 0, peak_y = -kInf;
    const int y_stamp = ++stamp_;
    for (int q : holding_[y])
      if (listed_[q] != y_stamp) {
        listed_[q] = y_stamp;
        const double l = load_[q] + has_[Cell(q, y)] * dy;
        drop_y += Excess(load_[q]) - Excess(l);
        peak_y = std::max(peak_y, l);
      }
    // The heaviest ranks that hold no y, heaviest first: the first of them
    // a conversion leaves as it is sets its peak with the ones it changes.
    int unchanged[4], n_unchanged = 0, walked = P_;
    while (walked > 0 && n_unchanged < 4) {
      const int q = by_load_[--walked];
      if (has_[Cell(q, y)] == 0) unchanged[n_unchanged++] = q;
    }
    for (int r : ranks) {
      const int j = spare_slot_[r];
      if (j < 0 || arrive_[Cell(r, y)] == kHeld) continue;  // r holds no y, so x != y
      const int x = item_[r * S_ + j];
      const int cost = slot_leave_[r * S_ + j] + arrive_[Cell(r, y)];
      if (!(ScoreOf(cost, (drop_y + Excess(load_[r])) * (1 + 1e-9)) < best.score)) continue;
      const double wx_new = spare_w_[r];
      const double dx = wx_new - Weight(x);
      auto new_load = [&](int q) {
        double l = load_[q] + has_[Cell(q, y)] * dy + has_[Cell(q, x)] * dx;
        if (q == r) l += W_[y] / (count_[y] + 1) - wx_new;
        return l;
      };
      // The drop of the load above the target over the ranks the conversion
      // changes; the peak: the highest of their new loads and of the
      // heaviest rank it leaves as it is.
      double drop = drop_y, peak = -kInf;
      const int x_stamp = ++stamp_;
      auto visit = [&](int q) {  // x's side: from y's side to the end
        if (listed_[q] == x_stamp) return;
        listed_[q] = x_stamp;
        const double l = new_load(q);
        drop += Excess(load_[q] + has_[Cell(q, y)] * dy) - Excess(l);
        peak = std::max(peak, l);
      };
      for (int q : holding_[x]) visit(q);
      visit(r);
      peak = std::max(peak, peak_y);
      int left = -1;  // the heaviest rank holding no y that is not x's side
      for (int k = 0; k < n_unchanged && left < 0; ++k)
        if (listed_[unchanged[k]] != x_stamp) left = unchanged[k];
      for (int k = walked - 1; k >= 0 && left < 0; --k) {
        const int q = by_load_[k];
        if (listed_[q] != x_stamp && has_[Cell(q, y)] == 0) left = q;
      }
      if (left >= 0) peak = std::max(peak, load_[left]);
      if (peak >= lh - eps_ || !Worth(cost, drop)) continue;
      Offer({Action::kReplicate, h, y, r, j, cost, peak, ScoreOf(cost, drop)}, best);
    }
  }

  void Set(int r, int k, int e) {
    const int old = item_[r * S_ + k];
    transfers_ -= (has_[Cell(r, old)] == 1 && !prev_has_[Cell(r, old)]);
    if (--has_[Cell(r, old)] == 0) arrive_[Cell(r, old)] = !prev_has_[Cell(r, old)];
    --count_[old];
    std::vector<int>& from = holding_[old];
    from.erase(std::find(from.begin(), from.end(), r));
    holding_[e].push_back(r);
    transfers_ += (has_[Cell(r, e)] == 0 && !prev_has_[Cell(r, e)]);
    ++has_[Cell(r, e)];
    arrive_[Cell(r, e)] = kHeld;
    ++count_[e];
    item_[r * S_ + k] = e;
  }

  void Apply(const Action& a) {
    if (a.kind == Action::kSwap) {
      // Replica counts stay: only the two ranks' slots and loads change.
      const int x = item_[a.h * S_ + a.i], y = item_[a.r * S_ + a.j];
      Set(a.h, a.i, y);
      Set(a.r, a.j, x);
      std::swap(slot_w_[a.h * S_ + a.i], slot_w_[a.r * S_ + a.j]);
      for (int r : {a.h, a.r}) {
        UpdateLeave(r);
        UpdateSpare(r);
        RecomputeLoad(r);
        Reposition(r);
      }
    } else {
      // One replica fewer of x, one more of y: the ranks holding either
      // change, each put back in order as soon as its load is new.
      const int x = item_[a.r * S_ + a.j], y = a.i;
      Set(a.r, a.j, y);
      UpdateLeave(a.r);
      for (int e : {x, y}) fewer_w_[e] = FewerWeight(e);
      const double wx = Weight(x), wy = Weight(y);
      ++stamp_;
      auto update = [&](int q) {
        if (listed_[q] == stamp_) return;
        listed_[q] = stamp_;
        for (int k = 0; k < S_; ++k) {
          const int e = item_[q * S_ + k];
          if (e == x) slot_w_[q * S_ + k] = wx;
          if (e == y) slot_w_[q * S_ + k] = wy;
        }
        UpdateSpare(q);
        RecomputeLoad(q);
        Reposition(q);
      };
      for (int q : holding_[x]) update(q);
      for (int q : holding_[y]) update(q);
    }
  }

  std::span<const double> W_;
  int E_ = 0, P_ = 0, S_ = 0;
  std::vector<int32_t> item_, prev_item_;
  std::vector<int> count_;
  std::vector<double> load_;
  std::vector<double> slot_w_;    // weight of each slot's replica
  std::vector<double> min_w_;     // each rank's lightest slot weight
  std::vector<int> by_load_;      // ranks by load ascending (index on ties)
  std::vector<int> load_pos_;     // each rank's index in by_load_
  std::vector<uint8_t> prev_has_;
  std::vector<uint16_t> has_;
  // Wire cost of rank r gaining a copy of e (1: r never held it), or kHeld
  // where r holds e (no rank takes a second copy).
  static constexpr int8_t kHeld = 2;
  std::vector<int8_t> arrive_;
  std::vector<int8_t> slot_leave_;  // Leave(r, e) of each slot's expert
  std::vector<int8_t> min_leave_;   // least of each rank's slot_leave_
  std::vector<int> spare_slot_;     // UpdateSpare: slot, or -1
  std::vector<double> spare_w_;     // its expert's load per replica with one fewer
  std::vector<double> fewer_w_;     // FewerWeight of each expert
  std::vector<double> per_w_;       // scratch of RecomputeLoads: each expert's load per replica
  std::vector<int> holder_first_, holders_;  // previous holders of each expert
  int transfers_ = 0;
  double eps_ = 0;
  // The step under way: the heaviest rank's load, the target, and the bars
  // of the best action so far (SetBars).
  // far_: lh is more than kFar over the target.
  double lh_ = 0, target_ = 0, min_free_drop_ = 0;
  bool far_ = false;
  SwapBars bars_;
  // Scratch of one step.
  std::vector<int> partners_, ranks_, scratch_;
  std::vector<int8_t> b_cost_, a_cost_;
  std::vector<int> listed_;       // == stamp_: listed as a partner this step
  std::vector<int> holder_mark_;  // == stamp_: held one of h's experts before
  std::vector<int> lost_mark_;    // == stamp_: holds an expert h held before and lost
  std::vector<std::vector<int>> holding_;  // ranks holding each expert, once a copy
  int stamp_ = 0;
};

RepairSearch::RepairSearch() : impl_(std::make_unique<Impl>()) {}
RepairSearch::~RepairSearch() = default;
RepairSearch::RepairSearch(RepairSearch&&) noexcept = default;
RepairSearch& RepairSearch::operator=(RepairSearch&&) noexcept = default;
void RepairSearch::Reset(std::span<const double> load, std::span<const int32_t> previous, int num_ranks) {
  impl_->Reset(load, previous, num_ranks);
}
bool RepairSearch::Run(double target, int max_actions) { return impl_->Run(target, max_actions); }
int RepairSearch::transfers() const { return impl_->transfers(); }
double RepairSearch::max_load() const { return impl_->max_load(); }
const std::vector<int32_t>& RepairSearch::items() const { return impl_->items(); }

}  // namespace eplb::movement_detail
