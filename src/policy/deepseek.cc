// The DeepSeek EPLB policy (deepseek-ai/EPLB `rebalance_experts`), the
// default of vLLM and SGLang, reproduced bit for bit:
//
//   hierarchical (num_groups % num_nodes == 0):
//     1. pack expert groups onto nodes (balanced packing of group loads);
//     2. inside each node, give each redundant slot to the expert with the
//        highest load per replica (first maximum on ties);
//     3. pack the node's replicas onto its ranks (balanced packing).
//   global: the same with one group and one node.
//
// Balanced packing: items by load descending (lower index first on ties), each
// to the lightest pack that has room (lowest pack index on ties); a pack's
// load accumulates in float32 in placement order. With one item per pack, item
// i goes to pack i. All arithmetic is float32, as in the reference.
//
// Speed: one workspace per call and no allocation per layer. Every choice
// ("heaviest expert per replica", "next replica to place", "lightest rank with
// room") is the minimum of a tournament tree over 64-bit keys that order like
// (float32 load, index); updating a leaf recomputes its path with compares
// and conditional moves only. Real loads make comparison sorts and heaps
// mispredict about every other branch; these trees have no data-dependent
// branch, so a layer costs O((E + R) log R) at a steady pace. Step 3 does
// not sort at all: it drains the tree step 2 leaves behind (ReplicaOrder).
#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

#include "eplb/policy.h"
#include "policy/policies.h"

namespace eplb {
namespace {

// A tournament tree over uint64 keys: node[1] holds the smallest.
struct MinTree {
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  uint64_t* node = nullptr;  // [2 * leaves]; leaves at [leaves, 2 * leaves)
  int leaves = 0;

