// Files every command that reads a load must refuse with exit status 2,
// without blocking, reading without bound or crashing: a directory, a FIFO
// (no writer), a character device, a file one byte over the size limit
// (sparse), JSON nested 75,000 deep.
#pragma once

#include <string>
#include <vector>

namespace eplb::test {

struct BadFile {
  std::string what;     // for failure messages
  std::string path;
  std::string message;  // what the refusal must say
};

// Creates them in `dir` (/dev/zero stays where it is).
std::vector<BadFile> MakeBadFiles(const std::string& dir);

// `{"load": [[1, 2, 3, 4]], "note": [[...]]}`: JSON `depth` levels deep in all.
std::string NestedLoadJson(int depth);

}  // namespace eplb::test
