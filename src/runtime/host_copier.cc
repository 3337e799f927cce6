// LocalCopier for host memory: memcpy, complete when Copy returns.
#include <cstdlib>
#include <cstring>
#include <new>

#include "eplb/migration.h"

namespace eplb {
namespace {

class HostCopier final : public LocalCopier {
 public:
  MemoryKind kind() const override { return MemoryKind::kHost; }

  MemoryRegion Allocate(size_t bytes) override {
    // Page-aligned so a backend may pin or register it as it is.
    constexpr size_t kAlign = 4096;
    size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, rounded > 0 ? rounded : kAlign);
    if (p == nullptr) throw std::bad_alloc();
    return MemoryRegion{p, bytes, MemoryKind::kHost, -1};
  }

  void Free(const MemoryRegion& region) override { std::free(region.base); }

  void Copy(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
  }

  void Wait(Deadline) override {}
};

}  // namespace

std::unique_ptr<LocalCopier> MakeHostCopier() { return std::make_unique<HostCopier>(); }

}  // namespace eplb
