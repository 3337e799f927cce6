// Pins IsGlooTimeout to the messages of the Gloo this build links: a real
// two-rank Gloo context (two threads, TCP over loopback, Gloo's own
// FileStore) is made to time out and to lose a connection, and the one
// place that reads Gloo's messages must tell the two apart.
#include "comm/gloo/gloo_errors.h"

#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/transport/tcp/device.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <future>
#include <memory>
#include <string>

namespace eplb::gloo_backend {
namespace {

struct TwoRanks {
  std::string dir;
  std::shared_ptr<gloo::rendezvous::Context> ctx[2];

  TwoRanks() {
    char tmpl[] = "/tmp/eplb-gloo-errors-XXXXXX";
    dir = ::mkdtemp(tmpl);
    gloo::transport::tcp::attr attr;
    attr.hostname = "127.0.0.1";
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto connect = [&](int rank) {
      gloo::rendezvous::FileStore store(dir);
      auto c = std::make_shared<gloo::rendezvous::Context>(rank, 2);
      c->setTimeout(std::chrono::seconds(20));
      c->connectFullMesh(store, device);
      return c;
    };
    auto other = std::async(std::launch::async, connect, 1);
    ctx[0] = connect(0);
    ctx[1] = other.get();
  }
  ~TwoRanks() { std::filesystem::remove_all(dir); }
};

// The message Gloo gives when `wait` fails, or "" when it does not.
template <typename Wait>
std::string GlooMessage(Wait wait) {
  try {
    wait();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(GlooErrors, AReceiveThatRunsOutOfTimeIsATimeout) {
  TwoRanks ranks;
  char byte = 0;
  auto buffer = ranks.ctx[0]->createUnboundBuffer(&byte, 1);
  buffer->recv(1, 7);  // rank 1 never sends
  const std::string message =
      GlooMessage([&] { buffer->waitRecv(nullptr, std::chrono::milliseconds(50)); });
  ASSERT_FALSE(message.empty()) << "Gloo did not time out";
  EXPECT_TRUE(IsGlooTimeout(message)) << message;
}

TEST(GlooErrors, ASendThatRunsOutOfTimeIsATimeout) {
  TwoRanks ranks;
  std::string big(64 << 20, 'x');  // more than loopback's socket buffers hold
  auto buffer = ranks.ctx[0]->createUnboundBuffer(big.data(), big.size());
  buffer->send(1, 7);  // rank 1 never receives
  const std::string message =
      GlooMessage([&] { buffer->waitSend(nullptr, std::chrono::milliseconds(50)); });
  ASSERT_FALSE(message.empty()) << "Gloo did not time out";
  EXPECT_TRUE(IsGlooTimeout(message)) << message;
}

TEST(GlooErrors, AConnectionClosedByThePeerIsNotATimeout) {
  TwoRanks ranks;
  char byte = 0;
  auto buffer = ranks.ctx[0]->createUnboundBuffer(&byte, 1);
  buffer->recv(1, 7);
  ranks.ctx[1].reset();  // rank 1 closes its connections
  const std::string message =
      GlooMessage([&] { buffer->waitRecv(nullptr, std::chrono::seconds(20)); });
  ASSERT_FALSE(message.empty()) << "Gloo did not report the closed connection";
  EXPECT_FALSE(IsGlooTimeout(message)) << message;
}

TEST(GlooErrors, OtherMessagesAreNotTimeouts) {
  EXPECT_FALSE(IsGlooTimeout("Connection closed by peer [127.0.0.1]:4242"));
  EXPECT_FALSE(IsGlooTimeout("connect [127.0.0.1]:4242: Connection refused"));
  EXPECT_TRUE(IsGlooTimeout("Connect timeout [127.0.0.1]:4242"));
}

}  // namespace
}  // namespace eplb::gloo_backend
