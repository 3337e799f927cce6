#include "support/bad_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <stdexcept>

#include "io/files.h"

namespace eplb::test {

std::vector<BadFile> MakeBadFiles(const std::string& dir) {
  const std::string fifo = dir + "/fifo.json", big = dir + "/big.json", deep = dir + "/deep.json";
  if (::mkfifo(fifo.c_str(), 0600) != 0) throw std::runtime_error("mkfifo " + fifo + " failed");
  const int fd = ::open(big.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(io::kMaxInputBytes + 1)) != 0 ||
      ::close(fd) != 0)
    throw std::runtime_error("cannot make the sparse file " + big);
  std::ofstream(deep) << "{\"load\": " << std::string(75000, '[') << std::string(75000, ']')
                      << "}";
  return {
      {"a directory", dir, dir + ": is a directory, not a regular file"},
      {"a FIFO", fifo, fifo + ": is a FIFO, not a regular file"},
      {"/dev/zero", "/dev/zero", "/dev/zero: is a character device, not a regular file"},
      {"a file over the limit", big,
       big + ": 67108865 bytes, more than the limit of 67108864 bytes (64 MiB)"},
      {"JSON 75,000 deep", deep, deep + ": JSON nested more than 64 levels deep"},
  };
}

std::string NestedLoadJson(int depth) {
  return "{\"load\": [[1, 2, 3, 4]], \"note\": " + std::string(depth - 1, '[') +
         std::string(depth - 1, ']') + "}";
}

}  // namespace eplb::test
