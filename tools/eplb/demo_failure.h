// eplb demo: how a failed run is told. A rank that fails records why in the
// run's store ("demo/failure/<rank>": whom it blames, the step, the error,
// when), once (the first record stands); the launcher reads every rank's
// record after the ranks have ended and prints one verdict -- which rank
// stalled or died, who blamed it -- before the logs' tails.
//
// The engine step's all-reduce has the run's deadline (--deadline-ms): a
// rank that stalls or dies makes every other rank's step fail within it.
// The failing ranks follow each other's blame notes (runtime/blame.h) to the
// rank to blame; a rank that resumes after a stall finds that its peers
// blamed it and says it was the one left behind.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "eplb/bootstrap.h"
#include "eplb/error.h"
#include "eplb/store.h"
#include "io/process.h"

namespace eplb::cli::demo {

// The engine step's all-reduce at `step` failed with `e`: follows the blame
// notes of the engine's steps, records the failure and throws Error naming
// the rank to blame (or saying this rank was left behind).
[[noreturn]] void FailEngineStep(Store& store, int me, int world, int64_t step, const Error& e,
                                 std::chrono::milliseconds deadline);

// Records that this rank failed with `e` (unless a record stands already);
// store errors are logged, never thrown.
void RecordFailure(Store& store, int me, int64_t step, int blamed, bool left_behind, const std::string& error);
void RecordFailure(const LaunchEnv& env, const std::exception& e);

// The launcher's verdict on a failed run: one line naming the rank to blame
// (when the records agree on one), then one line per rank that failed
// (`notes`: what the launcher knows of a rank without a record). Empty when
// no rank recorded a failure.
std::string DescribeFailures(Store& store, const std::vector<io::ExitStatus>& statuses,
                             const std::vector<std::string>& notes);

}  // namespace eplb::cli::demo
