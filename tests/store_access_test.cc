// Who may reach a run's store: the file store's folder and files are this
// user's alone; a Redis server with a password or an ACL user is reached
// with AUTH, and a refused or missing password is an error naming the store,
// the host and the operation, never the password. Against the real file
// system and a real redis-server started with --requirepass and --user.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>

#include "bootstrap/redis_spec.h"
#include "eplb/bootstrap.h"
#include "eplb/error.h"
#include "support/error_text.h"
#include "support/paths.h"
#include "support/redis_server.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST(FileStoreAccess, AFolderItCreatesIsPrivateAndSoAreItsFiles) {
  const std::string base = test::MakeTempDir("eplb-fsa-");
  const std::string dir = base + "/a/b";
  auto store = MakeFileStore(dir);
  EXPECT_EQ(ModeOf(base + "/a"), 0700u);
  EXPECT_EQ(ModeOf(dir), 0700u);
  store->SetString("k", "v");
  store->SetIfAbsent("d", std::vector<uint8_t>{1});
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    ++files;
    EXPECT_EQ(ModeOf(e.path()), 0600u) << e.path();
  }
  EXPECT_EQ(files, 2) << "a temporary file was left behind";
}

TEST(FileStoreAccess, AFolderOthersMayWriteToIsRefused) {
  for (mode_t mode : {0777, 0770, 0720, 0702}) {
    const std::string dir = test::MakeTempDir("eplb-fsa-");
    ASSERT_EQ(::chmod(dir.c_str(), mode), 0);
    std::string msg = test::ErrorOf([&] { MakeFileStore(dir); });
    char shown[8];
    std::snprintf(shown, sizeof shown, "%04o", static_cast<unsigned>(mode));
    EXPECT_NE(msg.find("file store " + dir + " has mode " + shown), std::string::npos) << msg;
    EXPECT_NE(msg.find("chmod go-w"), std::string::npos) << msg;
    EXPECT_THROW(OpenStore("file:" + dir), InvalidArgument);
  }
  // Readable by others is fine: the files inside are 0600.
  const std::string readable = test::MakeTempDir("eplb-fsa-");
  ASSERT_EQ(::chmod(readable.c_str(), 0755), 0);
  EXPECT_NO_THROW(MakeFileStore(readable)->SetString("k", "v"));
}

