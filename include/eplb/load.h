// Expert load: tokens routed to each logical expert of each MoE layer over a
// window of steps, row-major [num_layers][num_experts].
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "eplb/export.h"

namespace eplb {

struct EPLB_EXPORT LoadMatrix {
  int num_layers = 0;
  int num_experts = 0;
  std::vector<double> values;  // num_layers * num_experts

  LoadMatrix() = default;
  LoadMatrix(int layers, int experts)
      : num_layers(layers), num_experts(experts),
        values(static_cast<size_t>(layers) * experts, 0.0) {}

  double& at(int layer, int expert) { return values[static_cast<size_t>(layer) * num_experts + expert]; }
  double at(int layer, int expert) const {
    return values[static_cast<size_t>(layer) * num_experts + expert];
  }
  std::span<const double> layer(int l) const {
    return {values.data() + static_cast<size_t>(l) * num_experts, static_cast<size_t>(num_experts)};
  }
};

// Throws InvalidArgument naming the first offending layer/expert when a value
// is negative, NaN or infinite, or when the shape is empty or inconsistent.
EPLB_EXPORT void ValidateLoad(const LoadMatrix& load);

}  // namespace eplb
