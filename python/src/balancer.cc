// The online balancer for Python: eplb._eplb.Balancer, which eplb.Balancer
// (python/eplb/balancer.py) builds from torch tensors.
//
// Weights arrive as raw pointers with their layout (the Python side takes
// them from tensors' data_ptr and strides and holds the tensors, passed here
// as `keep_alive`, for as long as this object lives): nothing is copied.
// Construction and Step() run with the GIL released; the commit and cycle
// callbacks take it back to call Python. An exception a callback raises
// cannot cross the C++ balancer: it is kept and raised when Step() returns.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "arrays.h"
#include "bindings.h"
#include "eplb/balancer.h"
#include "eplb/bootstrap.h"
#include "eplb/error.h"
#include "launch.h"
#include "reports.h"

namespace eplb::python {
namespace {

// One tensor of a layer: (address, bytes per expert, bytes from one expert to
// the next, experts (slots) it holds, CUDA device or -1 for host memory).
using TensorSpec = std::tuple<uintptr_t, uint64_t, uint64_t, int64_t, int>;

int Int(const py::dict& d, const char* key) { return d[key].cast<int>(); }

BalancerConfig ConfigFrom(const py::dict& d, int num_layers) {
  BalancerConfig c;
  c.num_layers = num_layers;
  c.num_experts = Int(d, "num_experts");
  c.num_slots = Int(d, "num_slots");
  c.num_groups = Int(d, "num_groups");
  c.num_nodes = Int(d, "num_nodes");
  c.ranks_per_node = Int(d, "ranks_per_node");
  c.policy = d["policy"].cast<std::string>();
  const auto mode = d["mode"].cast<std::string>();
  if (mode != "async" && mode != "sync")
    throw InvalidArgument("balancer: mode must be 'async' or 'sync', not '" + mode + "'");
  c.mode = mode == "async" ? BalancerMode::kAsync : BalancerMode::kSync;
  c.window_steps = Int(d, "window_steps");
  c.step_interval = Int(d, "step_interval");
  c.first_rebalance_step = Int(d, "first_rebalance_step");
  c.last_rebalance_step = d["last_rebalance_step"].cast<int64_t>();
  c.deadline = std::chrono::milliseconds(d["deadline_ms"].cast<int64_t>());
  c.connect_timeout = std::chrono::milliseconds(d["connect_timeout_ms"].cast<int64_t>());
  c.commit_lead_steps = Int(d, "commit_lead_steps");
  c.staging_layers = Int(d, "staging_layers");
  c.name = d["name"].cast<std::string>();
  c.policy_threads = Int(d, "policy_threads");
  if (c.connect_timeout.count() <= 0) throw InvalidArgument("balancer: connect_timeout_ms must be positive");
  return c;
}

// The layers' weights from their specs; sets *device to their CUDA device
// (-1: host memory). Every tensor holds slots_per_rank experts.
std::vector<LayerWeights> WeightsFrom(const std::vector<std::vector<TensorSpec>>& specs,
                                      int slots_per_rank, int* device) {
  std::vector<LayerWeights> weights(specs.size());
  std::optional<int> seen;
  for (size_t l = 0; l < specs.size(); ++l) {
    if (specs[l].empty()) throw InvalidArgument("balancer: layer " + std::to_string(l) + " has no tensors");
    for (size_t t = 0; t < specs[l].size(); ++t) {
      const auto& [address, bytes, stride, slots, dev] = specs[l][t];
      const std::string where = "balancer: layer " + std::to_string(l) + " tensor " + std::to_string(t);
      if (slots != slots_per_rank)
        throw InvalidArgument(where + " holds " + std::to_string(slots) + " experts, but this rank has " +
                              std::to_string(slots_per_rank) + " slots (num_slots / world_size)");
      if (address == 0 || bytes == 0) throw InvalidArgument(where + " is empty");
      if (stride != 0 && stride < bytes)
        throw InvalidArgument(where + ": experts " + std::to_string(stride) + " bytes apart overlap (" +
                              std::to_string(bytes) + " bytes each)");
      if (seen && *seen != dev)
        throw InvalidArgument(where + " is on " + (dev < 0 ? std::string("the host") : "CUDA device " + std::to_string(dev)) +
                              ", the others on " + (*seen < 0 ? std::string("the host") : "CUDA device " + std::to_string(*seen)));
      seen = dev;
      const uint64_t step = stride != 0 ? stride : bytes;
      MemoryRegion region{reinterpret_cast<void*>(address), static_cast<size_t>(step * (slots - 1) + bytes),
                          dev < 0 ? MemoryKind::kHost : MemoryKind::kCuda, dev};
      weights[l].tensors.push_back({region, bytes, stride});
    }
  }
  *device = seen.value_or(-1);
  return weights;
}

class PyBalancer {
 public:
  PyBalancer(const std::vector<std::vector<TensorSpec>>& tensors, const py::dict& config,
             const EnvOverrides& env_overrides, const std::string& store_spec,
             const std::string& communicator, const py::object& initial, py::object keep_alive)
      : keep_alive_(std::move(keep_alive)) {
    if (tensors.empty()) throw InvalidArgument("balancer: no layers of weights");
    const LaunchEnv env = ReadEnv(env_overrides);
    BalancerConfig cfg = ConfigFrom(config, static_cast<int>(tensors.size()));
    if (cfg.num_slots <= 0 || cfg.num_slots % env.world_size != 0)
      throw InvalidArgument("balancer: " + std::to_string(cfg.num_slots) + " slots do not split over " +
                            std::to_string(env.world_size) + " ranks");
    int device = -1;
    std::vector<LayerWeights> weights = WeightsFrom(tensors, cfg.num_slots / env.world_size, &device);
    cfg.device = device;
    std::optional<std::vector<int32_t>> initial_phy2log;
    if (!initial.is_none())
      initial_phy2log = Phy2LogFromBuffer(initial.cast<py::buffer>(), "initial placement", cfg.num_layers,
                                          cfg.num_slots);
    py::gil_scoped_release release;
    Placement start = initial_phy2log
        ? Placement::FromPhy2Log(cfg.num_layers, cfg.num_experts, env.world_size, std::move(*initial_phy2log))
        : Placement::Identity(cfg.num_layers, cfg.num_experts, cfg.num_slots, env.world_size);
    std::shared_ptr<Store> store = OpenRunStore(store_spec, env);
    SelectionRequest request;
    request.communicator = communicator;
    request.async = cfg.mode == BalancerMode::kAsync;
    BalancerLinks links = MakeBalancerLinks(store, env.rank, env.world_size, request,
                                            DeadlineAfter(cfg.connect_timeout), device);
    balancer_ = std::make_unique<Balancer>(std::move(links), std::move(weights), cfg, std::move(start));
    balancer_->set_on_commit([this](const CommitEvent& e) {
      Callback(on_commit_, [&] { return CommitEventDict(e); });
    });
    balancer_->set_on_cycle([this](const CycleReport& r) {
      Callback(on_cycle_, [&] { return CycleReportDict(r); });
    });
  }

