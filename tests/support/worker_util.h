// Helpers for test workers (multiprocess.h): join the run like a launched
// rank, log to stderr, fill and verify memory with a pattern that names its
// origin, report eplb errors in one parseable line.
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

// Byte `offset` of the pattern of (rank, round): every byte says where it
// came from, so a misplaced byte is caught.
uint8_t PatternByte(int rank, int round, uint64_t offset);
void FillPattern(uint8_t* data, uint64_t bytes, int rank, int round, uint64_t offset = 0);
// Offset of the first byte of [data, +bytes) that differs from the pattern
// starting at `offset`, or -1.
int64_t FindMismatch(const uint8_t* data, uint64_t bytes, int rank, int round, uint64_t offset);

// "EPLB-ERROR kind=<timeout|error|invalid> rank=R peer=P layer=L op=O ms=T: what"
void ReportError(const std::exception& e, double ms);

}  // namespace eplb::test
