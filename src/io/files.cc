#include "io/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "eplb/error.h"
#include "eplb/policy.h"

namespace eplb::io {

using nlohmann::json;

namespace {

// What a file that is not a regular file is, for messages.
const char* FileKind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// "the limit of N bytes (M MiB) on an input file", for messages.
std::string SizeLimit(uint64_t max_bytes) {
  std::string s = "the limit of " + std::to_string(max_bytes) + " bytes";
  if (max_bytes % (1 << 20) == 0) s += " (" + std::to_string(max_bytes >> 20) + " MiB)";
  return s + " on an input file";
}

// What kind of JSON value `v` is, for messages that must not echo it.
std::string KindOf(const json& v) {
  switch (v.type()) {
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::null: return "null";
    case json::value_t::binary: return "binary data";
    default: return "a number";
  }
}

// A parser's message, cut short: it quotes the token it stopped at, which
// can be megabytes of the input.
std::string Excerpt(const std::string& text) {
  constexpr size_t kMax = 200;
  return text.size() <= kMax ? text : text.substr(0, kMax) + "...";
}

// `v` as a 32-bit integer, or nullopt when it is not an integer in range
// (get<int32_t> would silently truncate).
std::optional<int32_t> Int32Of(const json& v) {
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > static_cast<uint64_t>(INT32_MAX)) return std::nullopt;
  } else if (!v.is_number_integer() || v.get<int64_t>() < INT32_MIN ||
             v.get<int64_t>() > INT32_MAX) {
    return std::nullopt;
  }
  return static_cast<int32_t>(v.get<int64_t>());
}

// Parses with the depth limit: deeper containers are refused as they start,
// before any of them is built.
json ParseJson(const std::string& text, const std::string& where) {
  auto limit_depth = [&](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start ||
         event == json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth)
      throw InvalidArgument(where + ": JSON nested more than " + std::to_string(kMaxJsonDepth) +
                            " levels deep (arrays and objects inside one another)");
    return true;
  };
  try {
    return json::parse(text, limit_depth);
  } catch (const json::parse_error& e) {
    throw InvalidArgument(where + ": not valid JSON (" + Excerpt(e.what()) + ")");
  } catch (const json::out_of_range& e) {  // a number beyond double range: 1e999
    throw InvalidArgument(where + ": a number is infinite (" + Excerpt(e.what()) +
                          "); loads must be finite and non-negative");
  }
}

}  // namespace