  ~PyBalancer() {
    if (balancer_) {
      py::gil_scoped_release release;
      balancer_.reset();
    }
  }

  void Close() {
    on_commit_ = py::none();
    on_cycle_ = py::none();
    if (balancer_) {
      std::unique_ptr<Balancer> b = std::move(balancer_);
      py::gil_scoped_release release;
      b.reset();  // stops the background thread: a wait in progress ends at its deadline
    }
    keep_alive_ = py::none();
  }

  void RecordLoad(int layer, const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& counts) {
    if (counts.ndim() != 1)
      throw InvalidArgument("record_load: counts must be one-dimensional ([num_experts]), got " +
                            std::to_string(counts.ndim()) + " dimensions");
    Get().RecordLoad(layer, std::span<const int64_t>(counts.data(), static_cast<size_t>(counts.size())));
  }

  void RecordTopK(int layer, uintptr_t ids, bool int64_ids, int64_t tokens, int top_k, uintptr_t stream,
                  uintptr_t physical_ids) {
    TopkIds topk{reinterpret_cast<const void*>(ids), int64_ids ? IndexType::kInt64 : IndexType::kInt32,
                 tokens, top_k};
    Balancer& b = Get();
    py::gil_scoped_release release;
    b.RecordTopK(layer, topk, reinterpret_cast<void*>(stream), reinterpret_cast<int32_t*>(physical_ids));
  }

