#include "eplb/load.h"

#include <cmath>
#include <string>

#include "eplb/error.h"

namespace eplb {

void ValidateLoad(const LoadMatrix& load) {
  if (load.num_layers <= 0 || load.num_experts <= 0) {
    throw InvalidArgument("load: the matrix is empty (" + std::to_string(load.num_layers) +
                          " layers x " + std::to_string(load.num_experts) + " experts)");
  }
  if (load.values.size() != static_cast<size_t>(load.num_layers) * load.num_experts) {
    throw InvalidArgument("load: " + std::to_string(load.values.size()) + " values for a " +
                          std::to_string(load.num_layers) + " x " +
                          std::to_string(load.num_experts) + " matrix");
  }
  for (int l = 0; l < load.num_layers; ++l) {
    for (int e = 0; e < load.num_experts; ++e) {
      double v = load.at(l, e);
      if (std::isnan(v) || std::isinf(v) || v < 0) {
        throw InvalidArgument("load: layer " + std::to_string(l) + ", expert " + std::to_string(e) +
                              " is " + (std::isnan(v) ? std::string("NaN") : std::to_string(v)) +
                              "; loads must be finite and non-negative");
      }
    }
  }
}

}  // namespace eplb
