#include "support/paths.h"

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace eplb::test {

std::string SourceDir() { return EPLB_SOURCE_DIR; }

std::string DataDir() { return (std::filesystem::path(EPLB_SOURCE_DIR) / "data").string(); }

std::string CliPath() { return EPLB_CLI_PATH; }

std::string MakeTempDir(const std::string& prefix) {
  std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "XXXXXX")).string();
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + tmpl);
  return tmpl;
}

}  // namespace eplb::test
