#include "http/client.h"

#include <gtest/gtest.h>

#include "http/test_util.h"

namespace trellis::http {
namespace {

using testing::drain;
using testing::loopback;
using testing::pumpUntil;
using testing::RawServer;
using namespace std::chrono_literals;

class ClientTest : public ::testing::Test {
protected:
  // Starts a request to `to` and returns a slot that fills with its result.
  std::shared_ptr<std::optional<Result<ClientResponse>>>
  start(const net::SocketAddress& to, ClientRequest req = {}, RequestOptions opts = {}) {
    auto out = std::make_shared<std::optional<Result<ClientResponse>>>();
    handle_ = client_.request(to, std::move(req), opts,
                              [out](Result<ClientResponse> r) { out->emplace(std::move(r)); });
    return out;
  }

  RealTimeSource time_;
  Dispatcher d_{"client", time_};
  Client client_{d_};
  RequestHandle handle_;
};

TEST_F(ClientTest, SendsAWellFormedRequest) {
  RawServer s(d_);
  ClientRequest req;
  req.method = "POST";
  req.target = "/v1/agent/check/pass?note=ok";
  req.headers.add("X-Token", "t1");
  req.body = "{}";
  auto out = start(s.address(), req);
  ASSERT_TRUE(pumpUntil(d_, [&] { return s.received().find("{}") != std::string::npos; }));
  EXPECT_EQ(s.received(), "POST /v1/agent/check/pass?note=ok HTTP/1.1\r\nX-Token: t1\r\nHost: " +
                              s.address().toString() +
                              "\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
  s.send("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ntrue");
  ASSERT_TRUE(pumpUntil(d_, [&] { return out->has_value(); }));
  ASSERT_TRUE((*out)->ok());
  EXPECT_EQ((**out)->status, 200);
  EXPECT_EQ((**out)->body, "true");
  EXPECT_FALSE(handle_.active());
}

TEST_F(ClientTest, ChunkedResponseWithInterimAndTrailers) {
  RawServer s(d_);
  auto out = start(s.address());
  ASSERT_TRUE(pumpUntil(d_, [&] { return s.received().find("\r\n\r\n") != std::string::npos; }));
  s.send("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         "3\r\nabc\r\n");
  drain(d_);
  EXPECT_FALSE(out->has_value());
  s.send("2\r\nde\r\n0\r\nX-Checksum: 9\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return out->has_value(); }));
  ASSERT_TRUE((*out)->ok()) << (*out)->error().message();
  EXPECT_EQ((**out)->status, 200);
  EXPECT_EQ((**out)->body, "abcde");
  EXPECT_EQ((**out)->trailers.get("X-Checksum").value_or(""), "9");
}

TEST_F(ClientTest, CloseDelimitedResponse) {
  RawServer s(d_);
  auto out = start(s.address());
  ASSERT_TRUE(pumpUntil(d_, [&] { return s.accepted(); }));
  s.send("HTTP/1.0 200 OK\r\n\r\nuntil the end");
  s.close();
  ASSERT_TRUE(pumpUntil(d_, [&] { return out->has_value(); }));
  ASSERT_TRUE((*out)->ok()) << (*out)->error().message();
  EXPECT_EQ((**out)->body, "until the end");
}

TEST_F(ClientTest, HeadRequestExpectsNoBody) {
  RawServer s(d_);
  ClientRequest req;
  req.method = "HEAD";
  auto out = start(s.address(), req);
  ASSERT_TRUE(pumpUntil(d_, [&] { return s.accepted(); }));
  s.send("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return out->has_value(); }));
  ASSERT_TRUE((*out)->ok());
  EXPECT_TRUE((**out)->body.empty());
}

TEST_F(ClientTest, ConnectFailure) {
  // A port that was just free: nothing listens there.
  uint16_t port;
  {
    asio::ip::tcp::acceptor a(d_.io(), loopback().tcp());
    port = a.local_endpoint().port();
  }
  auto out = start(loopback(port));
  ASSERT_TRUE(pumpUntil(d_, [&] { return out->has_value(); }));
  ASSERT_FALSE((*out)->ok());
  EXPECT_EQ(clientErrorKind((*out)->error()), ClientErrorKind::kConnectFailed);
  EXPECT_NE((*out)->error().message().find(loopback(port).toString()), std::string::npos);
}

TEST_F(ClientTest, ResetMidResponse) {
  RawServer s(d_);
  auto out = start(s.address());
  ASSERT_TRUE(pumpUntil(d_, [&] { return s.accepted(); }));
  s.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
  drain(d_);
  s.reset();
  ASSERT_TRUE(pumpUntil(d_, [&] { return out->has_value(); }));
  ASSERT_FALSE((*out)->ok());
  EXPECT_EQ(clientErrorKind((*out)->error()), ClientErrorKind::kReset);
}

TEST_F(ClientTest, ClosedBeforeCompleteIsAReset) {
  RawServer s(d_);
  auto out = start(s.address());
  ASSERT_TRUE(pumpUntil(d_, [&] { return s.accepted(); }));
  s.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
  s.close();
  ASSERT_TRUE(pumpUntil(d_, [&] { return out->has_value(); }));
  ASSERT_FALSE((*out)->ok());
  EXPECT_EQ(clientErrorKind((*out)->error()), ClientErrorKind::kReset);
  EXPECT_NE((*out)->error().message().find("before the response was complete"), std::string::npos);
}

TEST_F(ClientTest, BadResponse) {
  RawServer s(d_);
  auto out = start(s.address());
  ASSERT_TRUE(pumpUntil(d_, [&] { return s.accepted(); }));
  s.send("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab");
  ASSERT_TRUE(pumpUntil(d_, [&] { return out->has_value(); }));
  ASSERT_FALSE((*out)->ok());
  EXPECT_EQ(clientErrorKind((*out)->error()), ClientErrorKind::kBadResponse);
  EXPECT_NE((*out)->error().message().find("conflicting_content_length"), std::string::npos);
}

TEST_F(ClientTest, ResponseTooLarge) {
  RawServer s(d_);
  RequestOptions opts;
  opts.max_response_body_bytes = 10;
  auto out = start(s.address(), {}, opts);
  ASSERT_TRUE(pumpUntil(d_, [&] { return s.accepted(); }));
  s.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n01234567\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return out->has_value(); }));
  ASSERT_FALSE((*out)->ok());
  EXPECT_EQ(clientErrorKind((*out)->error()), ClientErrorKind::kResponseTooLarge);
}

TEST_F(ClientTest, InvalidRequestReportedAsynchronously) {
  ClientRequest req;
  req.headers.add("X-Bad", "a\r\nInjected: 1");
  auto out = start(loopback(1), req);
  EXPECT_FALSE(out->has_value()); // never from inside request()
  ASSERT_TRUE(pumpUntil(d_, [&] { return out->has_value(); }));
  EXPECT_EQ(clientErrorKind((*out)->error()), ClientErrorKind::kInvalidRequest);
  ClientRequest bad_target;
  bad_target.target = "/a b";
  out = start(loopback(1), bad_target);
  ASSERT_TRUE(pumpUntil(d_, [&] { return out->has_value(); }));
  EXPECT_EQ(clientErrorKind((*out)->error()), ClientErrorKind::kInvalidRequest);
}

TEST_F(ClientTest, CancelSuppressesCallbackAndClosesConnection) {
  RawServer s(d_);
  auto out = start(s.address());
  ASSERT_TRUE(pumpUntil(d_, [&] { return s.accepted(); }));
  EXPECT_EQ(client_.activeRequests(), 1u);
  handle_.cancel();
  ASSERT_TRUE(pumpUntil(d_, [&] { return s.peerClosed(); }));
  drain(d_);
  EXPECT_FALSE(out->has_value());
  EXPECT_EQ(client_.activeRequests(), 0u);
}

TEST_F(ClientTest, StreamingDeliversPiecesAsTheyArrive) {
  RawServer s(d_);
  std::string body;
  int pieces = 0;
  std::optional<Status> done;
  Client::StreamCallbacks cbs;
  cbs.on_body = [&](std::string_view p) {
    body.append(p);
    ++pieces;
  };
  cbs.on_done = [&](Status st) { done = st; };
  RequestOptions opts;
  opts.timeout = Duration::zero();
  client_.stream(s.address(), {}, opts, cbs);
  ASSERT_TRUE(pumpUntil(d_, [&] { return s.accepted(); }));
  s.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return body == "first"; }));
  s.send("6\r\nsecond\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return body == "firstsecond"; }));
  EXPECT_FALSE(done.has_value());
  s.send("0\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return done.has_value(); }));
  EXPECT_TRUE(done->ok());
  EXPECT_GE(pieces, 2);
}

TEST_F(ClientTest, StreamBrokenMidwayReportsError) {
  RawServer s(d_);
  std::optional<Status> done;
  Client::StreamCallbacks cbs;
  cbs.on_done = [&](Status st) { done = st; };
  RequestOptions opts;
  opts.timeout = Duration::zero();
  client_.stream(s.address(), {}, opts, cbs);
  ASSERT_TRUE(pumpUntil(d_, [&] { return s.accepted(); }));
  s.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n");
  s.close();
  ASSERT_TRUE(pumpUntil(d_, [&] { return done.has_value(); }));
  ASSERT_FALSE(done->ok());
  EXPECT_EQ(clientErrorKind(done->error()), ClientErrorKind::kReset);
}

// Timeouts on simulated time.
class ClientTimeoutTest : public ::testing::Test {
protected:
  void advance(Duration by) {
    time_.advance(by);
    drain(d_);
  }
  SimulatedTimeSource time_;
  Dispatcher d_{"sim", time_};
  Client client_{d_};
};

TEST_F(ClientTimeoutTest, TotalTimeout) {
  RawServer s(d_); // accepts and never answers
  std::optional<Result<ClientResponse>> out;
  client_.request(s.address(), "GET", "/", {}, "", 30s,
                  [&](Result<ClientResponse> r) { out.emplace(std::move(r)); });
  ASSERT_TRUE(pumpUntil(d_, [&] { return s.received().find("\r\n\r\n") != std::string::npos; }));
  advance(29s);
  EXPECT_FALSE(out.has_value());
  advance(2s);
  ASSERT_TRUE(pumpUntil(d_, [&] { return out.has_value(); }));
  ASSERT_FALSE(out->ok());
  EXPECT_EQ(clientErrorKind(out->error()), ClientErrorKind::kTimeout);
  EXPECT_NE(out->error().message().find("timed out after 30s"), std::string::npos)
      << out->error().message();
  ASSERT_TRUE(pumpUntil(d_, [&] { return s.peerClosed(); }));
}

TEST_F(ClientTimeoutTest, IdleTimeoutOnSilentStream) {
  RawServer s(d_);
  std::optional<Status> done;
  Client::StreamCallbacks cbs;
  cbs.on_done = [&](Status st) { done = st; };
  RequestOptions opts;
  opts.timeout = Duration::zero();
  opts.idle_timeout = 90s;
  client_.stream(s.address(), {}, opts, cbs);
  ASSERT_TRUE(pumpUntil(d_, [&] { return s.accepted(); }));
  s.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n");
  drain(d_);
  advance(80s);
  s.send("1\r\ny\r\n"); // activity re-arms the idle timer
  drain(d_);
  advance(80s);
  EXPECT_FALSE(done.has_value());
  advance(20s);
  ASSERT_TRUE(pumpUntil(d_, [&] { return done.has_value(); }));
  EXPECT_EQ(clientErrorKind(done->error()), ClientErrorKind::kTimeout);
}

TEST_F(ClientTimeoutTest, ConnectTimeout) {
  // A listener whose accept queue is full and never drained: further SYNs go unanswered,
  // so connecting hangs until the connect timeout.
  asio::ip::tcp::acceptor full(d_.io());
  full.open(asio::ip::tcp::v4());
  full.bind(loopback().tcp());
  full.listen(0);
  const auto addr = net::fromEndpoint(full.local_endpoint());
  std::vector<std::unique_ptr<asio::ip::tcp::socket>> fillers;
  for (int i = 0; i < 4; ++i) {
    fillers.push_back(std::make_unique<asio::ip::tcp::socket>(d_.io()));
    fillers.back()->async_connect(addr.tcp(), [](const asio::error_code&) {});
  }
  drain(d_);
  std::optional<Result<ClientResponse>> out;
  ClientRequest req;
  RequestOptions opts;
  opts.connect_timeout = 2s;
  client_.request(addr, req, opts, [&](Result<ClientResponse> r) { out.emplace(std::move(r)); });
  drain(d_);
  if (out.has_value())
    GTEST_SKIP() << "the kernel completed the connection despite the full backlog";
  advance(3s);
  ASSERT_TRUE(pumpUntil(d_, [&] { return out.has_value(); }));
  ASSERT_FALSE(out->ok());
  EXPECT_EQ(clientErrorKind(out->error()), ClientErrorKind::kTimeout);
  EXPECT_NE(out->error().message().find("connect to"), std::string::npos);
}

} // namespace
} // namespace trellis::http
