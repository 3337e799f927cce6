// The job token and the run's store under it (MakeTokenStore): keys nobody
// without the token can name, values nobody without it can forge, foreign
// values passed over alike by every rank. Against the real file store and a
// real redis-server, whose KEYS command lets a stranger learn the prefix.
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include "eplb/bootstrap.h"
#include "eplb/error.h"
#include "support/decision_race.h"
#include "support/error_text.h"
#include "support/multiprocess.h"
#include "support/paths.h"
#include "support/redis_server.h"
#include "support/worker_util.h"

namespace eplb {
namespace {

using namespace std::chrono_literals;

EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

const std::string kToken = std::string(40, 'a') + "-token.of~the+run/=";

TEST(JobToken, GeneratedTokensAreFresh256BitHex) {
  const std::string a = GenerateJobToken(), b = GenerateJobToken();
  EXPECT_EQ(a.size(), 64u);
  EXPECT_TRUE(std::all_of(a.begin(), a.end(), [](char c) { return std::isxdigit(c) && !std::isupper(c); })) << a;
  EXPECT_NE(a, b);
  EXPECT_NO_THROW(CheckJobToken(a, "EPLB_JOB_TOKEN"));
}

TEST(JobToken, BadTokensAreRefusedWithoutShowingThem) {
  const std::string short_one(kMinJobTokenChars - 1, 'x'), long_one(kMaxJobTokenChars + 1, 'y');
  const std::string spaced = std::string(20, 'z') + " " + std::string(20, 'z');
  const std::string quoted = std::string(40, 'q') + "'";
  struct Case {
    std::string token, says;
  };
  for (const Case& c : {Case{short_one, "31 characters"}, Case{long_one, "257 characters"},
                        Case{spaced, "character 21 is not allowed"}, Case{quoted, "character 41 is not allowed"}}) {
    std::string msg = test::ErrorOf([&] { ParseLaunchEnv(Env({{"EPLB_JOB_TOKEN", c.token}})); });
    EXPECT_NE(msg.find("EPLB_JOB_TOKEN"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.says), std::string::npos) << msg;
    EXPECT_NE(msg.find("openssl rand -hex 32"), std::string::npos) << msg;
    EXPECT_EQ(msg.find(c.token.substr(0, 16)), std::string::npos) << "the message shows the token: " << msg;
    EXPECT_THROW(ParseLaunchEnv(Env({{"EPLB_JOB_TOKEN", c.token}})), InvalidArgument);
  }
  EXPECT_EQ(ParseLaunchEnv(Env({{"EPLB_JOB_TOKEN", kToken}})).job_token, kToken);
  EXPECT_EQ(ParseLaunchEnv(Env({})).job_token, "");
  EXPECT_THROW(MakeTokenStore(MakeFileStore(test::MakeTempDir("eplb-ts-")), "p/", "short"), InvalidArgument);
}

TEST(TokenStore, KeysCannotBeNamedWithoutTheToken) {
  const std::string dir = test::MakeTempDir("eplb-ts-");
  auto rank0 = MakeTokenStore(MakeFileStore(dir), "eplb/r/", kToken);
  auto rank1 = MakeTokenStore(MakeFileStore(dir), "eplb/r/", kToken);  // another process's view
  rank0->SetString("addr/0", "127.0.0.1:4242");
  EXPECT_EQ(rank1->GetString("addr/0", DeadlineAfter(1s)), "127.0.0.1:4242");
  // The key an open run would use, and the same key under another token.
  EXPECT_THROW(MakePrefixStore(MakeFileStore(dir), "eplb/r/")->Get("addr/0", DeadlineAfter(100ms)), TimeoutError);
  auto other = MakeTokenStore(MakeFileStore(dir), "eplb/r/", GenerateJobToken());
  EXPECT_THROW(other->Get("addr/0", DeadlineAfter(100ms)), TimeoutError);
  // Write-once still holds through the token store.
  std::string msg = test::ErrorOf([&] { rank1->SetString("addr/0", "elsewhere"); });
  EXPECT_NE(msg.find("already set"), std::string::npos) << msg;
}

// A stranger with access to an open Redis lists the keys, learns the run's
// prefix from the first one, and writes values of its own under it.
std::string LearnPrefix(test::RedisServer& server, const std::string& run) {
  auto keys = server.Keys("eplb/" + run + "/t-*");
  if (keys.empty()) return "";
  const std::string& k = keys[0];
  return k.substr(0, k.find('/', ("eplb/" + run + "/t-").size()) + 1);
}

TEST(TokenStore, ForeignValuesArePassedOverAlikeByEveryRank) {
  test::RedisServer server;
  auto rank0 = MakeTokenStore(MakeRedisStore(server.host(), server.port()), "eplb/r/", kToken);
  auto rank1 = MakeTokenStore(MakeRedisStore(server.host(), server.port()), "eplb/r/", kToken);
  rank0->SetString("hello", "from rank 0");
  const std::string prefix = LearnPrefix(server, "r");
  ASSERT_FALSE(prefix.empty());
  const std::string authentic = [&] {
    auto keys = server.Keys(prefix + "hello");
    return keys.size() == 1 ? keys[0] : "";
  }();
  ASSERT_FALSE(authentic.empty());
  // Pre-written before the ranks decide: a forged decision, and a value
  // copied from another key of the run (authentic there, foreign here).
  ASSERT_TRUE(server.SetRaw(prefix + "decision/1/0", "abandon"));
  ASSERT_TRUE(server.SetRaw(prefix + "decision/1/0/~1", std::string("ept1") + std::string(16, '\0') + "abandon"));
  auto stands0 = rank0->SetIfAbsent("decision/1/0", std::vector<uint8_t>{'A'});
  auto stands1 = rank1->SetIfAbsent("decision/1/0", std::vector<uint8_t>{'B'});
  EXPECT_EQ(stands0, std::vector<uint8_t>{'A'});
  EXPECT_EQ(stands1, stands0) << "the ranks followed different values";
  EXPECT_EQ(rank1->GetString("decision/1/0", DeadlineAfter(1s)), "A");
  // The foreign values are still there, untouched; the decision is in the third slot.
  EXPECT_EQ(server.Keys(prefix + "decision/1/0*").size(), 3u);
  // Get passes over foreign values too, and waits for the authentic one.
  ASSERT_TRUE(server.SetRaw(prefix + "late", "forged"));
  std::thread writer([&] {
    std::this_thread::sleep_for(100ms);
    rank0->SetString("late", "real");
  });
  EXPECT_EQ(rank1->GetString("late", DeadlineAfter(5s)), "real");
  writer.join();
}

TEST(TokenStore, AValueMovedToAnotherKeyIsForeignThere) {
  test::RedisServer server;
  auto rank0 = MakeTokenStore(MakeRedisStore(server.host(), server.port()), "eplb/r/", kToken);
  rank0->SetString("vote/0", "yes");
  const std::string prefix = LearnPrefix(server, "r");
  ASSERT_FALSE(prefix.empty());
  // Copy rank 0's authentic bytes of vote/0 to vote/1 (readable: no AUTH).
  redisContext* c = redisConnect(server.host().c_str(), server.port());
  ASSERT_TRUE(c != nullptr && c->err == 0);
  auto* reply = static_cast<redisReply*>(redisCommand(c, "GET %s", (prefix + "vote/0").c_str()));
  ASSERT_TRUE(reply != nullptr && reply->type == REDIS_REPLY_STRING);
  const std::string copied(reply->str, reply->len);
  freeReplyObject(reply);
  redisFree(c);
  EXPECT_EQ(copied.find("yes"), copied.size() - 3) << "values are tagged, not hidden";
  ASSERT_TRUE(server.SetRaw(prefix + "vote/1", copied));
  EXPECT_THROW(rank0->Get("vote/1", DeadlineAfter(200ms)), TimeoutError) << "a copied value was taken as vote/1's";
}

TEST(TokenStore, NineForeignValuesInARowAreAnErrorSayingSo) {
  test::RedisServer server;
  auto rank0 = MakeTokenStore(MakeRedisStore(server.host(), server.port()), "eplb/r/", kToken);
  rank0->SetString("first", "x");
  const std::string prefix = LearnPrefix(server, "r");
  ASSERT_FALSE(prefix.empty());
  server.SetRaw(prefix + "k", "junk");
  for (int i = 1; i <= 8; ++i) server.SetRaw(prefix + "k/~" + std::to_string(i), "junk");
  for (auto op : {std::function<void()>([&] { rank0->Get("k", DeadlineAfter(1s)); }),
                  std::function<void()>([&] { rank0->SetString("k", "v"); }),
                  std::function<void()>([&] { rank0->SetIfAbsent("k", std::vector<uint8_t>{1}); })}) {
    try {
      op();
      ADD_FAILURE() << "nine foreign values were not an error";
    } catch (const TimeoutError& e) {
      ADD_FAILURE() << "a timeout, not the foreign values: " << e.what();
    } catch (const Error& e) {
      EXPECT_EQ(e.layer(), "store");
      EXPECT_NE(std::string(e.what()).find("9 foreign values in a row"), std::string::npos) << e.what();
    }
  }
}

TEST(TokenStore, RunKeysComeFromTheTokenAndPrefixedViewsKeepThem) {
  const std::string dir = test::MakeTempDir("eplb-ts-");
  auto a = MakeTokenStore(MakeFileStore(dir), "eplb/r/", kToken);
  auto b = MakeTokenStore(MakeFileStore(dir), "eplb/other-run/", kToken);
  auto c = MakeTokenStore(MakeFileStore(dir), "eplb/r/", GenerateJobToken());
  ASSERT_TRUE(a->RunKey("gloo-pair").has_value());
  EXPECT_EQ(a->RunKey("gloo-pair"), b->RunKey("gloo-pair"));
  EXPECT_NE(a->RunKey("gloo-pair"), a->RunKey("something else"));
  EXPECT_NE(a->RunKey("gloo-pair"), c->RunKey("gloo-pair"));
  EXPECT_EQ(MakePrefixStore(a, "group/")->RunKey("gloo-pair"), a->RunKey("gloo-pair"));
  EXPECT_FALSE(MakeFileStore(dir)->RunKey("gloo-pair").has_value());
  EXPECT_FALSE(MakePrefixStore(MakeFileStore(dir), "eplb/r/")->RunKey("gloo-pair").has_value());
}

TEST(TokenStore, OpenRunStoreUsesTheTokenWhenGivenAndTheOpenPrefixOtherwise) {
  const std::string dir = test::MakeTempDir("eplb-ts-");
  LaunchEnv env;
  env.store_spec = "file:" + dir;
  env.run_id = "r9";
  OpenRunStore("", env)->SetString("open", "1");
  EXPECT_EQ(MakeFileStore(dir)->GetString("eplb/r9/open", DeadlineAfter(1s)), "1");
  env.job_token = kToken;
  auto run = OpenRunStore("", env);
  ASSERT_TRUE(run->RunKey("x").has_value());
  run->SetString("closed", "2");
  EXPECT_THROW(MakeFileStore(dir)->Get("eplb/r9/closed", DeadlineAfter(100ms)), TimeoutError);
  EXPECT_EQ(MakeTokenStore(MakeFileStore(dir), "eplb/r9/", kToken)->GetString("closed", DeadlineAfter(1s)), "2");
}

// A rank racing the others to record a decision per key through the run's
// store (token from the environment); prints what stands.
EPLB_TEST_WORKER(token_race) {
  test::WorkerRank w = test::JoinRun();  // logs (the foreign-value warnings) to stderr
  std::fprintf(stderr, "%s", test::RaceForDecisions(*w.store, w.env.rank, std::stoi(args.at(0))).c_str());
  return 0;
}

// Four rank processes race for decisions a stranger pre-wrote under the
// run's prefix (learned from the Redis keys): every rank follows the same
// value for every key, always one a rank wrote.
TEST(TokenStore, RacingRanksAgreeDespiteForeignValues) {
  constexpr int kKeys = 30;
  test::RedisServer server;
  test::GroupOptions options = test::Ranks("token_race", 4, {std::to_string(kKeys)});
  options.store_spec = server.spec();
  // The stranger needs a key of the run to learn the prefix: the test joins
  // the run first (with its token, as a fifth process of the job would).
  const std::string token = GenerateJobToken();
  options.job_token = false;
  options.env.push_back({"EPLB_JOB_TOKEN", token});
  const std::string run = "race-" + std::to_string(::getpid());
  options.env.push_back({"EPLB_RUN_ID", run});
  MakeTokenStore(MakeRedisStore(server.host(), server.port()), "eplb/" + run + "/", token)->SetString("seen", "1");
  const std::string prefix = LearnPrefix(server, run);
  ASSERT_FALSE(prefix.empty());
  for (int k = 0; k < kKeys; k += 3) ASSERT_TRUE(server.SetRaw(prefix + "decision/" + std::to_string(k), "rank 9"));
  test::RankGroup group(options);
  auto exits = group.Wait(DeadlineAfter(30s));
  std::vector<std::string> first;
  for (const auto& e : exits) {
    ASSERT_TRUE(e.status.ok()) << test::Describe(exits);
    std::vector<std::string> lines;
    std::istringstream in(e.stderr_text);
    for (std::string line; std::getline(in, line);)
      if (line.find('=') != std::string::npos && line.find("foreign") == std::string::npos) lines.push_back(line);
    ASSERT_EQ(lines.size(), static_cast<size_t>(kKeys)) << e.stderr_text;
    for (const auto& l : lines) {
      const std::string v = l.substr(l.find('=') + 1);
      EXPECT_TRUE(v == "rank 0" || v == "rank 1" || v == "rank 2" || v == "rank 3") << l;
    }
    if (first.empty()) first = lines;
    EXPECT_EQ(lines, first) << "rank " << e.rank << " saw other values stand";
    EXPECT_NE(e.stderr_text.find("foreign value"), std::string::npos) << "no rank reported the foreign values";
  }
}

}  // namespace
}  // namespace eplb
