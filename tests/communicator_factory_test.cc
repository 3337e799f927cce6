// MakeCommunicator: validation and dispatch; backends that cannot run here
// (no GPU, no NIXL) fail with an error that says why, never crash.
#include "eplb/communicator_factory.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "comm/cuda_driver.h"
#include "eplb/detect.h"
#include "eplb/error.h"
#include "eplb/bootstrap.h"
#include "support/error_text.h"
#include "support/paths.h"

namespace eplb {
namespace {

CommunicatorOptions Options() {
  CommunicatorOptions o;
  o.rank = 0;
  o.world_size = 1;
  o.store = MakeFileStore(test::MakeTempDir("eplb-factory-"));
  o.connect_timeout = std::chrono::seconds(5);
  return o;
}

TEST(MakeCommunicator, RejectsBadNamesAndOptions) {
  CommunicatorOptions o = Options();
  EXPECT_NE(test::ErrorOf([&] { MakeCommunicator("ucx", o); }).find("valid: nixl, cuda_ipc, gloo, nccl, nccl_stateless"),
            std::string::npos);
  EXPECT_THROW(MakeCommunicator("ucx", o), InvalidArgument);
  o.rank = 1;
  EXPECT_THROW(MakeCommunicator("gloo", o), InvalidArgument);
  o.rank = 0;
  o.world_size = 0;
  EXPECT_THROW(MakeCommunicator("gloo", o), InvalidArgument);
  o = Options();
  o.store.reset();
  EXPECT_NE(test::ErrorOf([&] { MakeCommunicator("nixl", o); }).find("needs a store"), std::string::npos);
  o = Options();
  o.connect_timeout = std::chrono::milliseconds(0);
  EXPECT_THROW(MakeCommunicator("nccl_stateless", o), InvalidArgument);
}

TEST(MakeCommunicator, GlooIsAlwaysThere) {
  auto comm = MakeCommunicator("gloo", Options());
  EXPECT_EQ(comm->name(), "gloo");
  EXPECT_EQ(comm->size(), 1);
  comm->Execute({}, DeadlineAfter(std::chrono::seconds(1)));
}

TEST(MakeCommunicator, NcclNeedsTheEngineCommunicator) {
  CommunicatorOptions o = Options();
  std::string msg = test::ErrorOf([&] { MakeCommunicator("nccl", o); });
  EXPECT_NE(msg.find("none was given (options.nccl_comm)"), std::string::npos) << msg;
}

TEST(MakeCommunicator, NcclStatelessNeedsADevice) {
  CommunicatorOptions o = Options();
  EXPECT_THROW(MakeCommunicator("nccl_stateless", o), InvalidArgument);
  o.device = 0;
  std::string why;
  if (cuda::DeviceCount(&why) > 0) GTEST_SKIP() << "a GPU is present; tests/gpu covers this backend";
  // No driver or no GPU here: a clear error naming the CUDA layer, no crash.
  try {
    MakeCommunicator("nccl_stateless", o);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_TRUE(e.layer() == "cuda" || e.layer() == "nccl") << e.what();
  }
}

TEST(MakeCommunicator, NixlMissingSaysWhereItLooked) {
  // NIXL may be installed here: EPLB_NIXL_DIR points the search at an empty
  // folder (and nowhere else) for this test.
  const std::string empty = test::MakeTempDir("eplb-no-nixl-");
  const char* before = std::getenv("EPLB_NIXL_DIR");
  const std::string saved = before ? before : "";
  ::setenv("EPLB_NIXL_DIR", empty.c_str(), 1);
  CommunicatorOptions o = Options();
  try {
    MakeCommunicator("nixl", o);
    ADD_FAILURE() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.layer(), "nixl");
    EXPECT_NE(std::string(e.what()).find("nixl not found in EPLB_NIXL_DIR=" + empty + " (searched: " + empty),
              std::string::npos)
        << e.what();
  }
  if (before) ::setenv("EPLB_NIXL_DIR", saved.c_str(), 1); else ::unsetenv("EPLB_NIXL_DIR");
}

TEST(MakeCommunicator, NixlPoisonedLibraryFailsCleanlyWhenLoaded) {
  // An explicit path to a file that is not a library: loading is attempted
  // only now that nixl was chosen, and fails with the loader's reason.
  std::string dir = test::MakeTempDir("eplb-fake-nixl-");
  std::string path = dir + "/libnixl_capi.so";
  FILE* f = std::fopen(path.c_str(), "w");
  std::fputs("not an ELF file", f);
  std::fclose(f);
  CommunicatorOptions o = Options();
  o.nixl_capi_library = path;
  try {
    MakeCommunicator("nixl", o);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.layer(), "nixl");
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace eplb
