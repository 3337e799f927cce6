// Expert fingerprints: fills an expert's bytes with a pattern that is a
// function of (layer, expert, tensor, offset) alone, so any slot can be
// checked against the expert a placement says it holds: a misplaced, stale or
// half-written byte shows. Used by `eplb demo` and the runtime tests.
#pragma once

#include <cstdint>

namespace eplb::runtime {

// The 8-byte word at word index `word` of tensor `tensor` of `expert` in `layer`.
uint64_t FingerprintWord(int layer, int expert, int tensor, uint64_t word);

// Fills `bytes` bytes (the whole expert tensor, from its first byte).
void FillFingerprint(uint8_t* data, uint64_t bytes, int layer, int expert, int tensor);

// Offset of the first byte that differs from the fingerprint, or -1.
int64_t FindFingerprintMismatch(const uint8_t* data, uint64_t bytes, int layer, int expert,
                                int tensor);

// Which expert the first word of a tensor claims to be, among [0, num_experts)
// (a quick check while routing); -1 when it matches none.
int IdentifyExpert(const uint8_t* data, int layer, int tensor, int num_experts);

}  // namespace eplb::runtime