  void Step(uintptr_t stream) {
    Balancer& b = Get();
    {
      py::gil_scoped_release release;
      b.Step(reinterpret_cast<void*>(stream));
    }
    if (callback_error_) {
      py::error_already_set e = std::move(*callback_error_);
      callback_error_.reset();
      throw e;
    }
  }

  py::tuple PlacementArrays() const {
    std::shared_ptr<const Placement> p = Get().placement();
    const py::ssize_t L = p->num_layers, E = p->num_experts, R = p->num_slots, K = p->max_replicas;
    return py::make_tuple(Int64Array(p->phy2log.data(), {L, R}), Int64Array(p->log2phy.data(), {L, E, K}),
                          Int64Array(p->logcnt.data(), {L, E}));
  }

  py::array_t<double> WindowLoad() const {
    const LoadMatrix w = Get().window_load();
    py::array_t<double> out({static_cast<py::ssize_t>(w.num_layers), static_cast<py::ssize_t>(w.num_experts)});
    std::copy(w.values.begin(), w.values.end(), out.mutable_data());
    return out;
  }

  py::dict Metrics() const { return MetricsDict(Get().metrics()); }
  std::string Prometheus() const { return Get().PrometheusText(); }
  std::string MetricsLine() const { return FormatMetricsLine(Get().metrics()); }
  int64_t StepCount() const { return Get().step(); }
  bool Idle() const { return Get().idle(); }
  int Rank() const { return Get().rank(); }
  int WorldSize() const { return Get().world_size(); }
  int Device() const { return Get().config().device; }
  bool Closed() const { return !balancer_; }
  void SetOnCommit(py::object f) { on_commit_ = std::move(f); }
  void SetOnCycle(py::object f) { on_cycle_ = std::move(f); }

 private:
  Balancer& Get() const {
    if (!balancer_) throw InvalidArgument("balancer: closed");
    return *balancer_;
  }

  // Runs on the engine thread inside Step(), where the GIL was released.
  template <typename MakeArg>
  void Callback(const py::object& f, MakeArg make_arg) {
    py::gil_scoped_acquire gil;
    if (f.is_none() || callback_error_) return;
    try {
      f(make_arg());
    } catch (py::error_already_set& e) {
      callback_error_.emplace(std::move(e));
    }
  }

  std::unique_ptr<Balancer> balancer_;
  py::object keep_alive_;
  py::object on_commit_ = py::none(), on_cycle_ = py::none();
  std::optional<py::error_already_set> callback_error_;
};

}  // namespace

void RegisterBalancer(py::module_& m) {
  py::class_<PyBalancer>(m, "Balancer")
      .def(py::init<const std::vector<std::vector<TensorSpec>>&, const py::dict&, const EnvOverrides&,
                    const std::string&, const std::string&, const py::object&, py::object>(),
           py::arg("tensors"), py::arg("config"), py::arg("env"), py::arg("store"), py::arg("communicator"),
           py::arg("initial"), py::arg("keep_alive"))
      .def("close", &PyBalancer::Close)
      .def("record_load", &PyBalancer::RecordLoad, py::arg("layer"), py::arg("counts"))
      .def("record_topk", &PyBalancer::RecordTopK, py::arg("layer"), py::arg("ids"), py::arg("int64_ids"),
           py::arg("tokens"), py::arg("top_k"), py::arg("stream"), py::arg("physical_ids"))
      .def("step", &PyBalancer::Step, py::arg("stream"))
      .def("placement", &PyBalancer::PlacementArrays)
      .def("window_load", &PyBalancer::WindowLoad)
      .def("metrics", &PyBalancer::Metrics)
      .def("prometheus_text", &PyBalancer::Prometheus)
      .def("metrics_line", &PyBalancer::MetricsLine)
      .def("step_count", &PyBalancer::StepCount)
      .def("idle", &PyBalancer::Idle)
      .def("rank", &PyBalancer::Rank)
      .def("world_size", &PyBalancer::WorldSize)
      .def("device", &PyBalancer::Device)
      .def("closed", &PyBalancer::Closed)
      .def("set_on_commit", &PyBalancer::SetOnCommit)
      .def("set_on_cycle", &PyBalancer::SetOnCycle);
}

}  // namespace eplb::python
