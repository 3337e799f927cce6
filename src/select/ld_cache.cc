#include "select/ld_cache.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>

namespace eplb::select {
namespace {

// Layout of glibc's cache file (elf/cache.c, sysdeps/generic/dl-cache.h):
// an optional old-format section ("ld.so-1.7.0", 12-byte entries) followed by
// the new format ("glibc-ld.so.cache" "1.1", 24-byte entries). In the new
// format, string offsets count from the start of the new header.
constexpr char kOldMagic[] = "ld.so-1.7.0";          // 11 bytes
constexpr char kNewMagic[] = "glibc-ld.so.cache1.1";  // 17 + 3 bytes
constexpr size_t kOldHeader = 16;
constexpr size_t kOldEntry = 12;
constexpr size_t kNewHeader = 48;
constexpr size_t kNewEntry = 24;
constexpr uint32_t kFlagTypeMask = 0x00ff;
constexpr uint32_t kFlagElfLibc6 = 0x0003;
constexpr uint32_t kFlagArchMask = 0xff00;
#if defined(__x86_64__)
constexpr uint32_t kFlagArch = 0x0300;  // FLAG_X8664_LIB64
#elif defined(__aarch64__)
constexpr uint32_t kFlagArch = 0x0a00;  // FLAG_AARCH64_LIB64
#else
constexpr uint32_t kFlagArch = 0x0000;
#endif

uint32_t U32(const std::string& d, size_t off) {
  uint32_t v;
  std::memcpy(&v, d.data() + off, sizeof v);
  return v;
}

}  // namespace

std::vector<LdCacheEntry> ReadLdCache(const std::string& path, std::string* problem) {
  std::vector<LdCacheEntry> out;
  auto fail = [&](const std::string& why) {
    if (problem) *problem = path + ": " + why;
    return std::vector<LdCacheEntry>{};
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail("cannot open");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.size() > (64u << 20)) return fail("implausibly large");

  size_t base = 0;
  if (data.size() >= kOldHeader && std::memcmp(data.data(), kOldMagic, 11) == 0) {
    uint64_t nlibs = U32(data, 12);
    base = kOldHeader + nlibs * kOldEntry;
    base = (base + 7) & ~size_t{7};  // the new header is 8-byte aligned
  }
  if (data.size() < base + kNewHeader || std::memcmp(data.data() + base, kNewMagic, 20) != 0)
    return fail("not a glibc ld.so.cache (new format) file");
  uint64_t nlibs = U32(data, base + 20);
  if (base + kNewHeader + nlibs * kNewEntry > data.size()) return fail("truncated entry table");

  auto str = [&](uint32_t off, std::string* s) {
    size_t start = base + off;
    if (start >= data.size()) return false;
    size_t end = data.find('\0', start);
    if (end == std::string::npos) return false;
    s->assign(data, start, end - start);
    return true;
  };
  for (uint64_t i = 0; i < nlibs; ++i) {
    size_t e = base + kNewHeader + i * kNewEntry;
    uint32_t flags = U32(data, e);
    if ((flags & kFlagTypeMask) != kFlagElfLibc6) continue;
    if ((flags & kFlagArchMask) != kFlagArch) continue;
    LdCacheEntry entry;
    if (!str(U32(data, e + 4), &entry.name) || !str(U32(data, e + 8), &entry.path))
      return fail("string offset out of range in entry " + std::to_string(i));
    out.push_back(std::move(entry));
  }
  if (problem) problem->clear();
  return out;
}

}  // namespace eplb::select
