#include "dns/server.h"

#include <future>
#include <thread>

#include <sys/socket.h>
#include <sys/time.h>

#include <asio/connect.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>
#include <gtest/gtest.h>

#include "dns/dns_test_util.h"

namespace trellis::dns {
namespace {

using namespace std::chrono_literals;
using testing::FakeDirectory;
using testing::instance;
using testing::makeQuery;
using testing::parseOrDie;
using testing::QueryOptions;
using testing::SeededRandom;

// A real-time guard on blocking client calls, so a broken server fails the test instead of
// hanging it. It is never what a test waits for.
constexpr int kClientTimeoutMs = 5000;

template <typename Socket> void setReceiveTimeout(Socket& s) {
  timeval tv{kClientTimeoutMs / 1000, 0};
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

// Sends one datagram and waits for one reply (nullopt when none comes within the guard).
std::optional<std::vector<uint8_t>> udpExchange(uint16_t port, const std::vector<uint8_t>& req) {
  asio::io_context io;
  asio::ip::udp::socket s(io, asio::ip::udp::v4());
  setReceiveTimeout(s);
  s.connect({asio::ip::make_address_v4("127.0.0.1"), port});
  s.send(asio::buffer(req));
  std::vector<uint8_t> buf(65535);
  std::error_code ec;
  size_t n = s.receive(asio::buffer(buf), 0, ec);
  if (ec)
    return std::nullopt;
  buf.resize(n);
  return buf;
}

class TcpClient {
public:
  explicit TcpClient(uint16_t port) : socket_(io_) {
    socket_.connect({asio::ip::make_address_v4("127.0.0.1"), port});
    setReceiveTimeout(socket_);
  }

  void send(const std::vector<uint8_t>& msg) { sendRaw(frame(msg)); }
  void sendRaw(const std::vector<uint8_t>& bytes) { asio::write(socket_, asio::buffer(bytes)); }

  static std::vector<uint8_t> frame(const std::vector<uint8_t>& msg) {
    std::vector<uint8_t> out = {static_cast<uint8_t>(msg.size() >> 8),
                                static_cast<uint8_t>(msg.size())};
    out.insert(out.end(), msg.begin(), msg.end());
    return out;
  }

  // The next framed message, or nullopt on EOF/timeout.
  std::optional<std::vector<uint8_t>> receive() {
    std::array<uint8_t, 2> len{};
    std::error_code ec;
    asio::read(socket_, asio::buffer(len), ec);
    if (ec)
      return std::nullopt;
    std::vector<uint8_t> msg((size_t{len[0]} << 8) | len[1]);
    asio::read(socket_, asio::buffer(msg), ec);
    if (ec)
      return std::nullopt;
    return msg;
  }

  // True when the server has closed the connection (EOF rather than the guard timeout).
  bool closedByPeer() {
    uint8_t b;
    std::error_code ec;
    socket_.read_some(asio::buffer(&b, 1), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }

private:
  asio::io_context io_;
  asio::ip::tcp::socket socket_;
};

// A server on a dispatcher running in its own thread, with simulated time so timeouts are
// driven by the test.
class DnsServerTest : public ::testing::Test {
protected:
  DnsServerTest() {
    dir_.addNode("node1", {"10.0.0.1"});
    dir_.addInstance("web", instance("node1", "10.0.0.1", 8080));
    for (int i = 0; i < 80; ++i)
      dir_.addInstance("big", instance(fmt::format("n{}", i), fmt::format("10.3.0.{}", i + 1), 80));
  }

  ~DnsServerTest() override { stop(); }

  void start(ServerConfig cfg = {}) {
    if (cfg.listen.port == 8600)
      cfg.listen = net::parseSocketAddress("127.0.0.1:0").value();
    auto s = Server::create(dispatcher_, std::move(cfg), dir_, random_);
    ASSERT_TRUE(s.ok()) << s.error().message();
    server_ = std::move(s).value();
    thread_ = std::thread([this] { dispatcher_.run(); });
    // Dispatcher::run() restarts a stopped loop, so exit() only sticks once it is running.
    onDispatcher();
  }

  void stop() {
    if (thread_.joinable()) {
      dispatcher_.exit();
      thread_.join();
    }
    server_.reset();
    dispatcher_.runReady();
  }

  // Runs `fn` on the dispatcher thread and waits for it: everything the dispatcher had queued
  // before has run by then.
  void onDispatcher(std::function<void()> fn = [] {}) {
    std::promise<void> done;
    dispatcher_.post([&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }

  // Waits until what the dispatcher is doing now, and what that queues, has run. Two turns:
  // a completion queued from inside a handler (asio's thread-private queue) reaches the main
  // queue only when that handler returns, possibly behind the first barrier.
  void settle() {
    onDispatcher();
    onDispatcher();
  }

  void advance(Duration d) {
    time_.advance(d);
    settle(); // timer callbacks posted by the advance have run
  }

  // Waits until `cond` holds, giving the dispatcher turns in between; fails after the guard.
  template <typename F> bool eventually(F cond) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kClientTimeoutMs);
    while (!cond()) {
      if (std::chrono::steady_clock::now() > deadline)
        return false;
      onDispatcher();
    }
    settle(); // the handler that made `cond` true has finished
    return true;
  }

  uint16_t port() const { return server_->port(); }
  const ServerStats& stats() const { return server_->stats(); }

  FakeDirectory dir_;
  SeededRandom random_;
  SimulatedTimeSource time_;
  Dispatcher dispatcher_{"dns", time_};
  std::unique_ptr<Server> server_;
  std::thread thread_;
};

TEST_F(DnsServerTest, BindsUdpAndTcpOnTheSamePort) {
  start();
  EXPECT_NE(port(), 0);
  EXPECT_EQ(server_->udpAddress().port, server_->tcpAddress().port);
  EXPECT_EQ(server_->tcpAddress().ip.to_string(), "127.0.0.1");
}

TEST_F(DnsServerTest, AnswersOverUdp) {
  start();
  auto reply = udpExchange(port(), makeQuery("web.service.trellis", RrType::kA));
  ASSERT_TRUE(reply);
  auto m = parseOrDie(*reply);
  EXPECT_EQ(m.header.id, 0x1234);
  EXPECT_EQ(m.rcode(), Rcode::kNoError);
  ASSERT_EQ(m.answers.size(), 1u);
  EXPECT_EQ(testing::addressOf(m.answers[0]), "10.0.0.1");
  EXPECT_EQ(stats().udp_queries.load(), 1u);
  EXPECT_EQ(stats().queriesOfType(RrType::kA), 1u);
  EXPECT_EQ(stats().responsesWithRcode(Rcode::kNoError), 1u);
  EXPECT_EQ(stats().responsesWithRcode(Rcode::kNxDomain), 0u);
  EXPECT_EQ(ServerStats::typeLabel(ServerStats::typeIndex(RrType::kSrv)), "SRV");
  EXPECT_EQ(ServerStats::typeLabel(ServerStats::typeIndex(RrType::kMx)), "other");
  EXPECT_EQ(ServerStats::rcodeLabel(ServerStats::rcodeIndex(Rcode::kBadVers)), "BADVERS");
}

TEST_F(DnsServerTest, TruncatedOverUdpThenFullOverTcp) {
  start();
  auto query = makeQuery("big.service.trellis", RrType::kA);
  auto udp = udpExchange(port(), query);
  ASSERT_TRUE(udp);
  auto m = parseOrDie(*udp);
  EXPECT_TRUE(m.header.tc);
  EXPECT_LE(udp->size(), 512u);
  EXPECT_LT(m.answers.size(), 80u);

  TcpClient tcp(port());
  tcp.send(query);
  auto full = tcp.receive();
  ASSERT_TRUE(full);
  auto fm = parseOrDie(*full);
  EXPECT_FALSE(fm.header.tc);
  EXPECT_EQ(fm.answers.size(), 80u);
  EXPECT_GT(full->size(), 512u);
  EXPECT_EQ(stats().truncated.load(), 1u);
  EXPECT_EQ(stats().tcp_queries.load(), 1u);
}

TEST_F(DnsServerTest, SeveralQueriesOnOneTcpConnection) {
  start();
  TcpClient tcp(port());
  // Pipelined: both frames in one write; answers come back in order.
  auto a = TcpClient::frame(makeQuery("web.service.trellis", RrType::kA, QueryOptions{.id = 1}));
  auto b = TcpClient::frame(makeQuery("nosuch.service.trellis", RrType::kA, QueryOptions{.id = 2}));
  a.insert(a.end(), b.begin(), b.end());
  tcp.sendRaw(a);
  auto r1 = tcp.receive();
  auto r2 = tcp.receive();
  ASSERT_TRUE(r1 && r2);
  EXPECT_EQ(parseOrDie(*r1).header.id, 1);
  EXPECT_EQ(parseOrDie(*r1).rcode(), Rcode::kNoError);
  EXPECT_EQ(parseOrDie(*r2).header.id, 2);
  EXPECT_EQ(parseOrDie(*r2).rcode(), Rcode::kNxDomain);
  // And a third after a pause.
  tcp.send(makeQuery("node1.node.trellis", RrType::kA, QueryOptions{.id = 3}));
  auto r3 = tcp.receive();
  ASSERT_TRUE(r3);
  EXPECT_EQ(parseOrDie(*r3).answers.size(), 1u);
  EXPECT_EQ(stats().tcp_accepted.load(), 1u);
}

TEST_F(DnsServerTest, MalformedPacketGetsFormerr) {
  start();
  std::vector<uint8_t> bad = {0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x50, 1, 2};
  auto reply = udpExchange(port(), bad);
  ASSERT_TRUE(reply);
  auto m = parseOrDie(*reply);
  EXPECT_EQ(m.header.id, 0xabcd);
  EXPECT_EQ(m.rcode(), Rcode::kFormErr);
  EXPECT_EQ(stats().malformed.load(), 1u);
  EXPECT_EQ(stats().responsesWithRcode(Rcode::kFormErr), 1u);

  TcpClient tcp(port());
  tcp.send(bad);
  auto r = tcp.receive();
  ASSERT_TRUE(r);
  EXPECT_EQ(parseOrDie(*r).rcode(), Rcode::kFormErr);
  // The framing is intact, so the connection still serves.
  tcp.send(makeQuery("web.service.trellis", RrType::kA));
  r = tcp.receive();
  ASSERT_TRUE(r);
  EXPECT_EQ(parseOrDie(*r).rcode(), Rcode::kNoError);
}

TEST_F(DnsServerTest, SurvivesGarbage) {
  start();
  asio::io_context io;
  asio::ip::udp::socket s(io, asio::ip::udp::v4());
  s.connect({asio::ip::make_address_v4("127.0.0.1"), port()});
  SeededRandom rng(99);
  const int kPackets = 500;
  for (int i = 0; i < kPackets; ++i) {
    std::vector<uint8_t> junk(rng.random() % 300);
    for (auto& c : junk)
      c = static_cast<uint8_t>(rng.random());
    if (junk.size() > 2)
      junk[2] &= 0x07; // standard queries, so most get past the opcode check to FORMERR
    s.send(asio::buffer(junk));
    // In batches, so that the socket buffer cannot overflow and lose any.
    if (i % 20 == 19) {
      ASSERT_TRUE(eventually([&] { return stats().udp_queries.load() == uint64_t(i + 1); }))
          << stats().udp_queries.load() << " of " << i + 1;
    }
  }
  ASSERT_TRUE(eventually([&] { return stats().udp_queries.load() == kPackets; }));
  EXPECT_GT(stats().malformed.load(), kPackets / 2);
  EXPECT_GT(stats().dropped.load(), 0u);

  // Garbage over TCP: a short frame is dropped with the connection...
  {
    TcpClient tcp(port());
    tcp.send({1, 2, 3});
    EXPECT_TRUE(tcp.closedByPeer());
  }
  // ...and a stream that ends mid-frame just closes.
  {
    TcpClient tcp(port());
    tcp.sendRaw({0x01, 0x00, 0x12});
  }

  // Still serving both transports.
  auto reply = udpExchange(port(), makeQuery("web.service.trellis", RrType::kA));
  ASSERT_TRUE(reply);
  EXPECT_EQ(parseOrDie(*reply).answers.size(), 1u);
  TcpClient tcp(port());
  tcp.send(makeQuery("web.service.trellis", RrType::kA));
  auto r = tcp.receive();
  ASSERT_TRUE(r);
  EXPECT_EQ(parseOrDie(*r).answers.size(), 1u);
}

TEST_F(DnsServerTest, IdleTcpConnectionsAreClosed) {
  ServerConfig cfg;
  cfg.tcp_idle_timeout = 10s;
  start(cfg);
  TcpClient tcp(port());
  ASSERT_TRUE(eventually([&] { return stats().tcp_active.load() == 1; }));
  advance(9s);
  EXPECT_EQ(stats().tcp_active.load(), 1u);
  // Activity re-arms the timer.
  tcp.send(makeQuery("web.service.trellis", RrType::kA));
  ASSERT_TRUE(tcp.receive());
  settle(); // the write's completion has re-armed the timer
  advance(9s);
  EXPECT_EQ(stats().tcp_active.load(), 1u);
  advance(2s);
  EXPECT_EQ(stats().tcp_active.load(), 0u);
  EXPECT_EQ(stats().tcp_idle_closed.load(), 1u);
  EXPECT_TRUE(tcp.closedByPeer());
}

TEST_F(DnsServerTest, TcpConnectionLimit) {
  ServerConfig cfg;
  cfg.max_tcp_connections = 2;
  start(cfg);
  TcpClient a(port());
  std::optional<TcpClient> b;
  b.emplace(port());
  ASSERT_TRUE(eventually([&] { return stats().tcp_active.load() == 2; }));
  TcpClient c(port());
  EXPECT_TRUE(c.closedByPeer());
  EXPECT_EQ(stats().tcp_rejected.load(), 1u);
  a.send(makeQuery("web.service.trellis", RrType::kA));
  EXPECT_TRUE(a.receive());
  // Closing one makes room.
  b->sendRaw({0}); // half a length prefix, then hang up
  b.reset();
  ASSERT_TRUE(eventually([&] { return stats().tcp_active.load() == 1; }));
  TcpClient d(port());
  d.send(makeQuery("web.service.trellis", RrType::kA));
  EXPECT_TRUE(d.receive());
}

// A recursor played by the test: a UDP socket that receives forwarded queries.
class FakeRecursor {
public:
  FakeRecursor()
      : socket_(io_, asio::ip::udp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0)) {
    setReceiveTimeout(socket_);
  }
  net::SocketAddress address() const {
    auto ep = socket_.local_endpoint();
    return {ep.address(), ep.port()};
  }
  // Waits for one query; nullopt on the guard timeout.
  std::optional<Message> receive() {
    std::vector<uint8_t> buf(65535);
    std::error_code ec;
    size_t n = socket_.receive_from(asio::buffer(buf), peer_, 0, ec);
    if (ec)
      return std::nullopt;
    buf.resize(n);
    return parseOrDie(buf);
  }
  void reply(const std::vector<uint8_t>& wire) { socket_.send_to(asio::buffer(wire), peer_); }

private:
  asio::io_context io_;
  asio::ip::udp::socket socket_;
  asio::ip::udp::endpoint peer_;
};

std::vector<uint8_t> answerFor(const Message& q, const std::string& address, uint16_t id,
                               bool truncated = false) {
  MessageBuilder b(kMaxMessageSize);
  Header h;
  h.id = id;
  h.qr = true;
  h.tc = truncated;
  h.rd = true;
  h.ra = true;
  b.setHeader(h);
  EXPECT_TRUE(b.addQuestion(q.questions[0]));
  EXPECT_TRUE(b.addRecord(Section::kAnswer, {q.questions[0].name, RrType::kA, kClassIn, 300,
                                             asio::ip::make_address_v4(address)}));
  return b.finish();
}

TEST_F(DnsServerTest, ForwardsOutsideTheZoneToRecursors) {
  FakeRecursor rec;
  ServerConfig cfg;
  cfg.recursors = {rec.address()};
  start(cfg);

  std::promise<std::optional<std::vector<uint8_t>>> client;
  std::thread t([&] {
    client.set_value(
        udpExchange(port(), makeQuery("Example.COM", RrType::kA, QueryOptions{.id = 0x4242})));
  });
  auto fwd = rec.receive();
  ASSERT_TRUE(fwd);
  EXPECT_EQ(fwd->questions[0].name.labels(), (std::vector<std::string>{"Example", "COM"}));
  // A reply with the wrong ID is ignored (RFC 5452)...
  rec.reply(answerFor(*fwd, "6.6.6.6", static_cast<uint16_t>(fwd->header.id + 1)));
  // ...the right one is relayed with the client's ID.
  rec.reply(answerFor(*fwd, "93.184.216.34", fwd->header.id));
  auto reply = client.get_future().get();
  t.join();
  ASSERT_TRUE(reply);
  auto m = parseOrDie(*reply);
  EXPECT_EQ(m.header.id, 0x4242);
  ASSERT_EQ(m.answers.size(), 1u);
  EXPECT_EQ(testing::addressOf(m.answers[0]), "93.184.216.34");
  EXPECT_EQ(stats().forwarded.load(), 1u);

  // In-zone answers advertise recursion now.
  auto in_zone = udpExchange(port(), makeQuery("web.service.trellis", RrType::kA));
  ASSERT_TRUE(in_zone);
  EXPECT_TRUE(parseOrDie(*in_zone).header.ra);
}

TEST_F(DnsServerTest, RecursorTimeoutTriesTheNextThenServfail) {
  FakeRecursor silent1, silent2;
  ServerConfig cfg;
  cfg.recursors = {silent1.address(), silent2.address()};
  cfg.recursor_timeout = 2s;
  start(cfg);

  TcpClient tcp(port());
  tcp.send(makeQuery("example.org", RrType::kAaaa, QueryOptions{.id = 7}));
  ASSERT_TRUE(silent1.receive());
  settle(); // the forward's timer is armed
  advance(2s);
  ASSERT_TRUE(silent2.receive()); // the second recursor gets its turn
  settle();
  advance(1s);
  EXPECT_EQ(stats().forward_failed.load(), 0u);
  advance(1s);
  auto r = tcp.receive();
  ASSERT_TRUE(r);
  auto m = parseOrDie(*r);
  EXPECT_EQ(m.header.id, 7);
  EXPECT_EQ(m.rcode(), Rcode::kServFail);
  EXPECT_EQ(stats().forward_failed.load(), 1u);
  EXPECT_EQ(stats().forwarded.load(), 2u);
  EXPECT_EQ(stats().responsesWithRcode(Rcode::kServFail), 1u);
}

// A truncated UDP answer is asked again of the same recursor over TCP; when that fails (here
// nothing listens for TCP on its port) the next recursor is asked, over UDP first.
TEST_F(DnsServerTest, TruncatedForwardAsksOverTcpThenTheNextRecursor) {
  FakeRecursor udp_only, next;
  ServerConfig cfg;
  cfg.recursors = {udp_only.address(), next.address()};
  start(cfg);

  TcpClient tcp(port());
  tcp.send(makeQuery("example.net", RrType::kA, QueryOptions{.id = 9}));
  auto fwd = udp_only.receive();
  ASSERT_TRUE(fwd);
  udp_only.reply(answerFor(*fwd, "192.0.2.1", fwd->header.id, /*truncated=*/true));
  auto again = next.receive(); // the TCP connect was refused: the next recursor
  ASSERT_TRUE(again);
  next.reply(answerFor(*again, "192.0.2.2", again->header.id));
  auto r = tcp.receive();
  ASSERT_TRUE(r);
  auto m = parseOrDie(*r);
  EXPECT_EQ(m.header.id, 9);
  EXPECT_FALSE(m.header.tc);
  ASSERT_EQ(m.answers.size(), 1u);
  EXPECT_EQ(testing::addressOf(m.answers[0]), "192.0.2.2");
  EXPECT_EQ(stats().forwarded.load(), 2u);
  EXPECT_EQ(stats().forwarded_tcp.load(), 1u);
}

TEST_F(DnsServerTest, OutsideTheZoneWithoutRecursorsIsRefused) {
  start();
  auto reply = udpExchange(port(), makeQuery("example.org", RrType::kA));
  ASSERT_TRUE(reply);
  EXPECT_EQ(parseOrDie(*reply).rcode(), Rcode::kRefused);
}

TEST_F(DnsServerTest, ExplicitPortInUseIsAnError) {
  asio::io_context io;
  asio::ip::tcp::acceptor taken(io, {asio::ip::make_address_v4("127.0.0.1"), 0});
  ServerConfig cfg;
  cfg.listen = {asio::ip::make_address_v4("127.0.0.1"), taken.local_endpoint().port()};
  auto s = Server::create(dispatcher_, cfg, dir_, random_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(s.error().message().find("TCP"), std::string::npos) << s.error().message();
}

TEST_F(DnsServerTest, InvalidConfigIsRejected) {
  ServerConfig cfg;
  cfg.max_tcp_connections = 0;
  auto s = Server::create(dispatcher_, cfg, dir_, random_);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("max_tcp_connections"), std::string::npos);
  cfg = {};
  cfg.zone.domain = "bad..domain";
  EXPECT_FALSE(Server::create(dispatcher_, cfg, dir_, random_).ok());
  cfg = {};
  cfg.recursors = {net::parseSocketAddress("127.0.0.1:0").value()};
  EXPECT_FALSE(Server::create(dispatcher_, cfg, dir_, random_).ok());
}

} // namespace
} // namespace trellis::dns
