// RequestOptions::keep_alive and the Client's idle connection pool, against real sockets on
// 127.0.0.1 (the project's http::Server, or a scripted acceptor where the server must
// misbehave) with a simulated clock for the timeouts.
#include <gtest/gtest.h>

#include "http/client.h"
#include "http/server.h"
#include "http/test_util.h"

namespace trellis::http {
namespace {

using testing::drain;
using testing::loopback;
using testing::pumpUntil;
using namespace std::chrono_literals;

using Slot = std::shared_ptr<std::optional<Result<ClientResponse>>>;

// Accepts any number of connections; for each complete request (head only: the tests send
// GETs) it calls `on_request(connection, index of the connection, index of the request on it)`.
class ScriptedServer {
public:
  struct Conn {
    explicit Conn(asio::io_context& io) : sock(io) {}
    asio::ip::tcp::socket sock;
    std::array<char, 4096> buf;
    std::string received;
    size_t requests = 0;
    bool closed = false; // by either side

    void send(std::string_view data) { asio::write(sock, asio::buffer(data)); }
    void close() {
      asio::error_code ec;
      sock.close(ec);
      closed = true;
    }
  };
  using OnRequest = std::function<void(Conn&, size_t conn, size_t request)>;

  ScriptedServer(Dispatcher& d, OnRequest on_request)
      : io_(d.io()), acceptor_(d.io()), on_request_(std::move(on_request)) {
    auto ep = loopback().tcp();
    acceptor_.open(ep.protocol());
    acceptor_.bind(ep);
    acceptor_.listen();
    accept();
  }
  net::SocketAddress address() const { return net::fromEndpoint(acceptor_.local_endpoint()); }
  size_t accepted() const { return conns_.size(); }
  Conn& conn(size_t i) { return *conns_[i]; }

private:
  void accept() {
    auto c = std::make_shared<Conn>(io_);
    acceptor_.async_accept(c->sock, [this, c](const asio::error_code& ec) {
      if (ec)
        return;
      conns_.push_back(c);
      read(conns_.size() - 1);
      accept();
    });
  }
  void read(size_t i) {
    auto c = conns_[i];
    c->sock.async_read_some(asio::buffer(c->buf),
                            [this, c, i](const asio::error_code& ec, size_t n) {
                              if (ec) {
                                c->closed = true;
                                return;
                              }
                              c->received.append(c->buf.data(), n);
                              size_t ends = 0;
                              for (size_t p = c->received.find("\r\n\r\n"); p != std::string::npos;
                                   p = c->received.find("\r\n\r\n", p + 4))
                                ++ends;
                              while (c->requests < ends && !c->closed)
                                on_request_(*c, i, c->requests++);
                              if (!c->closed)
                                read(i);
                            });
  }

  asio::io_context& io_;
  asio::ip::tcp::acceptor acceptor_;
  OnRequest on_request_;
  std::vector<std::shared_ptr<Conn>> conns_;
};

constexpr std::string_view kOk = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

class KeepAliveTest : public ::testing::Test {
protected:
  KeepAliveTest() { server_settings_.idle_timeout = 60s; }

  void startServer() {
    server_ = std::make_unique<Server>(
        d_, server_settings_, [this](ServerRequest& req, std::shared_ptr<ResponseWriter> w) {
          seen_keep_alive_.push_back(req.keep_alive);
          HeaderMap h;
          if (req.path == "/close")
            h.add("Connection", "close");
          w->send(200, h, "acked " + req.body);
        });
    ASSERT_TRUE(server_->listen(loopback()).ok());
  }

  Slot start(const net::SocketAddress& to, bool keep_alive, std::string target = "/v1/mesh/ack",
             std::string method = "POST") {
    ClientRequest req;
    req.method = std::move(method);
    req.target = std::move(target);
    req.body = req.method == "POST" ? "{\"version\":1}" : "";
    RequestOptions opts;
    opts.keep_alive = keep_alive;
    auto out = std::make_shared<std::optional<Result<ClientResponse>>>();
    client_->request(to, std::move(req), opts,
                     [out](Result<ClientResponse> r) { out->emplace(std::move(r)); });
    return out;
  }

