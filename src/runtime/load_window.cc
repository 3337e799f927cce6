#include "runtime/load_window.h"

#include <string>

#include "eplb/error.h"

namespace eplb::runtime {

LoadWindow::LoadWindow(int num_layers, int num_experts, int window_steps)
    : num_layers_(num_layers), num_experts_(num_experts), window_(window_steps) {
  if (num_layers <= 0 || num_experts <= 0 || window_steps <= 0)
    throw InvalidArgument("load window: layers (" + std::to_string(num_layers) + "), experts (" +
                          std::to_string(num_experts) + ") and window steps (" +
                          std::to_string(window_steps) + ") must be positive");
  cells_ = static_cast<size_t>(num_layers) * num_experts;
  open_.assign(cells_, 0);
  ring_.assign(cells_ * window_steps, 0);
  sum_.assign(cells_, 0);
}

void LoadWindow::Add(int layer, std::span<const int64_t> counts) {
  if (layer < 0 || layer >= num_layers_)
    throw InvalidArgument("RecordLoad: layer " + std::to_string(layer) + " outside [0, " +
                          std::to_string(num_layers_) + ")");
  if (counts.size() != static_cast<size_t>(num_experts_))
    throw InvalidArgument("RecordLoad: layer " + std::to_string(layer) + " got " +
                          std::to_string(counts.size()) + " counts, expected one per logical expert (" +
                          std::to_string(num_experts_) + ")");
  uint32_t* row = open_.data() + static_cast<size_t>(layer) * num_experts_;
  for (int e = 0; e < num_experts_; ++e) {
    const int64_t c = counts[e];
    const int64_t total = static_cast<int64_t>(row[e]) + c;
    if (c < 0 || total > int64_t{UINT32_MAX})
      throw InvalidArgument("RecordLoad: layer " + std::to_string(layer) + " expert " +
                            std::to_string(e) + ": count " + std::to_string(c) +
                            (c < 0 ? " is negative" : " makes the step's count exceed 2^32 - 1"));
    row[e] = static_cast<uint32_t>(total);
  }
}

void LoadWindow::CloseStep() {
  uint32_t* slot = ring_.data() + cells_ * next_;
  for (size_t i = 0; i < cells_; ++i) {
    sum_[i] += static_cast<int64_t>(open_[i]) - static_cast<int64_t>(slot[i]);
    slot[i] = open_[i];
    open_[i] = 0;
  }
  next_ = (next_ + 1) % window_;
  if (filled_ < window_) ++filled_;
}

}  // namespace eplb::runtime
