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
// How it is fast (same answer, less work; no allocation per layer):
// - One stable radix sort per layer orders every node's experts by load
//   (descending, lower node-local index first): no comparison sort, so no
//   mispredicted branches.
// - Step 2 consumes that order from the front: an expert that has not been
//   replicated yet can only be chosen after every heavier one, so the choice
//   is "head of the sorted list or the best already-replicated expert", the
//   latter kept in a small tournament tree.
// - Step 3's visiting order is a merge of the unreplicated experts (already in
//   order) with the few replicated experts' items (sorted on their own).
// - "Lightest pack with room" is the minimum of a branch-free tournament tree
//   over 64-bit keys (float32 bits, then pack index).
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <vector>

#include "eplb/policy.h"
#include "policy/policies.h"

namespace eplb {
namespace {

// A tournament tree over uint64 keys: node[1] holds the smallest. Each level
// is a compare and a conditional move, so its cost does not depend on the data.
struct MinTree {
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  uint64_t* node = nullptr;  // [2 * leaves]; leaves at [leaves, 2 * leaves)
  int leaves = 0;

  static int LeavesFor(int n) {
    return static_cast<int>(std::bit_ceil(static_cast<unsigned>(std::max(n, 1))));
  }
  // Takes keys[0, n) (the rest empty) and builds the tree in O(n).
  void Build(uint64_t* buffer, const uint64_t* keys, int n) {
    node = buffer;
    leaves = LeavesFor(n);
    std::copy(keys, keys + n, node + leaves);
    std::fill(node + leaves + n, node + 2 * leaves, kEmpty);
    for (int i = leaves - 1; i >= 1; --i) node[i] = std::min(node[2 * i], node[2 * i + 1]);
  }
  // A tree of n empty leaves.
  void Clear(uint64_t* buffer, int n) {
    node = buffer;
    leaves = LeavesFor(n);
    std::fill(node, node + 2 * leaves, kEmpty);
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

// Bits of a non-negative float order like its value (+0.0f turns -0 into +0;
// loads are validated non-negative).
inline uint32_t Bits(float v) { return std::bit_cast<uint32_t>(v + 0.0f); }

// Smallest key = lightest load, lowest index among equals.
inline uint64_t LightestFirst(float load, int index) {
  return (static_cast<uint64_t>(Bits(load)) << 32) | static_cast<uint32_t>(index);
}
// Smallest key = heaviest load, lowest index among equals.
inline uint64_t HeaviestFirst(float load, int index) {
  return (static_cast<uint64_t>(~Bits(load)) << 32) | static_cast<uint32_t>(index);
}
inline int IndexOf(uint64_t key) { return static_cast<int>(key & 0xffffffffu); }

struct Shape {
  int experts, slots, groups, nodes, ranks;
  int group_size() const { return experts / groups; }
  int groups_per_node() const { return groups / nodes; }
  int experts_per_node() const { return experts / nodes; }
  int slots_per_node() const { return slots / nodes; }
  int ranks_per_node() const { return ranks / nodes; }
  int slots_per_rank() const { return slots / ranks; }
};

// Buffers for one call, sized once.
struct Workspace {
  explicit Workspace(const Shape& s) {
    const int E = s.experts, epn = s.experts_per_node(), spn = s.slots_per_node();
    const int packs = std::max(s.nodes, s.ranks_per_node());
    load.resize(E);
    group_load.resize(s.groups);
    group_pack.resize(s.groups);
    group_rank.resize(s.groups);
    log2mlog.resize(E);
    mlog2log.resize(E);
    mlog_load.resize(E);
    sort_key.resize(E);
    order.resize(E);
    order_tmp.resize(E);
    node_of_mlog.resize(E);
    for (int m = 0; m < E; ++m) node_of_mlog[m] = m / epn;
    count.resize(epn);
    phy2mlog.resize(spn);
    replica_load.resize(spn);
    visit.resize(spn);
    visit_pack.resize(spn);
    visit_rank.resize(spn);
    replicated_items.resize(spn);
    keys.resize(std::max({s.groups, packs}));
    item_tree.resize(2 * MinTree::LeavesFor(s.groups));
    expert_tree.resize(2 * MinTree::LeavesFor(epn));
    pack_tree.resize(2 * MinTree::LeavesFor(packs));
    pack_load.resize(packs);
    filled.resize(packs);
  }
  std::vector<float> load;                      // [E] this layer in float32
  std::vector<float> group_load;                // [G]
  std::vector<int32_t> group_pack, group_rank;  // [G]
  std::vector<int32_t> log2mlog, mlog2log;      // [E] node-major relabelling ("mlog")
  std::vector<float> mlog_load;                 // [E] load of each mlog
  std::vector<uint32_t> sort_key;               // [E] radix key of each mlog
  std::vector<int32_t> order, order_tmp;        // [E] mlogs by node, then load descending
  std::vector<int32_t> count;                   // [E / N] replicas of each expert of a node
  std::vector<int32_t> phy2mlog;                // [R / N] node-local replica -> node-local expert
  std::vector<float> replica_load;              // [R / N]
  std::vector<int32_t> visit;                   // [R / N] step 3 visiting order
  std::vector<int32_t> visit_pack, visit_rank;  // [R / N] rank and position of each replica
  std::vector<uint64_t> replicated_items;       // [R / N] keys of replicated experts' items
  std::vector<uint64_t> keys;
  std::vector<uint64_t> item_tree, expert_tree, pack_tree;
  std::vector<float> pack_load;
  std::vector<int32_t> filled;
  std::vector<int32_t> node_of_mlog;            // [E] mlog / (E / N)
  uint32_t histogram[256];
};

// Places items in the order `visit` into num_packs packs of n / num_packs
// items: each to the lightest pack with room, the lowest index among equals.
// pack/rank: the item's pack and its position there (placement order).
void PackInOrder(const float* load, const int32_t* visit, int n, int num_packs, int32_t* pack,
                 int32_t* rank, Workspace& ws) {
  const int capacity = n / num_packs;
  float* pack_load = ws.pack_load.data();
  int32_t* filled = ws.filled.data();
  uint64_t* keys = ws.keys.data();
  for (int p = 0; p < num_packs; ++p) {
    pack_load[p] = 0.0f;
    filled[p] = 0;
    keys[p] = LightestFirst(0.0f, p);
  }
  MinTree packs;
  packs.Build(ws.pack_tree.data(), keys, num_packs);
  for (int k = 0; k < n; ++k) {
    const int item = visit[k];
    const int p = IndexOf(packs.Min());
    pack[item] = p;
    rank[item] = filled[p]++;
    pack_load[p] += load[item];  // float32 accumulation, in placement order
    packs.Set(p, filled[p] == capacity ? MinTree::kEmpty : LightestFirst(pack_load[p], p));
  }
}

// Balanced packing of arbitrary items (step 1: groups onto nodes).
void BalancedPacking(const float* load, int n, int num_packs, int32_t* pack, int32_t* rank,
                     Workspace& ws) {
  if (n == num_packs) {  // one item per pack: item i goes to pack i
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
  int32_t* visit = ws.order_tmp.data();  // free until step 2
  for (int k = 0; k < n; ++k) {
    visit[k] = IndexOf(items.Min());
    items.Set(visit[k], MinTree::kEmpty);
  }
  PackInOrder(load, visit, n, num_packs, pack, rank, ws);
}

// ws.order := every mlog, node by node, each node's by load descending and
// mlog ascending among equal loads. LSD radix sort (stable) on the complement
// of the float bits, then a stable pass by node; a byte that all keys share
// costs no pass.
void OrderExperts(const Shape& s, Workspace& ws) {
  const int E = s.experts;
  uint32_t* key = ws.sort_key.data();
  int32_t* src = ws.order.data();
  int32_t* dst = ws.order_tmp.data();
  uint32_t all_and = ~0u, all_or = 0;
  for (int m = 0; m < E; ++m) {
    key[m] = ~Bits(ws.mlog_load[m]);
    all_and &= key[m];
    all_or |= key[m];
    src[m] = m;
  }
  const uint32_t varying = all_and ^ all_or;  // bits where some keys differ
  for (int shift = 0; shift < 32; shift += 8) {
    if (((varying >> shift) & 0xff) == 0) continue;
    uint32_t* h = ws.histogram;
    std::memset(h, 0, sizeof(ws.histogram));
    for (int m = 0; m < E; ++m) ++h[(key[m] >> shift) & 0xff];
    uint32_t sum = 0;
    for (int b = 0; b < 256; ++b) {
      const uint32_t c = h[b];
      h[b] = sum;
      sum += c;
    }
    for (int i = 0; i < E; ++i) {
      const int m = src[i];
      dst[h[(key[m] >> shift) & 0xff]++] = m;
    }
    std::swap(src, dst);
  }
  if (s.nodes > 1) {
    int32_t* next = ws.filled.data();  // per-node write position (>= N entries)
    for (int n = 0; n < s.nodes; ++n) next[n] = n * s.experts_per_node();
    const int32_t* node_of = ws.node_of_mlog.data();
    for (int i = 0; i < E; ++i) {
      const int m = src[i];
      dst[next[node_of[m]]++] = m;
    }
    std::swap(src, dst);
  }
  if (src != ws.order.data()) std::copy(src, src + E, ws.order.data());
}

// One layer: loads in, phy2log [R] out.
void RebalanceLayer(const Shape& s, std::span<const double> layer_load, int32_t* phy2log,
                    Workspace& ws) {
  const int E = s.experts, G = s.groups, N = s.nodes;
  const int group_size = s.group_size(), groups_per_node = s.groups_per_node();
  const int epn = s.experts_per_node(), spn = s.slots_per_node();
  const int slots_per_rank = s.slots_per_rank(), ranks_per_node = s.ranks_per_node();
  float* load = ws.load.data();
  for (int e = 0; e < E; ++e) load[e] = static_cast<float>(layer_load[e]);

  // Step 1: groups onto nodes. A group's load is a float32 sum in index order
  // (groups summed side by side; each group's additions stay in order).
  float* group_load = ws.group_load.data();
  std::fill(group_load, group_load + G, 0.0f);
  for (int j = 0; j < group_size; ++j)
    for (int g = 0; g < G; ++g) group_load[g] += load[g * group_size + j];
  BalancedPacking(group_load, G, N, ws.group_pack.data(), ws.group_rank.data(), ws);
  int32_t* log2mlog = ws.log2mlog.data();
  int32_t* mlog2log = ws.mlog2log.data();
  float* mlog_load = ws.mlog_load.data();
  for (int g = 0; g < G; ++g) {
    const int base = (ws.group_pack[g] * groups_per_node + ws.group_rank[g]) * group_size;
    for (int j = 0; j < group_size; ++j) {
      log2mlog[g * group_size + j] = base + j;
      mlog2log[base + j] = g * group_size + j;
      mlog_load[base + j] = load[g * group_size + j];
    }
  }
  OrderExperts(s, ws);

  for (int n = 0; n < N; ++n) {
    const int first = n * epn;  // node-local index m is mlog first + m
    const float* w = mlog_load + first;
    const int32_t* sorted = ws.order.data() + first;  // mlogs, heaviest first
    int32_t* count = ws.count.data();
    int32_t* phy2mlog = ws.phy2mlog.data();

    // Step 2: each redundant slot to the expert with the highest load per
    // replica. Unreplicated experts are taken from the sorted list in order;
    // replicated ones compete in the tree with key (load / count, index).
    for (int m = 0; m < epn; ++m) {
      phy2mlog[m] = m;
      count[m] = 1;
    }
    int taken = 0;  // sorted[0, taken): the experts replicated so far
    if (spn > epn) {
      MinTree replicated;
      replicated.Clear(ws.expert_tree.data(), epn);
      for (int slot = epn; slot < spn; ++slot) {
        const int head = taken < epn ? sorted[taken] - first : 0;
        const uint64_t fresh = taken < epn ? HeaviestFirst(w[head], head) : MinTree::kEmpty;
        const uint64_t best = replicated.Min();
        int m;
        if (fresh < best) {
          m = head;
          ++taken;
        } else {
          m = IndexOf(best);
        }
        phy2mlog[slot] = m;
        ++count[m];
        replicated.Set(m, HeaviestFirst(w[m] / static_cast<float>(count[m]), m));
      }
    }

    // Step 3: the node's replicas onto its ranks.
    float* replica_load = ws.replica_load.data();
    int32_t* node_phy2log = phy2log + n * spn;
    if (slots_per_rank == 1) {  // one replica per rank: replica i on rank i
      for (int i = 0; i < spn; ++i) node_phy2log[i] = mlog2log[first + phy2mlog[i]];
      continue;
    }
    for (int i = 0; i < spn; ++i) {
      const int m = phy2mlog[i];
      replica_load[i] = w[m] / static_cast<float>(count[m]);
    }
    // Visiting order (load descending, replica index ascending): the items of
    // replicated experts, sorted, merged with the unreplicated experts, whose
    // order is sorted[taken, epn) already (replica index = expert index).
    uint64_t* items = ws.replicated_items.data();
    int num_items = 0;
    for (int k = 0; k < taken; ++k) {
      const int m = sorted[k] - first;
      items[num_items++] = HeaviestFirst(replica_load[m], m);
    }
    for (int i = epn; i < spn; ++i) items[num_items++] = HeaviestFirst(replica_load[i], i);
    std::sort(items, items + num_items);
    int32_t* visit = ws.visit.data();
    int a = taken, b = 0;
    for (int k = 0; k < spn; ++k) {
      const int head = a < epn ? sorted[a] - first : 0;
      const uint64_t ka = a < epn ? HeaviestFirst(w[head], head) : MinTree::kEmpty;
      const uint64_t kb = b < num_items ? items[b] : MinTree::kEmpty;
      const bool take_a = ka < kb;
      visit[k] = take_a ? head : IndexOf(kb);
      a += take_a;
      b += !take_a;
    }
    PackInOrder(replica_load, visit, spn, ranks_per_node, ws.visit_pack.data(),
                ws.visit_rank.data(), ws);
    for (int i = 0; i < spn; ++i) {
      const int slot = ws.visit_pack[i] * slots_per_rank + ws.visit_rank[i];
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
