#include "demo/synthetic_load.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "eplb/error.h"

namespace eplb {
namespace {

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from a hash.
double Unit(uint64_t h) { return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0); }

}  // namespace

SyntheticLoad::SyntheticLoad(const SyntheticLoadOptions& o) : options_(o) {
  auto fail = [](const std::string& m) { throw InvalidArgument("synthetic load: " + m); };
  if (o.num_layers <= 0 || o.num_experts <= 0) fail("layers and experts must be positive");
  if (!(o.skew >= 0) || !(o.noise >= 0) || o.noise >= 1 || !(o.tokens_per_step >= 0))
    fail("skew and tokens must be >= 0 and noise in [0, 1)");
  const int L = o.num_layers, E = o.num_experts;
  base_.assign(static_cast<size_t>(L) * E, 0.0);
  for (int l = 0; l < L; ++l) {
    double* row = base_.data() + static_cast<size_t>(l) * E;
    if (o.base != nullptr) {
      if (o.base->num_experts != E || o.base->num_layers <= 0)
        fail("the base load has " + std::to_string(o.base->num_experts) + " experts per layer, not " +
             std::to_string(E));
      auto src = o.base->layer(l % o.base->num_layers);
      std::copy(src.begin(), src.end(), row);
    } else {
      // Zipf over a seeded permutation of the experts.
      std::vector<int> perm(E);
      std::iota(perm.begin(), perm.end(), 0);
      for (int i = E - 1; i > 0; --i) {
        const uint64_t h = Mix(o.seed ^ (uint64_t(l) << 32) ^ uint64_t(i));
        std::swap(perm[i], perm[h % (i + 1)]);
      }
      for (int r = 0; r < E; ++r) row[perm[r]] = 1.0 / std::pow(r + 1.0, o.skew);
    }
    double total = 0;
    for (int e = 0; e < E; ++e) {
      if (!(row[e] >= 0) || !std::isfinite(row[e])) fail("the base load has a negative or non-finite value");
      total += row[e];
    }
    if (total <= 0) fail("layer " + std::to_string(l) + " of the base load is all zero");
    for (int e = 0; e < E; ++e) row[e] /= total;
  }
}

void SyntheticLoad::Shares(int64_t step, int layer, std::span<double> out) const {
  const int E = options_.num_experts;
  const double* row = base_.data() + static_cast<size_t>(layer) * E;
  double shift = static_cast<double>(layer) * 7.0;  // layers drift out of phase
  if (options_.drift_period_steps > 0) shift += static_cast<double>(step) / options_.drift_period_steps;
  const double whole = std::floor(shift);
  const double frac = shift - whole;
  const int64_t k = static_cast<int64_t>(whole) % E;
  for (int e = 0; e < E; ++e) {
    const double a = row[(e + k) % E], b = row[(e + k + 1) % E];
    out[e] = (1.0 - frac) * a + frac * b;
  }
}

void SyntheticLoad::Counts(int64_t step, int rank, int layer, std::span<int64_t> out) const {
  const int E = options_.num_experts;
  thread_local std::vector<double> share;
  share.resize(E);
  Shares(step, layer, share);
  const uint64_t seed = Mix(options_.seed ^ Mix(uint64_t(step) * 0x100000001b3ull ^
                                               (uint64_t(rank) << 40) ^ (uint64_t(layer) << 20)));
  for (int e = 0; e < E; ++e) {
    const double u = Unit(Mix(seed + uint64_t(e)));
    const double jitter = 1.0 + options_.noise * (2.0 * u - 1.0);
    const double v = options_.tokens_per_step * share[e] * jitter;
    // Round with a second draw so small expectations still average right.
    const double f = std::floor(v);
    out[e] = static_cast<int64_t>(f) + (Unit(Mix(seed ^ ~uint64_t(e))) < v - f ? 1 : 0);
  }
}

LoadMatrix SyntheticLoad::Expected(int64_t step) const {
  LoadMatrix m(options_.num_layers, options_.num_experts);
  std::vector<double> share(options_.num_experts);
  for (int l = 0; l < options_.num_layers; ++l) {
    Shares(step, l, share);
    for (int e = 0; e < options_.num_experts; ++e) m.at(l, e) = share[e] * options_.tokens_per_step;
  }
  return m;
}

}  // namespace eplb
