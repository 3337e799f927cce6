// `eplb info`: detection and the rule through the command line.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "support/paths.h"

namespace eplb {
namespace {

struct CliRun {
  int status;
  std::string out;
};

// Runs the CLI with extra environment assignments; stderr goes to stdout.
CliRun RunCli(const std::string& env, const std::string& args) {
  std::string cmd = "env -u NIXL_PLUGIN_DIR -u EPLB_PLATFORM " + env + " " + test::CliPath() + " info " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

void InstallFakeNixl(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir + "/plugins");
  for (const char* f : {"/libnixl.so", "/libnixl_capi.so", "/plugins/libplugin_UCX.so"})
    fs::copy_file(EPLB_ABORT_ON_LOAD_LIB, dir + f, fs::copy_options::overwrite_existing);
}

TEST(InfoCli, PicksNixlWhenFoundWithoutLoadingIt) {
  std::string dir = test::MakeTempDir("eplb-info-nixl-");
  InstallFakeNixl(dir);
  CliRun r = RunCli("LD_LIBRARY_PATH=" + dir, "--json");
  ASSERT_EQ(r.status, 0) << r.out;  // the fake NIXL aborts whoever loads it
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["communicator"]["name"], "nixl");
  EXPECT_EQ(j["nixl"]["c_api"], dir + "/libnixl_capi.so");
  EXPECT_TRUE(j["nixl"]["available"].get<bool>());
}

TEST(InfoCli, FlagsFollowTheRule) {
  std::string empty = test::MakeTempDir("eplb-info-empty-");
  std::string env = "LD_LIBRARY_PATH=" + empty;
  auto pick = [&](const std::string& args) {
    CliRun r = RunCli(env, "--json " + args);
    EXPECT_EQ(r.status, 0) << r.out;
    return nlohmann::json::parse(r.out)["communicator"];
  };
  bool nixl_here = pick("")["name"] == "nixl";  // a real NIXL on this machine
  if (!nixl_here) {
    EXPECT_EQ(pick("")["name"], "gloo");
    EXPECT_EQ(pick("")["reason"], "nixl not found");
  }
  EXPECT_EQ(pick("--elastic")["name"], "nccl_stateless");
  EXPECT_EQ(pick("--elastic")["reason"], "elastic EP");
  EXPECT_EQ(pick("--communicator nccl")["name"], "nccl");
  EXPECT_EQ(pick("--communicator pynccl")["name"], "nccl_stateless");
  EXPECT_EQ(pick("--async --communicator gloo")["name"], "gloo");
  EXPECT_EQ(pick("--async --elastic")["name"], nixl_here ? "nixl" : "gloo");

  CliRun text = RunCli(env, "");
  EXPECT_EQ(text.status, 0);
  EXPECT_NE(text.out.find("communicator:  "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("platform:      "), std::string::npos) << text.out;
}

TEST(InfoCli, RefusalsExitTwo) {
  CliRun r = RunCli("", "--async --communicator nccl");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("use one of: nixl, cuda_ipc, gloo"), std::string::npos) << r.out;
  r = RunCli("", "--communicator mpi");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("valid: nixl, cuda_ipc, gloo, nccl, nccl_stateless"), std::string::npos) << r.out;
  r = RunCli("", "--platform tpu");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("valid: none, cuda, rocm"), std::string::npos) << r.out;
}

TEST(InfoCli, ForcedRocmLooksForRixl) {
  std::string dir = test::MakeTempDir("eplb-info-rocm-");
  InstallFakeNixl(dir);
  CliRun r = RunCli("EPLB_PLATFORM=rocm LD_LIBRARY_PATH=" + dir, "--json");
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["platform"]["name"], "rocm");
  EXPECT_EQ(j["nixl"]["package"], "rixl");
  EXPECT_EQ(j["communicator"]["name"], "nixl");
}

}  // namespace
}  // namespace eplb
