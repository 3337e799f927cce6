// Paths tests need: the source tree, ../shared beside it, the eplb binary.
#pragma once

#include <string>

namespace eplb::test {

std::string SourceDir();
std::string SharedDir();  // $EPLB_SHARED_DIR, else <source>/../shared
std::string CliPath();    // the built eplb binary
std::string MakeTempDir(const std::string& prefix);  // fresh directory under $TMPDIR

}  // namespace eplb::test
