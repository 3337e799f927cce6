#include "io/files.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "eplb/error.h"

namespace eplb::io {

using nlohmann::json;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InvalidArgument(path + ": cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw InvalidArgument(path + ": read error");
  return ss.str();
}

static json ParseJson(const std::string& path) {
  std::string text = ReadFile(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw InvalidArgument(path + ": not valid JSON (" + e.what() + ")");
  } catch (const json::out_of_range& e) {  // a number beyond double range: 1e999
    throw InvalidArgument(path + ": a number is infinite (" + e.what() +
                          "); loads must be finite and non-negative");
  }
}

LoadMatrix LoadFromJson(const json& m, const std::string& where) {
  if (!m.is_array() || m.empty())
    throw InvalidArgument(where + ": `load` must be a non-empty array of rows [layers][experts]");
  const size_t layers = m.size();
  if (!m[0].is_array() || m[0].empty())
    throw InvalidArgument(where + ": `load` row 0 must be a non-empty array of numbers");
  const size_t experts = m[0].size();
  if (layers > 100000 || experts > 1000000 || layers * experts > 100000000ull)
    throw InvalidArgument(where + ": `load` is absurdly large (" + std::to_string(layers) + " x " +
                          std::to_string(experts) + ")");
  LoadMatrix load(static_cast<int>(layers), static_cast<int>(experts));
  for (size_t l = 0; l < layers; ++l) {
    const json& row = m[l];
    if (!row.is_array())
      throw InvalidArgument(where + ": `load` row " + std::to_string(l) + " is not an array");
    if (row.size() != experts)
      throw InvalidArgument(where + ": `load` is ragged: row " + std::to_string(l) + " has " +
                            std::to_string(row.size()) + " values, row 0 has " +
                            std::to_string(experts));
    for (size_t e = 0; e < experts; ++e) {
      const json& v = row[e];
      if (!v.is_number())
        throw InvalidArgument(where + ": `load` layer " + std::to_string(l) + ", expert " +
                              std::to_string(e) + " is not a number (" + v.dump() + ")");
      load.at(static_cast<int>(l), static_cast<int>(e)) = v.get<double>();
    }
  }
  try {
    ValidateLoad(load);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(where + ": " + e.what());
  }
  return load;
}

static std::optional<int> OptionalInt(const json& obj, const char* key, const std::string& where) {
  if (!obj.contains(key)) return std::nullopt;
  const json& v = obj[key];
  if (!v.is_number_integer() || v.get<int64_t>() < INT32_MIN || v.get<int64_t>() > INT32_MAX)
    throw InvalidArgument(where + ": `" + key + "` must be an integer in 32-bit range");
  return static_cast<int>(v.get<int64_t>());
}

LoadFile ReadLoadFile(const std::string& path) {
  json doc = ParseJson(path);
  if (!doc.is_object()) throw InvalidArgument(path + ": expected a JSON object with `load`");
  LoadFile f;
  if (doc.contains("load")) {
    f.load = LoadFromJson(doc["load"], path);
  } else if (doc.contains("input") && doc["input"].is_object() && doc["input"].contains("load")) {
    const json& in = doc["input"];
    f.load = LoadFromJson(in["load"], path);
    f.num_replicas = OptionalInt(in, "num_replicas", path);
    f.num_groups = OptionalInt(in, "num_groups", path);
    f.num_nodes = OptionalInt(in, "num_nodes", path);
    f.num_ranks = OptionalInt(in, "num_gpus", path);
  } else {
    throw InvalidArgument(path + ": no `load` matrix (expected at the top level or under `input`)");
  }
  return f;
}

Placement ReadPlacementFile(const std::string& path, std::optional<int> num_ranks) {
  json doc = ParseJson(path);
  if (!doc.is_object() || !doc.contains("phy2log") || !doc["phy2log"].is_array() ||
      doc["phy2log"].empty())
    throw InvalidArgument(path + ": expected an object with a non-empty `phy2log` [layers][slots]");
  if (!num_ranks) num_ranks = OptionalInt(doc, "num_ranks", path);
  if (!num_ranks) throw InvalidArgument(path + ": `num_ranks` missing (give --ranks)");
  const json& rows = doc["phy2log"];
  const size_t slots = rows[0].is_array() ? rows[0].size() : 0;
  std::vector<int32_t> flat;
  int max_expert = -1;
  for (size_t l = 0; l < rows.size(); ++l) {
    if (!rows[l].is_array() || rows[l].size() != slots || slots == 0)
      throw InvalidArgument(path + ": `phy2log` row " + std::to_string(l) +
                            " has the wrong length or is not an array");
    for (const json& v : rows[l]) {
      if (!v.is_number_integer()) throw InvalidArgument(path + ": `phy2log` holds a non-integer");
      flat.push_back(v.get<int32_t>());
      max_expert = std::max(max_expert, flat.back());
    }
  }
  std::optional<int> experts = OptionalInt(doc, "num_experts", path);
  if (!experts) experts = max_expert + 1;
  if (*num_ranks <= 0 || slots % *num_ranks != 0)
    throw InvalidArgument(path + ": " + std::to_string(slots) + " slots do not divide over " +
                          std::to_string(*num_ranks) + " ranks");
  try {
    return Placement::FromPhy2Log(static_cast<int>(rows.size()), *experts, *num_ranks,
                                  std::move(flat));
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(path + ": " + e.what());
  }
}

json PlacementToJson(const Placement& p) {
  json phy2log = json::array(), logcnt = json::array(), log2phy = json::array();
  for (int l = 0; l < p.num_layers; ++l) {
    auto row = p.layer_phy2log(l);
    phy2log.push_back(std::vector<int32_t>(row.begin(), row.end()));
    logcnt.push_back(std::vector<int32_t>(
        p.logcnt.begin() + static_cast<size_t>(l) * p.num_experts,
        p.logcnt.begin() + static_cast<size_t>(l + 1) * p.num_experts));
    json experts = json::array();
    for (int e = 0; e < p.num_experts; ++e) {
      auto begin = p.log2phy.begin() + (static_cast<size_t>(l) * p.num_experts + e) * p.max_replicas;
      experts.push_back(std::vector<int32_t>(begin, begin + p.max_replicas));
    }
    log2phy.push_back(std::move(experts));
  }
  return json{{"num_layers", p.num_layers}, {"num_experts", p.num_experts},
              {"num_slots", p.num_slots},   {"num_ranks", p.num_ranks},
              {"phy2log", phy2log},         {"logcnt", logcnt},
              {"log2phy", log2phy}};
}

namespace {

// Writes `content` to a fresh temporary file beside `path` and returns its
// name; nothing is left behind when it fails.
std::string StageFile(const std::string& path, const std::string& content) {
  namespace fs = std::filesystem;
  if (path.empty()) throw InvalidArgument("an output path is empty");
  fs::path target(path);
  fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string tmpl = (dir / ("." + target.filename().string() + ".tmpXXXXXX")).string();
  int fd = mkstemp(tmpl.data());
  if (fd < 0) throw InvalidArgument(path + ": cannot create a temporary file in " + dir.string());
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n <= 0) {
      ::close(fd);
      ::unlink(tmpl.c_str());
      throw InvalidArgument(path + ": write failed");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmpl.c_str());
    throw InvalidArgument(path + ": write failed");
  }
  return tmpl;
}

}  // namespace

void WriteFilesAtomic(const std::vector<std::pair<std::string, std::string>>& files) {
  std::vector<std::string> staged;
  auto discard = [&] {
    for (const std::string& t : staged) ::unlink(t.c_str());
  };
  try {
    for (const auto& [path, content] : files) staged.push_back(StageFile(path, content));
  } catch (...) {
    discard();
    throw;
  }
  for (size_t k = 0; k < files.size(); ++k) {
    if (std::rename(staged[k].c_str(), files[k].first.c_str()) != 0) {
      // Same folder as the target: only a vanished folder fails here.
      for (size_t rest = k; rest < files.size(); ++rest) ::unlink(staged[rest].c_str());
      throw InvalidArgument(files[k].first + ": cannot rename the temporary file into place");
    }
  }
}

void WriteFileAtomic(const std::string& path, const std::string& content) {
  WriteFilesAtomic({{path, content}});
}

}  // namespace eplb::io
