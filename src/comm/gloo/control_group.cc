// The gloo control group: small collectives as all-to-all exchanges over a
// Gloo mesh of its own (every rank sends its part to every peer), reduced
// locally in rank order so every rank computes the same bits.
#include <cstring>

#include "comm/gloo/mesh.h"
#include "eplb/error.h"
#include "eplb/gloo.h"

namespace eplb {
namespace {

using gloo_backend::Mesh;
using gloo_backend::Ops;
using gloo_backend::Slot;

enum OpCode : uint32_t { kBarrier = 11, kSumDouble = 12, kSumInt64 = 13, kAllGather = 14 };

class GlooControlGroup final : public ControlGroup {
 public:
  GlooControlGroup(const GlooOptions& options, Deadline deadline) : mesh_(options, deadline) {}

  std::string_view name() const override { return "gloo"; }
  int rank() const override { return mesh_.rank(); }
  int size() const override { return mesh_.size(); }

  void Barrier(Deadline deadline) override {
    // The sync tokens every step swaps with every peer are the barrier.
    mesh_.Step("barrier", kBarrier, 0, deadline, [](Ops&, uint64_t) {});
  }

  void AllReduceSum(std::span<double> values, Deadline deadline) override {
    Sum(values, kSumDouble, "all_reduce", deadline);
  }
  void AllReduceSum(std::span<int64_t> values, Deadline deadline) override {
    Sum(values, kSumInt64, "all_reduce", deadline);
  }

  std::vector<std::vector<uint8_t>> AllGather(std::span<const uint8_t> blob, Deadline deadline) override {
    const int n = size(), me = rank();
    std::vector<std::vector<uint8_t>> out(n);
    out[me].assign(blob.begin(), blob.end());
    std::vector<uint64_t> sizes(n, 0);
    sizes[me] = blob.size();
    mesh_.Step("all_gather", kAllGather, 0, deadline, [&](Ops& ops, uint64_t seq) {
      for (int p = 0; p < n; ++p) {
        if (p == me) continue;
        ops.Recv(p, Slot(seq, 0), &sizes[p], sizeof(uint64_t), "blob size", -1);
        ops.Send(p, Slot(seq, 0), &sizes[me], sizeof(uint64_t), "blob size", -1);
      }
      ops.Wait(deadline);
      for (int p = 0; p < n; ++p) {
        if (p == me) continue;
        out[p].resize(sizes[p]);
        if (sizes[p] > 0) ops.Recv(p, Slot(seq, 1), out[p].data(), sizes[p], "blob", p);
        if (!blob.empty()) ops.Send(p, Slot(seq, 1), out[me].data(), blob.size(), "blob", me);
      }
    });
    return out;
  }

 private:
  template <typename T>
  void Sum(std::span<T> values, uint32_t op_code, const char* operation, Deadline deadline) {
    const int n = size(), me = rank();
    const size_t bytes = values.size_bytes();
    std::vector<std::vector<T>> all(n);
    all[me].assign(values.begin(), values.end());
    mesh_.Step(operation, op_code, values.size(), deadline, [&](Ops& ops, uint64_t seq) {
      if (bytes == 0) return;
      for (int p = 0; p < n; ++p) {
        if (p == me) continue;
        all[p].resize(values.size());
        ops.Recv(p, Slot(seq, 0), all[p].data(), bytes, "values", -1);
        ops.Send(p, Slot(seq, 0), all[me].data(), bytes, "values", -1);
      }
    });
    for (size_t i = 0; i < values.size(); ++i) {
      T sum = all[0][i];
      for (int r = 1; r < n; ++r) sum += all[r][i];
      values[i] = sum;
    }
  }

  Mesh mesh_;
};

}  // namespace

std::unique_ptr<ControlGroup> ConnectGlooControlGroup(const GlooOptions& options, Deadline deadline) {
  return std::make_unique<GlooControlGroup>(options, deadline);
}

}  // namespace eplb
