#include "demo/fingerprint.h"

#include <cstring>

#include "demo/fingerprint_word.h"

namespace eplb::runtime {

uint64_t FingerprintWord(int layer, int expert, int tensor, uint64_t word) {
  return FingerprintWordOf(layer, expert, tensor, word);
}

void FillFingerprint(uint8_t* data, uint64_t bytes, int layer, int expert, int tensor) {
  const uint64_t words = bytes / 8;
  for (uint64_t w = 0; w < words; ++w) {
    const uint64_t v = FingerprintWord(layer, expert, tensor, w);
    std::memcpy(data + w * 8, &v, 8);
  }
  if (bytes % 8 != 0) {
    const uint64_t v = FingerprintWord(layer, expert, tensor, words);
    std::memcpy(data + words * 8, &v, bytes % 8);
  }
}

int64_t FindFingerprintMismatch(const uint8_t* data, uint64_t bytes, int layer, int expert,
                                int tensor) {
  const uint64_t words = (bytes + 7) / 8;
  for (uint64_t w = 0; w < words; ++w) {
    const uint64_t v = FingerprintWord(layer, expert, tensor, w);
    const uint64_t n = (w + 1) * 8 <= bytes ? 8 : bytes % 8;
    if (std::memcmp(data + w * 8, &v, n) != 0) {
      const auto* pv = reinterpret_cast<const uint8_t*>(&v);
      for (uint64_t i = 0; i < n; ++i)
        if (data[w * 8 + i] != pv[i]) return static_cast<int64_t>(w * 8 + i);
    }
  }
  return -1;
}

int IdentifyExpert(const uint8_t* data, int layer, int tensor, int num_experts) {
  uint64_t first;
  std::memcpy(&first, data, 8);
  for (int e = 0; e < num_experts; ++e)
    if (FingerprintWord(layer, e, tensor, 0) == first) return e;
  return -1;
}

}  // namespace eplb::runtime
