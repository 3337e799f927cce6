// File input and output shared by the tools: load matrices and placements in
// JSON, and writes that never leave a half-written file behind.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>
#include <utility>

#include "eplb/load.h"
#include "eplb/placement.h"

namespace eplb::io {

// A load file: `load` [L][E] at the top level (data/loads) or under
// `input` (golden files), whose other fields then serve as defaults.
struct LoadFile {
  LoadMatrix load;
  std::optional<int> num_replicas, num_groups, num_nodes, num_ranks;
};

// Input files are at most this large (the measured loads are ~130 KB): a
// file beyond it is a mistake, and reading it would take unbounded memory.
inline constexpr uint64_t kMaxInputBytes = uint64_t{64} << 20;

// JSON nested deeper than this is refused while parsing, before the value is
// built (a load file needs 3 levels).
inline constexpr int kMaxJsonDepth = 64;

// Throws InvalidArgument naming the file and the problem (missing, not a
// regular file, too large, not JSON, nested too deep, no `load`, ragged rows,
// non-numbers, negative / NaN / infinite values). Messages name where a bad
// value is and what kind it is, never the value's text.
LoadFile ReadLoadFile(const std::string& path);
// The same from the file's text; `where` names it in messages.
LoadFile ParseLoadText(const std::string& text, const std::string& where);
LoadMatrix LoadFromJson(const nlohmann::json& matrix, const std::string& where);

// Placement JSON: {"phy2log": [[...]], "num_ranks": P} (num_ranks may be
// given by the caller instead). Throws InvalidArgument on bad content:
// entries beyond 32 bits, shapes beyond the policies' limits (policy.h).
Placement ReadPlacementFile(const std::string& path, std::optional<int> num_ranks);
Placement ParsePlacementText(const std::string& text, const std::string& where,
                             std::optional<int> num_ranks);
nlohmann::json PlacementToJson(const Placement& placement);

// Reads a whole regular file of at most `max_bytes`; throws InvalidArgument
// naming it when it cannot, when it is something else (a directory, a FIFO,
// a device: never blocks on one) or when it is, or grows while being read,
// larger than the limit.
std::string ReadFile(const std::string& path, uint64_t max_bytes = kMaxInputBytes);

// Writes to a temporary file beside `path`, then renames it into place, so a
// reader never sees a partial file and a failure leaves nothing behind.
void WriteFileAtomic(const std::string& path, const std::string& content);

// Several outputs, all or none: every file is first written in full to a
// temporary beside it, and only once all are written are they renamed into
// place (an empty path, a folder that cannot be written: none is written).
void WriteFilesAtomic(const std::vector<std::pair<std::string, std::string>>& files);

}  // namespace eplb::io
