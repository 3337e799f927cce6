// FNV-1a over bytes: the check values ranks compare (a transfer list's, a
// layer's placement) -- cheap, stable across processes and builds, not
// cryptographic.
#pragma once

#include <cstddef>
#include <cstdint>

namespace eplb::util {

inline uint64_t Fnv1a(const void* data, size_t bytes, uint64_t seed = 14695981039346656037ull) {
  auto* p = static_cast<const uint8_t*>(data);
  uint64_t h = seed;
  for (size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace eplb::util
