// Reads the dynamic loader's cache (/etc/ld.so.cache, written by ldconfig)
// without running ldconfig: the same answer as `ldconfig -p`, from the file.
#pragma once

#include <string>
#include <vector>

namespace eplb::select {

struct LdCacheEntry {
  std::string name;  // soname or file name, e.g. "libnccl.so.2"
  std::string path;  // e.g. "/usr/local/cuda-13.0/lib/libnccl.so.2"
};

// Entries for this process's architecture (x86-64 or AArch64 libc6), in cache
// order. A missing, unreadable or malformed cache yields an empty list and,
// when `problem` is given, a description of what was wrong.
std::vector<LdCacheEntry> ReadLdCache(const std::string& path, std::string* problem = nullptr);

}  // namespace eplb::select
