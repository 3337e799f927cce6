// Helpers for test workers (multiprocess.h): join the run like a launched
// rank, log to stderr, report eplb errors in one parseable line. (Byte
// patterns for checking transfers: transfer_pattern.h.)
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "eplb/bootstrap.h"
#include "eplb/error.h"
#include "eplb/gloo.h"

namespace eplb::test {

struct WorkerRank {
  LaunchEnv env;
  std::shared_ptr<Store> store;
  // GlooOptions for a group of this run.
  GlooOptions Gloo(const std::string& name) const;
};

// ReadLaunchEnv + OpenRunStore; spdlog to stderr with the rank in each line.
WorkerRank JoinRun();

// "EPLB-ERROR kind=<timeout|error|invalid> rank=R peer=P layer=L op=O ms=T: what"
void ReportError(const std::exception& e, double ms);

}  // namespace eplb::test