std::string ReadFile(const std::string& path, uint64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO with no writer would otherwise wait for one.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw InvalidArgument(path + ": cannot open file (" + std::strerror(errno) + ")");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw InvalidArgument(path + ": cannot stat file (" + std::strerror(errno) + ")");
  if (!S_ISREG(st.st_mode))
    throw InvalidArgument(path + ": is " + FileKind(st.st_mode) + ", not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_bytes)
    throw InvalidArgument(path + ": " + std::to_string(st.st_size) + " bytes, more than " +
                          SizeLimit(max_bytes));
  // At most max_bytes + 1: a file that grows while it is read is caught too.
  std::string text(static_cast<size_t>(st.st_size) + 1, '\0');
  size_t done = 0;
  while (true) {
    if (done == text.size()) {
      if (done > max_bytes) break;
      text.resize(std::min<uint64_t>(max_bytes + 1, 2 * text.size()));
    }
    const ssize_t n = ::read(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw InvalidArgument(path + ": read error (" + std::strerror(errno) + ")");
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done > max_bytes)
    throw InvalidArgument(path + ": grew while being read, past " + SizeLimit(max_bytes));
  text.resize(done);
  return text;
}

LoadMatrix LoadFromJson(const json& m, const std::string& where) {
  if (!m.is_array() || m.empty())
    throw InvalidArgument(where +
                          ": `load` must be a non-empty array of rows [layers][experts] (it is " +
                          (m.is_array() ? std::string("empty") : KindOf(m)) + ")");
  const size_t layers = m.size();
  if (!m[0].is_array() || m[0].empty())
    throw InvalidArgument(where + ": `load` row 0 must be a non-empty array of numbers (it is " +
                          (m[0].is_array() ? std::string("empty") : KindOf(m[0])) + ")");
  const size_t experts = m[0].size();
  if (layers > 100000 || experts > 1000000 || layers * experts > 100000000ull)
    throw InvalidArgument(where + ": `load` is absurdly large (" + std::to_string(layers) + " x " +
                          std::to_string(experts) + ")");
  LoadMatrix load(static_cast<int>(layers), static_cast<int>(experts));
  for (size_t l = 0; l < layers; ++l) {
    const json& row = m[l];
    if (!row.is_array())
      throw InvalidArgument(where + ": `load` row " + std::to_string(l) + " is " + KindOf(row) +
                            ", not an array");
    if (row.size() != experts)
      throw InvalidArgument(where + ": `load` is ragged: row " + std::to_string(l) + " has " +
                            std::to_string(row.size()) + " values, row 0 has " +
                            std::to_string(experts));
    for (size_t e = 0; e < experts; ++e) {
      const json& v = row[e];
      if (!v.is_number())
        throw InvalidArgument(where + ": `load` layer " + std::to_string(l) + ", expert " +
                              std::to_string(e) + " is " + KindOf(v) + ", not a number");
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
  std::optional<int32_t> v = Int32Of(obj[key]);
  if (!v) throw InvalidArgument(where + ": `" + key + "` must be an integer in 32-bit range");
  return *v;
}

LoadFile ParseLoadText(const std::string& text, const std::string& where) {
  json doc = ParseJson(text, where);
  if (!doc.is_object())
    throw InvalidArgument(where + ": expected a JSON object with `load` (the document is " +
                          KindOf(doc) + ")");
  LoadFile f;
  if (doc.contains("load")) {
    f.load = LoadFromJson(doc["load"], where);
  } else if (doc.contains("input") && doc["input"].is_object() && doc["input"].contains("load")) {
    const json& in = doc["input"];
    f.load = LoadFromJson(in["load"], where);
    f.num_replicas = OptionalInt(in, "num_replicas", where);
    f.num_groups = OptionalInt(in, "num_groups", where);
    f.num_nodes = OptionalInt(in, "num_nodes", where);
    f.num_ranks = OptionalInt(in, "num_gpus", where);
  } else {
    throw InvalidArgument(where + ": no `load` matrix (expected at the top level or under `input`)");
  }
  return f;
}

LoadFile ReadLoadFile(const std::string& path) { return ParseLoadText(ReadFile(path), path); }

Placement ParsePlacementText(const std::string& text, const std::string& where,
                             std::optional<int> num_ranks) {
  json doc = ParseJson(text, where);
  if (!doc.is_object() || !doc.contains("phy2log") || !doc["phy2log"].is_array() ||
      doc["phy2log"].empty())
    throw InvalidArgument(where + ": expected an object with a non-empty `phy2log` [layers][slots]");
  if (!num_ranks) num_ranks = OptionalInt(doc, "num_ranks", where);
  if (!num_ranks) throw InvalidArgument(where + ": `num_ranks` missing (give --ranks)");
  const json& rows = doc["phy2log"];
  const size_t slots = rows[0].is_array() ? rows[0].size() : 0;
  std::vector<int32_t> flat;
  int32_t max_expert = -1;
  for (size_t l = 0; l < rows.size(); ++l) {
    if (!rows[l].is_array() || rows[l].size() != slots || slots == 0)
      throw InvalidArgument(where + ": `phy2log` row " + std::to_string(l) +
                            " has the wrong length or is not an array");
    for (size_t s = 0; s < slots; ++s) {
      const json& entry = rows[l][s];
      std::optional<int32_t> v = Int32Of(entry);
      if (!v)
        throw InvalidArgument(where + ": `phy2log` layer " + std::to_string(l) + ", slot " +
                              std::to_string(s) + " is " +
                              (entry.is_number_integer() ? "an integer beyond 32 bits"
                               : entry.is_number()       ? "a fraction"
                                                         : KindOf(entry)) +
                              ", not an expert index");
      flat.push_back(*v);
      max_expert = std::max(max_expert, *v);
    }
  }
  std::optional<int> experts = OptionalInt(doc, "num_experts", where);
  // Every expert needs a slot: more than `slots` experts is no placement.
  if (!experts && max_expert >= static_cast<int64_t>(slots))
    throw InvalidArgument(where + ": `phy2log` names expert " + std::to_string(max_expert) +
                          ", but " + std::to_string(slots) + " slots cannot hold that many experts");
  if (!experts) experts = max_expert + 1;
  if (*num_ranks <= 0 || slots % *num_ranks != 0)
    throw InvalidArgument(where + ": " + std::to_string(slots) + " slots do not divide over " +
                          std::to_string(*num_ranks) + " ranks");
  // The policies' limits (policy.h), checked before the maps are derived:
  // log2phy alone could otherwise take layers x experts x slots entries.
  const long long L = static_cast<long long>(rows.size()), R = static_cast<long long>(slots),
                  E = *experts;
  if (L > kMaxLayers || R > kMaxSlots || E > kMaxExperts ||
      (E > 0 && E <= R && L * E * (R - E + 1) > kMaxLog2PhyEntries))
    throw InvalidArgument(where + ": the placement is absurdly large (" +
                          std::to_string(L) + " layers x " + std::to_string(R) + " slots, " +
                          std::to_string(E) + " experts)");
  try {
    return Placement::FromPhy2Log(static_cast<int>(L), *experts, *num_ranks, std::move(flat));
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(where + ": " + e.what());
  }
}

Placement ReadPlacementFile(const std::string& path, std::optional<int> num_ranks) {
  return ParsePlacementText(ReadFile(path), path, num_ranks);
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
