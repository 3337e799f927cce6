// The migration executor's local copies on a GPU (eplb::LocalCopier backed by
// cudaMemcpyAsync on a stream of its own), and its staging in device memory.
#pragma once

#if __has_include("eplb/migration.h")  // the executor (branch plan)

#include <memory>

#include "eplb/migration.h"

namespace eplb {

// Copies on a non-blocking stream of `device`, so they never wait behind the
// engine's default-stream work; Wait polls an event against its deadline.
// Allocate/Free: cudaMalloc/cudaFree on `device` (cudaFree synchronizes the
// device: free staging outside the serving path). Throws eplb::Error (layer
// "cuda") without CUDA or a GPU.
std::unique_ptr<LocalCopier> MakeCudaCopier(int device);

}  // namespace eplb

#endif
