// File input and output shared by the tools: load matrices and placements in
// JSON, and writes that never leave a half-written file behind.
#pragma once

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

// Throws InvalidArgument naming the file and the problem (missing, not JSON,
// no `load`, ragged rows, non-numbers, negative / NaN / infinite values).
LoadFile ReadLoadFile(const std::string& path);
LoadMatrix LoadFromJson(const nlohmann::json& matrix, const std::string& where);

// Placement JSON: {"phy2log": [[...]], "num_ranks": P} (num_ranks may be
// given by the caller instead). Throws InvalidArgument on bad content.
Placement ReadPlacementFile(const std::string& path, std::optional<int> num_ranks);
nlohmann::json PlacementToJson(const Placement& placement);

// Reads a whole file; throws InvalidArgument naming it when it cannot.
std::string ReadFile(const std::string& path);

// Writes to a temporary file beside `path`, then renames it into place, so a
// reader never sees a partial file and a failure leaves nothing behind.
void WriteFileAtomic(const std::string& path, const std::string& content);

// Several outputs, all or none: every file is first written in full to a
// temporary beside it, and only once all are written are they renamed into
// place (an empty path, a folder that cannot be written: none is written).
void WriteFilesAtomic(const std::vector<std::pair<std::string, std::string>>& files);

}  // namespace eplb::io
