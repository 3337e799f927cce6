#include "gpu/support/dir_store.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "eplb/error.h"

namespace eplb::test {

DirStore::DirStore(std::string dir) : dir_(std::move(dir)) {
  std::filesystem::create_directories(dir_);
}

std::string DirStore::PathOf(const std::string& key) const {
  std::string name;
  for (char c : key) name += (c == '/') ? '#' : c;
  return dir_ + "/" + name;
}

void DirStore::Set(const std::string& key, std::span<const uint8_t> value) {
  const std::string path = PathOf(key);
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(value.data()), static_cast<std::streamsize>(value.size()));
    if (!out) throw Error("store", "set", "cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

std::vector<uint8_t> DirStore::Get(const std::string& key, Deadline deadline) {
  const std::string path = PathOf(key);
  for (;;) {
    std::ifstream in(path, std::ios::binary);
    if (in) return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (Expired(deadline)) throw TimeoutError("store", "get", "key '" + key + "' did not appear");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace eplb::test