  static int LeavesFor(int n) {
    return static_cast<int>(std::bit_ceil(static_cast<unsigned>(std::max(n, 1))));
  }
  // Takes keys[0, n) (the other leaves empty) and builds the tree in O(n).
  void Build(uint64_t* buffer, const uint64_t* keys, int n) {
    node = buffer;
    leaves = LeavesFor(n);
    std::copy(keys, keys + n, node + leaves);
    std::fill(node + leaves + n, node + 2 * leaves, kEmpty);
    for (int i = leaves - 1; i >= 1; --i) node[i] = std::min(node[2 * i], node[2 * i + 1]);
  }
  uint64_t Min() const { return node[1]; }
  void Set(int i, uint64_t key) {
    int j = leaves + i;
    node[j] = key;
    while (j > 1) {
      key = std::min(key, node[j ^ 1]);
      j >>= 1;
      node[j] = key;
    }
  }
};

// The bits of a non-negative float order like its value. Loads enter as
// non-negative floats with -0 turned into +0 (ToFloat), and every value
// derived from them (sums, quotients by counts) stays that way.
inline uint32_t Bits(float v) { return std::bit_cast<uint32_t>(v); }
inline float ToFloat(double load) { return static_cast<float>(load) + 0.0f; }

// Smallest key = lightest load, lowest index among equals.
inline uint64_t LightestFirst(float load, int index) {
  return (static_cast<uint64_t>(Bits(load)) << 32) | static_cast<uint32_t>(index);
}
// Smallest key = heaviest load, lowest index among equals.
inline uint64_t HeaviestFirst(float load, int index) {
  return (static_cast<uint64_t>(~Bits(load)) << 32) | static_cast<uint32_t>(index);
}
inline int IndexOf(uint64_t key) { return static_cast<int>(key & 0xffffffffu); }
inline float LoadOf(uint64_t lightest_first_key) {
  return std::bit_cast<float>(static_cast<uint32_t>(lightest_first_key >> 32));
}

struct Shape {
  int experts, slots, groups, nodes, ranks;
  int group_size() const { return experts / groups; }
  int groups_per_node() const { return groups / nodes; }
  int experts_per_node() const { return experts / nodes; }
  int slots_per_node() const { return slots / nodes; }
  int ranks_per_node() const { return ranks / nodes; }
  int slots_per_rank() const { return slots / ranks; }
};

// Buffers for one call, sized once for the largest use.
struct Workspace {
  explicit Workspace(const Shape& s) {
    const int E = s.experts, epn = s.experts_per_node(), spn = s.slots_per_node();
    const int items = std::max(s.groups, spn), packs = std::max(s.nodes, s.ranks_per_node());
    load.resize(E);
    group_load.resize(s.groups);
    group_pack.resize(s.groups);
    group_rank.resize(s.groups);
    mlog2log.resize(E);
    mlog_load.resize(E);
    count.resize(epn);
    phy2mlog.resize(spn);
    replica_load.resize(spn);
    replica_pack.resize(spn);
    replica_rank.resize(spn);
    visit.resize(items);
    extra_head.resize(epn);
    extra_next.resize(spn);
    pending.resize(spn);
    keys.resize(std::max({items, packs, epn}));
    item_tree.resize(2 * MinTree::LeavesFor(s.groups));
    pack_tree.resize(2 * MinTree::LeavesFor(packs));
    expert_tree.resize(2 * MinTree::LeavesFor(epn));
    filled.resize(packs);
  }
  std::vector<float> load;                          // [E] this layer in float32
  std::vector<float> group_load;                    // [G]
  std::vector<int32_t> group_pack, group_rank;      // [G]
  std::vector<int32_t> mlog2log;                    // [E] node-major label -> expert
  std::vector<float> mlog_load;                     // [E] load by node-major label
  std::vector<int32_t> count;                       // [E / N] replicas per node-local expert
  std::vector<int32_t> phy2mlog;                    // [R / N] replica -> node-local expert
  std::vector<float> replica_load;                  // [R / N]
  std::vector<int32_t> replica_pack, replica_rank;  // [R / N]
  std::vector<int32_t> visit;                       // items in packing order
  std::vector<int32_t> extra_head, extra_next, pending;  // ReplicaOrder
  std::vector<uint64_t> keys;
  std::vector<uint64_t> item_tree, pack_tree, expert_tree;
  std::vector<int32_t> filled;  // items per pack
};

// Places n items, visited in the order `visit`, into num_packs packs of
// n / num_packs items: each to the lightest pack with room, the lowest pack
// index among equals. pack[i], rank[i]: item i's pack and its position there.
void PackInOrder(const float* load, const int32_t* visit, int n, int num_packs, int32_t* pack,
                 int32_t* rank, Workspace& ws) {
  const int capacity = n / num_packs;
  uint64_t* keys = ws.keys.data();
  int32_t* filled = ws.filled.data();
  for (int p = 0; p < num_packs; ++p) {
    filled[p] = 0;
    keys[p] = LightestFirst(0.0f, p);
  }
  // Packs with room, lightest first; a pack's key carries its float32 load.
  MinTree packs;
  packs.Build(ws.pack_tree.data(), keys, num_packs);
  for (int k = 0; k < n; ++k) {
    const int item = visit[k];
    const uint64_t lightest = packs.Min();
    const int p = IndexOf(lightest);
    pack[item] = p;
    rank[item] = filled[p]++;
    const float sum = LoadOf(lightest) + load[item];  // float32, in placement order
    packs.Set(p, filled[p] == capacity ? MinTree::kEmpty : LightestFirst(sum, p));
  }
}

// Balanced packing of step 1 (groups onto nodes): n items into num_packs
// packs of n / num_packs, visited heaviest first, lowest index among equals.
void BalancedPacking(const float* load, int n, int num_packs, int32_t* pack, int32_t* rank,
                     Workspace& ws) {
  if (n == num_packs) {  // the reference's special case: item i to pack i
    for (int i = 0; i < n; ++i) {
      pack[i] = i;
      rank[i] = 0;
    }
    return;
  }
  uint64_t* keys = ws.keys.data();
  for (int i = 0; i < n; ++i) keys[i] = HeaviestFirst(load[i], i);
  MinTree items;
  items.Build(ws.item_tree.data(), keys, n);
  int32_t* visit = ws.visit.data();
  for (int k = 0; k < n; ++k) {
    visit[k] = IndexOf(items.Min());
    items.Set(visit[k], MinTree::kEmpty);
  }
  PackInOrder(load, visit, n, num_packs, pack, rank, ws);
}

// Replicates n experts (loads `load`) into `slots` replicas: the first n
// replicas are the experts themselves; each further one goes to the expert
// with the highest load per replica (float32 load / count), the first such
// expert on ties. Leaves `experts` keyed by each expert's final load per
// replica, which is what step 3 orders replicas by.
void ReplicateExperts(const float* load, int n, int slots, int32_t* phy2mlog, int32_t* count,
                      MinTree& experts, Workspace& ws) {
  uint64_t* keys = ws.keys.data();
  for (int m = 0; m < n; ++m) {
    phy2mlog[m] = m;
    count[m] = 1;
    keys[m] = HeaviestFirst(load[m], m);
  }
  experts.Build(ws.expert_tree.data(), keys, n);
  for (int s = n; s < slots; ++s) {
    const int m = IndexOf(experts.Min());
    phy2mlog[s] = m;
    ++count[m];
    experts.Set(m, HeaviestFirst(load[m] / static_cast<float>(count[m]), m));
  }
}

// Step 3's visiting order of a node's replicas: load per replica descending,
// replica index ascending among equals. Replica m < n is expert m's first, so
// draining `experts` yields the first replicas in order; an expert's further
// replicas (indices >= n) carry the same load and follow every first replica
// of that load, in index order.
void ReplicaOrder(MinTree& experts, int n, int slots, const int32_t* phy2mlog,
                  const int32_t* count, Workspace& ws) {
  int32_t* visit = ws.visit.data();
  int32_t* extra_head = ws.extra_head.data();  // expert -> its first further replica
  int32_t* extra_next = ws.extra_next.data();  // replica -> the expert's next one
  for (int m = 0; m < n; ++m) extra_head[m] = -1;
  for (int r = slots - 1; r >= n; --r) {
    extra_next[r] = extra_head[phy2mlog[r]];
    extra_head[phy2mlog[r]] = r;
  }
  int32_t* pending = ws.pending.data();  // further replicas of the current load
  int num_pending = 0, k = 0;
  uint64_t pending_load = 0;
  auto flush = [&] {
    // Usually one expert's list, already ascending; several only on exact ties.
    std::sort(pending, pending + num_pending);
    for (int i = 0; i < num_pending; ++i) visit[k++] = pending[i];
    num_pending = 0;
  };
  for (int i = 0; i < n; ++i) {
    const uint64_t key = experts.Min();
    const int m = IndexOf(key);
    experts.Set(m, MinTree::kEmpty);
    if (num_pending > 0 && (key >> 32) != pending_load) flush();
    visit[k++] = m;
    if (count[m] > 1) {
      pending_load = key >> 32;
      for (int r = extra_head[m]; r >= 0; r = extra_next[r]) pending[num_pending++] = r;
    }
  }
  flush();
}

// One layer: loads in, phy2log [R] out.
void RebalanceLayer(const Shape& s, std::span<const double> layer_load, int32_t* phy2log,
                    Workspace& ws) {
  const int E = s.experts, G = s.groups, N = s.nodes;
  const int group_size = s.group_size(), groups_per_node = s.groups_per_node();
  const int epn = s.experts_per_node(), spn = s.slots_per_node();
  const int slots_per_rank = s.slots_per_rank();
  float* load = ws.load.data();
  for (int e = 0; e < E; ++e) load[e] = ToFloat(layer_load[e]);

  // Step 1: groups onto nodes. A group's load is a float32 sum in index order
  // (groups summed side by side; each group's additions stay in order).
  float* group_load = ws.group_load.data();
  std::fill(group_load, group_load + G, 0.0f);
  for (int j = 0; j < group_size; ++j)
    for (int g = 0; g < G; ++g) group_load[g] += load[g * group_size + j];
  BalancedPacking(group_load, G, N, ws.group_pack.data(), ws.group_rank.data(), ws);
  // Node-major labels ("mlog"): node n holds labels [n * E/N, (n + 1) * E/N),
  // its groups in the order they were packed, each group's experts in order.
  int32_t* mlog2log = ws.mlog2log.data();
  float* mlog_load = ws.mlog_load.data();
  for (int g = 0; g < G; ++g) {
    const int base = (ws.group_pack[g] * groups_per_node + ws.group_rank[g]) * group_size;
    for (int j = 0; j < group_size; ++j) {
      mlog2log[base + j] = g * group_size + j;
      mlog_load[base + j] = load[g * group_size + j];
    }
  }

  for (int n = 0; n < N; ++n) {
    const int first = n * epn;
    const float* node_load = mlog_load + first;  // by node-local expert index
    // Step 2: replicas inside the node.
    int32_t* count = ws.count.data();
    int32_t* phy2mlog = ws.phy2mlog.data();
    MinTree experts;
    ReplicateExperts(node_load, epn, spn, phy2mlog, count, experts, ws);
    // Step 3: the node's replicas onto its ranks.
    float* replica_load = ws.replica_load.data();
    for (int i = 0; i < spn; ++i) {
      const int m = phy2mlog[i];
      replica_load[i] = node_load[m] / static_cast<float>(count[m]);
    }
    int32_t* pack = ws.replica_pack.data();
    int32_t* rank = ws.replica_rank.data();
    if (slots_per_rank == 1) {  // the reference's special case: replica i on rank i
      for (int i = 0; i < spn; ++i) {
        pack[i] = i;
        rank[i] = 0;
      }
    } else {
      ReplicaOrder(experts, epn, spn, phy2mlog, count, ws);
      PackInOrder(replica_load, ws.visit.data(), spn, s.ranks_per_node(), pack, rank, ws);
    }
    int32_t* node_phy2log = phy2log + n * spn;
    for (int i = 0; i < spn; ++i) {
      const int slot = ws.replica_pack[i] * slots_per_rank + ws.replica_rank[i];
      node_phy2log[slot] = mlog2log[first + phy2mlog[i]];
    }
  }
}

class DeepSeekPolicy final : public Policy {
 public:
  std::string_view name() const override { return "deepseek"; }
  std::string_view description() const override {
    return "DeepSeek EPLB, exact: groups packed onto nodes, hot experts replicated inside each "
           "node, replicas packed onto ranks (global when groups % nodes != 0)";
  }

  Placement Rebalance(const PolicyInput& in) const override {
    const LoadMatrix& load = *in.load;
    Shape s{load.num_experts, in.num_replicas, in.num_groups, in.num_nodes, in.num_ranks};
    if (s.groups % s.nodes != 0) s.groups = s.nodes = 1;  // global policy
    Workspace ws(s);

    Placement p;
    p.num_layers = load.num_layers;
    p.num_experts = load.num_experts;
    p.num_slots = in.num_replicas;
    p.num_ranks = in.num_ranks;
    p.phy2log.resize(static_cast<size_t>(p.num_layers) * p.num_slots);
    for (int l = 0; l < load.num_layers; ++l)
      RebalanceLayer(s, load.layer(l), p.layer_phy2log(l).data(), ws);
    p.Derive();
    return p;
  }
};

}  // namespace

std::unique_ptr<Policy> MakeDeepSeekPolicy() { return std::make_unique<DeepSeekPolicy>(); }

}  // namespace eplb
