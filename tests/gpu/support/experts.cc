#include "gpu/support/experts.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "gpu/support/kernels.h"

namespace eplb::test {

namespace {
constexpr size_t kTailBytes = 4096;
constexpr uint64_t kOddBytes = 1000;
}  // namespace

uint64_t Seed(int rank, int round) { return 1000003ULL * (round + 1) + 7919ULL * (rank + 1); }

ExpertSlots::ExpertSlots(int device, int experts, size_t expert_bytes, size_t lead_bytes)
    : device_(device),
      experts_(experts),
      expert_bytes_(expert_bytes),
      lead_bytes_(lead_bytes),
      weights_allocation_(device, lead_bytes + experts * expert_bytes),
      staging_(device, experts * expert_bytes + kTailBytes),
      mismatches_(device, sizeof(unsigned long long)) {
  if (expert_bytes % 4 != 0 || lead_bytes % 4 != 0) throw std::invalid_argument("sizes must be words");
}

void ExpertSlots::Register(Communicator& communicator, Deadline deadline) {
  RegionId w = communicator.RegisterRegion(
      {weights(), experts_ * expert_bytes_, MemoryKind::kCuda, device_}, deadline);
  RegionId s = communicator.RegisterRegion(
      {staging_.data(), staging_.bytes(), MemoryKind::kCuda, device_}, deadline);
  if (w != 0 || s != 1) throw std::runtime_error("unexpected region ids");
}

void ExpertSlots::Prepare(int rank, int round, cudaStream_t stream, Deadline deadline) {
  cuda::DeviceGuard guard(device_);
  cuda::Check(FillPattern(reinterpret_cast<uint32_t*>(weights()), experts_ * expert_bytes_ / 4,
                          Seed(rank, round), stream),
              "fill weights");
  cuda::Check(cudaMemsetAsync(staging_.data(), 0xAB, staging_.bytes(), stream), "poison staging");
  cuda::Event done(device_);
  done.Record(stream);
  done.Wait(deadline, "test", "prepare round");
}

uint64_t ExpertSlots::CountWrong(const std::vector<Transfer>& transfers, int rank, int round,
                                 cudaStream_t stream, Deadline deadline) {
  cuda::DeviceGuard guard(device_);
  cuda::Check(cudaMemsetAsync(mismatches_.data(), 0, sizeof(unsigned long long), stream), "zero");
  uint64_t wrong_bytes = 0;
  for (const Transfer& t : transfers) {
    if (t.dst_rank != rank) continue;
    const uint64_t seed = Seed(t.src_rank, round);
    if (t.bytes % 4 == 0 && t.src_offset % 4 == 0 && t.dst_offset % 4 == 0) {
      cuda::Check(CountMismatches(reinterpret_cast<const uint32_t*>(staging_.as<char>() + t.dst_offset),
                                  t.bytes / 4, seed, t.src_offset / 4, mismatches_.as<unsigned long long>(),
                                  stream),
                  "count mismatches");
      continue;
    }
    // Unaligned piece: compare bytes on the host.
    std::vector<uint8_t> seen(t.bytes);
    cuda::Check(cudaMemcpyAsync(seen.data(), staging_.as<char>() + t.dst_offset, t.bytes,
                                cudaMemcpyDeviceToHost, stream),
                "read unaligned piece");
    cuda::Event read(device_);
    read.Record(stream);
    read.Wait(deadline, "test", "read unaligned piece");
    for (uint64_t b = 0; b < t.bytes; ++b) {
      const uint64_t at = t.src_offset + b;
      const uint32_t word = PatternWord(seed, at / 4);
      uint8_t expected;
      std::memcpy(&expected, reinterpret_cast<const uint8_t*>(&word) + at % 4, 1);
      wrong_bytes += seen[b] != expected;
    }
  }
  unsigned long long wrong_words = 0;
  cuda::Check(cudaMemcpyAsync(&wrong_words, mismatches_.data(), sizeof(wrong_words),
                              cudaMemcpyDeviceToHost, stream),
              "read mismatches");
  cuda::Event done(device_);
  done.Record(stream);
  done.Wait(deadline, "test", "verify round");
  return wrong_words + wrong_bytes;
}

std::vector<Transfer> ExchangeTransfers(int size, int experts, size_t expert_bytes, int per_rank,
                                        int round, bool odd) {
  std::vector<Transfer> transfers;
  for (int dst = 0; dst < size; ++dst) {
    for (int j = 0; j < per_rank; ++j) {
      int src = (dst + 1 + j) % size;
      if (src == dst) src = (src + 1) % size;
      const int expert = (round + 3 * j + dst) % experts;
      transfers.push_back({src, 0, expert * expert_bytes, dst, 1, j * expert_bytes, expert_bytes});
    }
    if (odd) {
      const int src = (dst + 1) % size;
      transfers.push_back({src, 0, 12345ULL + static_cast<uint64_t>(round),
                           dst, 1, experts * expert_bytes + 7, kOddBytes});
    }
  }
  return transfers;
}

}  // namespace eplb::test
