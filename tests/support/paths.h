// Paths tests need: the source tree, its test data, the eplb binary.
#pragma once

#include <string>

namespace eplb::test {

std::string SourceDir();
std::string DataDir();    // <source>/data: measured loads, golden placements
std::string CliPath();    // the built eplb binary
std::string MakeTempDir(const std::string& prefix);  // fresh directory under $TMPDIR

}  // namespace eplb::test