  // Runs one request to completion and expects a 200.
  void expectOk(const net::SocketAddress& to, bool keep_alive, std::string target = "/v1/mesh/ack",
                std::string method = "POST") {
    Slot out = start(to, keep_alive, std::move(target), std::move(method));
    ASSERT_TRUE(pumpUntil(d_, [&] { return out->has_value(); }));
    ASSERT_TRUE((*out)->ok()) << (*out)->error().message();
    EXPECT_EQ((**out)->status, 200);
  }

  // A first request answered and pooled, then a second on the pooled connection that fails
  // as a reset (whatever the retry did); the caller checks how many connections the server saw.
  void expectSecondRequestReset(ScriptedServer& s) {
    expectOk(s.address(), true, "/a", "GET");
    ASSERT_TRUE(pumpUntil(d_, [&] { return client_->idleConnections() == 1; }));
    Slot out = start(s.address(), true, "/b", "GET");
    ASSERT_TRUE(pumpUntil(d_, [&] { return out->has_value(); }));
    ASSERT_FALSE(out->value().ok());
    EXPECT_EQ(clientErrorKind(out->value().error()), ClientErrorKind::kReset);
    drain(d_);
  }

  void advance(Duration by) {
    time_.advance(by);
    drain(d_);
  }

  SimulatedTimeSource time_;
  Dispatcher d_{"keepalive", time_};
  ClientSettings client_settings_;
  std::unique_ptr<Client> client_ = std::make_unique<Client>(d_, client_settings_);
  ServerSettings server_settings_;
  std::unique_ptr<Server> server_;
  std::vector<bool> seen_keep_alive_;
};

TEST_F(KeepAliveTest, SequentialRequestsShareOneConnection) {
  startServer();
  const auto to = server_->boundAddress();
  expectOk(to, true);
  ASSERT_TRUE(pumpUntil(d_, [&] { return client_->idleConnections(to) == 1; }));
  Slot second = start(to, true);
  EXPECT_EQ(client_->idleConnections(), 0u); // taken by the second request
  ASSERT_TRUE(pumpUntil(d_, [&] { return second->has_value(); }));
  ASSERT_TRUE((*second)->ok()) << (*second)->error().message();
  EXPECT_EQ((**second)->body, "acked {\"version\":1}");
  EXPECT_EQ(server_->stats().connections_accepted, 1u);
  EXPECT_EQ(server_->stats().requests, 2u);
  EXPECT_EQ(seen_keep_alive_, (std::vector<bool>{true, true})); // no "Connection: close"
  EXPECT_EQ(client_->idleConnections(to), 1u);
  EXPECT_EQ(server_->connectionCount(), 1u);
}

TEST_F(KeepAliveTest, WithoutKeepAliveEachRequestConnects) {
  startServer();
  const auto to = server_->boundAddress();
  expectOk(to, false);
  expectOk(to, false);
  EXPECT_EQ(server_->stats().connections_accepted, 2u);
  EXPECT_EQ(seen_keep_alive_, (std::vector<bool>{false, false})); // sent "Connection: close"
  EXPECT_EQ(client_->idleConnections(), 0u);
  ASSERT_TRUE(pumpUntil(d_, [&] { return server_->connectionCount() == 0; }));
}

TEST_F(KeepAliveTest, ServerConnectionCloseIsNotPooled) {
  startServer();
  const auto to = server_->boundAddress();
  expectOk(to, true, "/close");
  EXPECT_EQ(client_->idleConnections(), 0u);
  expectOk(to, true);
  EXPECT_EQ(server_->stats().connections_accepted, 2u);
}

TEST_F(KeepAliveTest, CallersConnectionCloseIsNotPooled) {
  startServer();
  const auto to = server_->boundAddress();
  ClientRequest req;
  req.headers.add("Connection", "close");
  RequestOptions opts;
  opts.keep_alive = true;
  std::optional<Result<ClientResponse>> out;
  client_->request(to, req, opts, [&](Result<ClientResponse> r) { out.emplace(std::move(r)); });
  ASSERT_TRUE(pumpUntil(d_, [&] { return out.has_value(); }));
  ASSERT_TRUE(out->ok());
  EXPECT_EQ(client_->idleConnections(), 0u);
}

TEST_F(KeepAliveTest, ServerClosingIdleConnectionIsNoticedWhileIdle) {
  server_settings_.idle_timeout = 10s;
  startServer();
  const auto to = server_->boundAddress();
  expectOk(to, true);
  ASSERT_TRUE(pumpUntil(d_, [&] { return client_->idleConnections() == 1; }));
  advance(11s); // the server's idle timeout, well before the client's pool timeout
  ASSERT_TRUE(pumpUntil(d_, [&] { return client_->idleConnections() == 0; }));
  EXPECT_EQ(server_->stats().idle_timeouts, 1u);
  expectOk(to, true);
  EXPECT_EQ(server_->stats().connections_accepted, 2u);
}

TEST_F(KeepAliveTest, IdleTimeoutClosesPooledConnection) {
  startServer();
  const auto to = server_->boundAddress();
  expectOk(to, true);
  ASSERT_TRUE(pumpUntil(d_, [&] { return client_->idleConnections() == 1; }));
  advance(29s);
  EXPECT_EQ(client_->idleConnections(), 1u);
  advance(2s);
  EXPECT_EQ(client_->idleConnections(), 0u);
  // The client closed it: the server sees the end well before its own 60 s.
  ASSERT_TRUE(pumpUntil(d_, [&] { return server_->connectionCount() == 0; }));
  EXPECT_EQ(server_->stats().idle_timeouts, 0u);
}

TEST_F(KeepAliveTest, PoolKeepsAtMostMaxIdlePerAddress) {
  startServer();
  const auto to = server_->boundAddress();
  std::vector<Slot> outs;
  for (int i = 0; i < 6; ++i) // concurrent: six connections
    outs.push_back(start(to, true));
  ASSERT_TRUE(pumpUntil(d_, [&] {
    return std::all_of(outs.begin(), outs.end(), [](const Slot& s) { return s->has_value(); });
  }));
  for (auto& o : outs)
    ASSERT_TRUE((*o)->ok()) << (*o)->error().message();
  EXPECT_EQ(server_->stats().connections_accepted, 6u);
  EXPECT_EQ(client_->idleConnections(to), 4u);
  ASSERT_TRUE(pumpUntil(d_, [&] { return server_->connectionCount() == 4; }));
}

TEST_F(KeepAliveTest, ZeroMaxIdleKeepsNothing) {
  startServer();
  client_ = std::make_unique<Client>(d_, ClientSettings{.max_idle_per_address = 0});
  const auto to = server_->boundAddress();
  expectOk(to, true);
  expectOk(to, true);
  EXPECT_EQ(client_->idleConnections(), 0u);
  EXPECT_EQ(server_->stats().connections_accepted, 2u);
}

TEST_F(KeepAliveTest, DestroyingTheClientClosesPooledConnections) {
  startServer();
  expectOk(server_->boundAddress(), true);
  ASSERT_TRUE(pumpUntil(d_, [&] { return client_->idleConnections() == 1; }));
  client_.reset();
  ASSERT_TRUE(pumpUntil(d_, [&] { return server_->connectionCount() == 0; }));
}

TEST_F(KeepAliveTest, StreamIsNeverPooled) {
  server_ = std::make_unique<Server>(d_, server_settings_,
                                     [](ServerRequest&, std::shared_ptr<ResponseWriter> w) {
                                       w->startStream(200, {});
                                       w->write("piece");
                                       w->finish();
                                     });
  ASSERT_TRUE(server_->listen(loopback()).ok());
  RequestOptions opts;
  opts.keep_alive = true;
  std::string body;
  std::optional<Status> done;
  Client::StreamCallbacks cbs;
  cbs.on_body = [&](std::string_view p) { body.append(p); };
  cbs.on_done = [&](Status st) { done = st; };
  client_->stream(server_->boundAddress(), {}, opts, cbs);
  ASSERT_TRUE(pumpUntil(d_, [&] { return done.has_value(); }));
  ASSERT_TRUE(done->ok());
  EXPECT_EQ(body, "piece");
  EXPECT_EQ(client_->idleConnections(), 0u);
  ASSERT_TRUE(pumpUntil(d_, [&] { return server_->connectionCount() == 0; }));
}

// The server closes a pooled connection just as the next request goes out on it: that request
// is sent again on a fresh connection.
TEST_F(KeepAliveTest, ReusedConnectionClosedBeforeAnswerIsRetriedOnce) {
  ScriptedServer s(d_, [](ScriptedServer::Conn& c, size_t conn, size_t request) {
    if (conn == 0 && request == 1)
      c.close(); // read the request, then give up without a byte
    else
      c.send(kOk);
  });
  expectOk(s.address(), true, "/a", "GET");
  ASSERT_TRUE(pumpUntil(d_, [&] { return client_->idleConnections() == 1; }));
  expectOk(s.address(), true, "/b", "GET");
  ASSERT_EQ(s.accepted(), 2u);
  EXPECT_EQ(s.conn(0).requests, 2u);
  EXPECT_EQ(s.conn(1).requests, 1u);
  EXPECT_EQ(s.conn(1).received.rfind("GET /b HTTP/1.1\r\n", 0), 0u) << s.conn(1).received;
  EXPECT_EQ(client_->idleConnections(), 1u); // the fresh connection is pooled in turn
}

TEST_F(KeepAliveTest, RetryHappensOnlyOnce) {
  ScriptedServer s(d_, [](ScriptedServer::Conn& c, size_t conn, size_t request) {
    if (conn == 0 && request == 0)
      c.send(kOk);
    else
      c.close();
  });
  expectSecondRequestReset(s);
  EXPECT_EQ(s.accepted(), 2u);
}

TEST_F(KeepAliveTest, NoRetryOnceTheServerStartedAnswering) {
  ScriptedServer s(d_, [](ScriptedServer::Conn& c, size_t, size_t request) {
    if (request == 0) {
      c.send(kOk);
    } else {
      c.send("HTTP/1.1 200 OK\r\n");
      c.close();
    }
  });
  expectSecondRequestReset(s);
  EXPECT_EQ(s.accepted(), 1u);
}

TEST_F(KeepAliveTest, ResponsesThatCannotBeReusedAreNotPooled) {
  const std::vector<std::string> answers = {
      "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",      // HTTP/1.0, no keep-alive
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", // bytes after the response
      "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
  };
  for (const auto& answer : answers) {
    SCOPED_TRACE(answer);
    ScriptedServer s(d_, [&](ScriptedServer::Conn& c, size_t, size_t) { c.send(answer); });
    expectOk(s.address(), true, "/", "GET");
    drain(d_);
    EXPECT_EQ(client_->idleConnections(), 0u);
    ASSERT_TRUE(pumpUntil(d_, [&] { return s.conn(0).closed; })); // the client closed it
  }
}

TEST_F(KeepAliveTest, BytesFromTheServerWhileIdleDropTheConnection) {
  ScriptedServer s(d_, [](ScriptedServer::Conn& c, size_t, size_t) { c.send(kOk); });
  expectOk(s.address(), true, "/", "GET");
  ASSERT_TRUE(pumpUntil(d_, [&] { return client_->idleConnections() == 1; }));
  s.conn(0).send("HTTP/1.1 408 Request Timeout\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return client_->idleConnections() == 0; }));
  expectOk(s.address(), true, "/", "GET");
  EXPECT_EQ(s.accepted(), 2u);
}

} // namespace
} // namespace trellis::http
