// Memory that communicators move bytes between: host or CUDA device memory.
#pragma once

#include <cstddef>
#include <cstdint>

#include "eplb/export.h"

namespace eplb {

enum class MemoryKind { kHost, kCuda };

inline const char* MemoryKindName(MemoryKind k) { return k == MemoryKind::kHost ? "host" : "cuda"; }

// A contiguous byte range a communicator may read from or write to.
struct EPLB_EXPORT MemoryRegion {
  void* base = nullptr;
  size_t bytes = 0;
  MemoryKind kind = MemoryKind::kHost;
  int device = -1;  // CUDA device ordinal for kCuda
};

}  // namespace eplb