TEST(FileStoreAccess, AFolderOfAnotherUserOrNotAFolderIsRefused) {
  std::string other;
  if (::geteuid() == 0) {
    // As root: a folder handed to nobody (65534).
    other = test::MakeTempDir("eplb-fsa-");
    ASSERT_EQ(::chown(other.c_str(), 65534, 65534), 0);
    ASSERT_EQ(::chmod(other.c_str(), 0700), 0);
  } else {
    other = "/";  // root's, and not writable by others
  }
  std::string msg = test::ErrorOf([&] { MakeFileStore(other); });
  EXPECT_NE(msg.find("belongs to uid"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not to this user"), std::string::npos) << msg;

  const std::string file = test::MakeTempDir("eplb-fsa-") + "/plain";
  { std::FILE* f = std::fopen(file.c_str(), "w"); ASSERT_NE(f, nullptr); std::fclose(f); }
  msg = test::ErrorOf([&] { MakeFileStore(file); });
  EXPECT_NE(msg.find("is not a directory"), std::string::npos) << msg;
}

// A process of another user (nobody) cannot read the run's keys: run where
// the test may change its uid (as root), so the check is the kernel's own.
TEST(FileStoreAccess, AnotherUserCannotReadTheKeys) {
  const std::string base = test::MakeTempDir("eplb-fsa-");
  ASSERT_EQ(::chmod(base.c_str(), 0755), 0);
  // A folder eplb made (0700), and one the user made readable to all (0755).
  const std::string made = base + "/made", open = base + "/open";
  ASSERT_EQ(::mkdir(open.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(open.c_str(), 0755), 0);
  MakeFileStore(made)->SetString("addr", "127.0.0.1:4242");
  MakeFileStore(open)->SetString("addr", "127.0.0.1:4242");
  std::string file;
  for (const auto& e : std::filesystem::directory_iterator(open)) file = e.path();
  ASSERT_FALSE(file.empty());
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a process as another user (the modes are checked above)";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
    const bool made_refused = ::access(made.c_str(), R_OK) != 0 && errno == EACCES;
    const bool open_listed = ::access(open.c_str(), R_OK | X_OK) == 0;  // names are hashes of the keys
    const bool file_refused = ::open(file.c_str(), O_RDONLY) < 0 && errno == EACCES;
    ::_exit(made_refused && open_listed && file_refused ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "a process of another user could read a key, or the test could not tell";
}

EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(RedisSpec, CredentialsFromTheUrlOrTheEnvironment) {
  auto p = bootstrap::ParseRedisSpec("redis://alice:s%40cr%3At@db.local:7000", Env({}));
  EXPECT_EQ(p.host, "db.local");
  EXPECT_EQ(p.port, 7000);
  EXPECT_EQ(p.auth.user, "alice");
  EXPECT_EQ(p.auth.password, "s@cr:t");
  p = bootstrap::ParseRedisSpec("redis://:pw@[::1]:6380/", Env({}));
  EXPECT_EQ(p.host, "::1");
  EXPECT_EQ(p.auth.user, "");
  EXPECT_EQ(p.auth.password, "pw");
  p = bootstrap::ParseRedisSpec("redis://h", Env({{"EPLB_REDIS_USER", "bob"}, {"EPLB_REDIS_PASSWORD", "x y"}}));
  EXPECT_EQ(p.port, 6379);
  EXPECT_EQ(p.auth.user, "bob");
  EXPECT_EQ(p.auth.password, "x y");
  // The URL's user with the environment's password; the URL's credentials win.
  p = bootstrap::ParseRedisSpec("redis://carol@h", Env({{"EPLB_REDIS_PASSWORD", "envpw"}}));
  EXPECT_EQ(p.auth.user, "carol");
  EXPECT_EQ(p.auth.password, "envpw");
  p = bootstrap::ParseRedisSpec("redis://:urlpw@h", Env({{"EPLB_REDIS_PASSWORD", "envpw"}}));
  EXPECT_EQ(p.auth.password, "urlpw");
  p = bootstrap::ParseRedisSpec("redis://h:1", Env({}));
  EXPECT_EQ(p.auth.password, "");
}

TEST(RedisSpec, BadSpecsAreRefusedWithThePasswordHidden) {
  struct Case {
    std::string spec, says;
  };
  for (const Case& c : {Case{"redis://u:hunter2@h:notaport", "bad port"},
                        Case{"redis://u:hunter2%4@h", "bad %-escape at character 8"},
                        Case{"redis://u:hunter2%00@h", "NUL"},
                        Case{"redis://carol@h", "has no password"},
                        Case{"redis://u:hunter2@", "no host"},
                        Case{"rediss://u:hunter2@h:6380", "TLS to Redis (rediss://) is not supported"},
                        Case{"redis://u:" + std::string(1025, 'p') + "@h", "more than 1024"},
                        Case{"redis://u:hunter2@[::1", "unclosed"}}) {
    std::string msg = test::ErrorOf([&] { bootstrap::ParseRedisSpec(c.spec, Env({})); });
    EXPECT_NE(msg.find(c.says), std::string::npos) << c.spec << ": " << msg;
    EXPECT_EQ(msg.find("hunter2"), std::string::npos) << "the password is in the message: " << msg;
    EXPECT_EQ(msg.find("ppppp"), std::string::npos) << "the password is in the message";
    EXPECT_THROW(OpenStore(c.spec), InvalidArgument) << c.spec;
  }
  const std::string tls = test::ErrorOf([] { OpenStore("rediss://h"); });
  EXPECT_NE(tls.find("hiredis (0.14.1) has no TLS"), std::string::npos) << tls;
  EXPECT_EQ(bootstrap::RedactSpec("redis://u:hunter2@h:1"), "redis://u:***@h:1");
  EXPECT_EQ(bootstrap::RedactSpec("redis://u:p@ss@h"), "redis://u:***@h");
  EXPECT_EQ(bootstrap::RedactSpec("redis://h:1"), "redis://h:1");
}

const char* kPassword = "pa55-w0rd:with@odd%chars";
const char* kAclPassword = "acl-secret-9";

TEST(RedisAuth, PasswordAndAclUserFromTheUrl) {
  test::RedisServer server({kPassword, "alice", kAclPassword});
  const std::string where = "127.0.0.1:" + std::to_string(server.port());
  auto by_password = OpenStore("redis://:pa55-w0rd%3Awith%40odd%25chars@" + where);
  by_password->SetString("a", "1");
  auto by_acl = OpenStore("redis://alice:" + std::string(kAclPassword) + "@" + where);
  EXPECT_EQ(by_acl->GetString("a", DeadlineAfter(1s)), "1");
  auto direct = MakeRedisStore(server.host(), server.port(), RedisAuth{"alice", kAclPassword});
  EXPECT_EQ(direct->GetString("a", DeadlineAfter(1s)), "1");
}

TEST(RedisAuth, PasswordFromTheEnvironment) {
  test::RedisServer server({kPassword, "alice", kAclPassword});
  ::setenv("EPLB_REDIS_USER", "alice", 1);
  ::setenv("EPLB_REDIS_PASSWORD", kAclPassword, 1);
  std::string msg = test::ErrorOf([&] { OpenStore(server.spec())->SetString("b", "2"); });
  ::unsetenv("EPLB_REDIS_USER");
  ::unsetenv("EPLB_REDIS_PASSWORD");
  EXPECT_EQ(msg, "");
}

TEST(RedisAuth, WrongOrMissingCredentialsNameTheStoreNotThePassword) {
  test::RedisServer server({kPassword, "alice", kAclPassword});
  const std::string where = "redis://127.0.0.1:" + std::to_string(server.port());
  struct Case {
    std::function<void()> open;
    std::string operation, says;
  };
  const std::vector<Case> cases = {
      {[&] { MakeRedisStore(server.host(), server.port()); }, "connect", "requires authentication"},
      {[&] { MakeRedisStore(server.host(), server.port(), RedisAuth{"", "wrong-pass"}); }, "auth",
       "refused AUTH as the default user: WRONGPASS"},
      {[&] { MakeRedisStore(server.host(), server.port(), RedisAuth{"alice", "wrong-pass"}); }, "auth",
       "refused AUTH as user 'alice': WRONGPASS"},
      {[&] { MakeRedisStore(server.host(), server.port(), RedisAuth{"mallory", kAclPassword}); }, "auth",
       "refused AUTH as user 'mallory'"},
  };
  for (const Case& c : cases) {
    try {
      c.open();
      ADD_FAILURE() << "connected with bad credentials (" << c.says << ")";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(e.layer(), "store") << msg;
      EXPECT_EQ(e.operation(), c.operation) << msg;
      EXPECT_NE(msg.find(where), std::string::npos) << msg;
      EXPECT_NE(msg.find(c.says), std::string::npos) << msg;
      EXPECT_EQ(msg.find("wrong-pass"), std::string::npos) << msg;
      EXPECT_EQ(msg.find(kAclPassword), std::string::npos) << msg;
    }
  }
}

}  // namespace
}  // namespace eplb
