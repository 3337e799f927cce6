// The load-counting kernel's launcher (load_counter_kernel.cu), kept apart
// from the host API so only the kernel goes through nvcc.
#pragma once

#if EPLB_HAVE_CUDA

#include <cuda_runtime.h>

#include <cstdint>

namespace eplb::cuda {

// See eplb::CountExpertLoad. `ids_are_64bit` selects int64 ids, else int32.
// `num_choices` = tokens * top_k. Returns the launch status.
cudaError_t LaunchCountExpertLoad(const void* ids, bool ids_are_64bit, int64_t num_choices,
                                  const int32_t* log2phy, const int32_t* logcnt, int num_experts,
                                  int max_replicas, int num_slots, int64_t* logical_counts,
                                  int64_t* physical_counts, int32_t* physical_ids,
                                  int multiprocessors, cudaStream_t stream);

}  // namespace eplb::cuda

#endif  // EPLB_HAVE_CUDA
