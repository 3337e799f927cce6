#include "support/dir_store.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "eplb/error.h"

namespace eplb::test {
namespace {

class DirStore final : public Store {
 public:
  explicit DirStore(std::string dir) : dir_(std::move(dir)) { std::filesystem::create_directories(dir_); }
  std::string_view kind() const override { return "test-dir"; }

  void Set(const std::string& key, std::span<const uint8_t> value) override {
    std::string path = Path(key);
    std::string tmp = path + ".tmp" + std::to_string(::getpid());
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(value.data()), static_cast<std::streamsize>(value.size()));
      if (!out) throw Error("store", "set", "cannot write " + tmp);
    }
    std::filesystem::rename(tmp, path);
  }

  std::vector<uint8_t> Get(const std::string& key, Deadline deadline) override {
    std::string path = Path(key);
    for (;;) {
      std::ifstream in(path, std::ios::binary);
      if (in) return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      if (Expired(deadline)) throw TimeoutError("store", "get", "key '" + key + "' was never set");
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

 private:
  std::string Path(const std::string& key) const {
    std::string name;
    for (char c : key) name += (c == '/') ? std::string("%2F") : std::string(1, c);
    return dir_ + "/" + name;
  }
  std::string dir_;
};

}  // namespace

std::shared_ptr<Store> MakeDirStore(const std::string& dir) { return std::make_shared<DirStore>(dir); }

}  // namespace eplb::test
