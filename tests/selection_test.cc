// The default communicator rule, validation, the start-up log line, and the
// cross-rank agreement check.
#include "eplb/selection.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <optional>
#include <sstream>
#include <thread>

#include "eplb/error.h"
#include "eplb/bootstrap.h"
#include "select/detection.h"
#include "support/paths.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

struct Row {
  const char* what;
  SelectionRequest request;
  bool nixl;
  std::optional<CudaIpcCheck> ipc;  // nullopt: no check provided
  const char* name;                 // expected; nullptr = InvalidArgument
  const char* reason_or_error;      // expected reason, or a part of the error
};

const CudaIpcCheck kIpcOk{true, "2 ranks on this node, IPC verified"};
const CudaIpcCheck kIpcNo{false, "ranks on 2 nodes"};

// Every branch of the rule, each validation, and their interplay.
const Row kRows[] = {
    {"default, nothing installed", {}, false, std::nullopt, "gloo", "nixl not found"},
    {"default, nixl installed", {}, true, std::nullopt, "nixl", "nixl found at /x/libnixl_capi.so"},
    {"nixl beats cuda_ipc", {}, true, kIpcOk, "nixl", "nixl found at /x/libnixl_capi.so"},
    {"cuda_ipc when nixl missing", {}, false, kIpcOk, "cuda_ipc", "nixl not found; 2 ranks on this node, IPC verified"},
    {"gloo when cuda_ipc unusable", {}, false, kIpcNo, "gloo", "nixl not found; cuda_ipc unusable: ranks on 2 nodes"},
    {"elastic", {"", true, false}, true, kIpcOk, "nccl_stateless", "elastic EP"},
    {"elastic, nothing installed", {"", true, false}, false, std::nullopt, "nccl_stateless", "elastic EP"},
    {"explicit gloo beats nixl", {"gloo", false, false}, true, std::nullopt, "gloo", "requested"},
    {"explicit nccl beats elastic", {"nccl", true, false}, true, std::nullopt, "nccl", "requested"},
    {"explicit cuda_ipc", {"cuda_ipc", false, false}, false, kIpcNo, "cuda_ipc", "requested"},
    {"explicit nixl, installed", {"nixl", false, false}, true, std::nullopt, "nixl", "requested"},
    {"explicit nixl, missing", {"nixl", false, false}, false, std::nullopt, "nixl", "requested; nixl not found"},
    {"explicit nccl_stateless", {"nccl_stateless", false, false}, false, std::nullopt, "nccl_stateless", "requested"},
    {"pynccl alias, any case", {"PyNCCL", false, false}, false, std::nullopt, "nccl_stateless", "requested"},
    {"async default", {"", false, true}, false, std::nullopt, "gloo", "nixl not found"},
    {"async nixl", {"", false, true}, true, std::nullopt, "nixl", "nixl found at /x/libnixl_capi.so"},
    {"async explicit gloo", {"gloo", false, true}, false, std::nullopt, "gloo", "requested"},
    {"async explicit nccl", {"nccl", false, true}, false, std::nullopt, nullptr,
     "communicator nccl cannot be used in async mode"},
    {"async explicit nccl_stateless", {"nccl_stateless", false, true}, true, std::nullopt, nullptr,
     "use one of: nixl, cuda_ipc, gloo"},
    {"async elastic, nixl installed", {"", true, true}, true, kIpcOk, "nixl",
     "elastic EP, async; nixl found at /x/libnixl_capi.so"},
    {"async elastic, nothing installed", {"", true, true}, false, kIpcOk, "gloo", "elastic EP, async; nixl not found"},
    {"async elastic, explicit nccl_stateless", {"nccl_stateless", true, true}, true, std::nullopt, nullptr,
     "cannot be used in async mode"},
    {"async elastic, explicit gloo", {"gloo", true, true}, false, std::nullopt, "gloo", "requested"},
    {"unknown name", {"mpi", false, false}, true, std::nullopt, nullptr,
     "unknown communicator 'mpi' (valid: nixl, cuda_ipc, gloo, nccl, nccl_stateless"},
};

TEST(SelectCommunicator, EveryBranch) {
  for (const Row& row : kRows) {
    SCOPED_TRACE(row.what);
    SelectionFacts facts;
    facts.nixl_available = row.nixl;
    facts.nixl_reason = row.nixl ? "nixl found at /x/libnixl_capi.so" : "nixl not found";
    int ipc_calls = 0;
    if (row.ipc) facts.cuda_ipc_check = [&, ipc = *row.ipc] {
      ++ipc_calls;
      return ipc;
    };
    if (row.name == nullptr) {
      try {
        SelectCommunicator(row.request, facts);
        ADD_FAILURE() << "expected InvalidArgument";
      } catch (const InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find(row.reason_or_error), std::string::npos) << e.what();
      }
      continue;
    }
    Selection s = SelectCommunicator(row.request, facts);
    EXPECT_EQ(s.name, row.name);
    EXPECT_EQ(s.reason, row.reason_or_error);
    // IPC is probed only when the rule reaches it (it may talk to peers).
    bool reached = row.request.communicator.empty() && !row.request.elastic && !row.nixl && row.ipc;
    EXPECT_EQ(ipc_calls, reached ? 1 : 0);
  }
}

TEST(SelectCommunicator, NamesAndFamilies) {
  for (const auto& n : CommunicatorNames()) EXPECT_EQ(CanonicalCommunicatorName(n), n);
  EXPECT_TRUE(IsNcclFamily("nccl"));
  EXPECT_TRUE(IsNcclFamily("nccl_stateless"));
  for (const auto& n : AsyncSafeCommunicators()) EXPECT_FALSE(IsNcclFamily(n));
  EXPECT_THROW(CanonicalCommunicatorName(""), InvalidArgument);
}

TEST(SelectCommunicator, DetectedFactsOnAnEmptyMachine) {
  SearchEnvironment env;  // no cache, no folders, no devices
  env.ld_cache = "";
  env.dev_dir = env.proc_dir = "/nonexistent";
  SelectionFacts facts = DetectSelectionFacts(env);
  EXPECT_FALSE(facts.nixl_available);
  Selection s = SelectCommunicator({}, facts);
  EXPECT_EQ(DescribeSelection(s), "communicator gloo (nixl not found)");
}

TEST(LogSelection, OneInfoLine) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  auto logger = std::make_shared<spdlog::logger>("capture", sink);
  logger->set_pattern("[%l] %v");
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  LogSelection({"gloo", "nixl not found"});
  spdlog::set_default_logger(previous);
  EXPECT_EQ(out.str(), "[info] eplb: communicator gloo (nixl not found)\n");
}

TEST(AgreeOnSelection, SameChoiceEverywhere) {
  auto store = MakeFileStore(test::MakeTempDir("eplb-agree-"));
  Selection gloo{"gloo", "nixl not found"};
  std::thread other([&] { AgreeOnSelection(*store, "job", 1, 2, gloo, DeadlineAfter(5s)); });
  EXPECT_NO_THROW(AgreeOnSelection(*store, "job", 0, 2, gloo, DeadlineAfter(5s)));
  other.join();
}

TEST(AgreeOnSelection, DifferentChoiceNamesTheRank) {
  auto store = MakeFileStore(test::MakeTempDir("eplb-agree-"));
  store->SetString("job/communicator/1", "gloo");
  store->SetString("job/communicator/2", "nixl");
  try {
    AgreeOnSelection(*store, "job", 0, 3, {"gloo", "nixl not found"}, DeadlineAfter(5s));
    FAIL() << "expected Error";
  } catch (const TimeoutError&) {
    FAIL() << "expected a disagreement, not a timeout";
  } catch (const Error& e) {
    EXPECT_EQ(e.peer(), 2);
    EXPECT_NE(std::string(e.what()).find("rank 2 chose nixl"), std::string::npos) << e.what();
  }
}

TEST(AgreeOnSelection, SilentRankTimesOut) {
  auto store = MakeFileStore(test::MakeTempDir("eplb-agree-"));
  auto start = Clock::now();
  try {
    AgreeOnSelection(*store, "job", 0, 2, {"gloo", "nixl not found"}, DeadlineAfter(200ms));
    FAIL() << "expected TimeoutError";
  } catch (const TimeoutError& e) {
    EXPECT_EQ(e.peer(), 1);
    EXPECT_EQ(e.layer(), "select");
  }
  EXPECT_LT(Clock::now() - start, 2s);
}

}  // namespace
}  // namespace eplb
