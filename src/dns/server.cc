#include "dns/server.h"

#include <unordered_map>

#include <asio/read.hpp>
#include <asio/write.hpp>

#include "base/log.h"

namespace trellis::dns {

namespace {

// With port 0, how many port numbers to try before giving up on finding one free for both
// UDP and TCP.
constexpr int kMaxPortPairAttempts = 32;
// After a failed accept (e.g. out of file descriptors), wait before accepting again rather
// than spinning.
constexpr Duration kAcceptRetryDelay = std::chrono::milliseconds(100);
constexpr size_t kUdpBufferSize = 65535;

} // namespace

// ---- stats ----

size_t ServerStats::typeIndex(RrType type) {
  for (size_t i = 0; i < kCountedTypes.size(); ++i)
    if (kCountedTypes[i] == type)
      return i;
  return kOtherType;
}

size_t ServerStats::rcodeIndex(Rcode rcode) {
  for (size_t i = 0; i < kCountedRcodes.size(); ++i)
    if (kCountedRcodes[i] == rcode)
      return i;
  return kOtherRcode;
}

std::string ServerStats::typeLabel(size_t index) {
  return index < kCountedTypes.size() ? rrTypeName(kCountedTypes[index]) : "other";
}

std::string ServerStats::rcodeLabel(size_t index) {
  return index < kCountedRcodes.size() ? rcodeName(kCountedRcodes[index]) : "other";
}

Status ServerConfig::validate() const {
  TRELLIS_RETURN_IF_ERROR(zone.validate());
  if (max_tcp_connections == 0)
    return makeError(ErrorCode::kInvalidArgument, "max_tcp_connections must be at least 1");
  if (tcp_idle_timeout <= Duration::zero())
    return makeError(ErrorCode::kInvalidArgument, "tcp_idle_timeout must be positive");
  if (recursor_timeout <= Duration::zero())
    return makeError(ErrorCode::kInvalidArgument, "recursor_timeout must be positive");
  if (max_pending_forwards == 0)
    return makeError(ErrorCode::kInvalidArgument, "max_pending_forwards must be at least 1");
  for (size_t i = 0; i < recursors.size(); ++i)
    if (recursors[i].port == 0)
      return makeError(ErrorCode::kInvalidArgument, "recursors[{}]: {} has port 0", i,
                       recursors[i].toString());
  return okStatus();
}

class TcpConnection;
class Forward;

struct Server::Core : std::enable_shared_from_this<Server::Core> {
  Core(Dispatcher& d, ServerConfig cfg, std::unique_ptr<Zone> z, RandomSource& r)
      : dispatcher(d), config(std::move(cfg)), zone(std::move(z)), random(r), udp(d.io()),
        acceptor(d.io()), udp_buf(kUdpBufferSize) {}

  Status bind();
  void start();
  void stop();

  void receiveUdp();
  void onUdp(size_t n);
  void sendUdp(const asio::ip::udp::endpoint& peer, const std::vector<uint8_t>& wire);
  void acceptTcp();

  // Counts a zone response: its question type, rcode and what went wrong.
  void account(const ZoneResponse& r);
  void countRcode(Rcode rcode) { stats.responses_by_rcode[ServerStats::rcodeIndex(rcode)]++; }
  // Sends `query` (whose wire form is `request`) to the recursors; `reply` gets the answer or
  // a SERVFAIL. Not called back after stop().
  void forward(const Query& query, std::span<const uint8_t> request, Transport transport,
               std::function<void(std::vector<uint8_t>)> reply);

  Dispatcher& dispatcher;
  ServerConfig config;
  std::unique_ptr<Zone> zone;
  RandomSource& random;
  ServerStats stats;
  asio::ip::udp::socket udp;
  asio::ip::tcp::acceptor acceptor;
  std::vector<uint8_t> udp_buf;
  asio::ip::udp::endpoint udp_peer;
  std::unordered_map<TcpConnection*, std::shared_ptr<TcpConnection>> conns;
  std::unordered_map<Forward*, std::shared_ptr<Forward>> forwards;
  std::unique_ptr<Timer> accept_retry;
  bool stopped = false;
};

// ---- TCP connections ----

// One client connection: reads a length-prefixed query, answers it, then reads the next
// (RFC 7766 pipelining is served in order). Closed when idle for tcp_idle_timeout while
// waiting for the peer, on any framing error, or when the server stops.
class TcpConnection : public std::enable_shared_from_this<TcpConnection> {
public:
  TcpConnection(std::shared_ptr<Server::Core> core, asio::ip::tcp::socket socket)
      : core_(std::move(core)), socket_(std::move(socket)) {
    idle_ = core_->dispatcher.createTimer([this] {
      core_->stats.tcp_idle_closed++;
      close();
    });
  }

  void start() { readLength(); }

  // Idempotent; the connection is destroyed once no handler holds it.
  void close() {
    if (closed_)
      return;
    closed_ = true;
    auto self = shared_from_this(); // the erase below may drop the last other owner
    idle_->disable();
    std::error_code ec;
    socket_.close(ec);
    core_->stats.tcp_active--;
    core_->conns.erase(this);
    core_.reset(); // breaks the cycle with Core
  }

private:
  void readLength() {
    idle_->enable(core_->config.tcp_idle_timeout);
    asio::async_read(socket_, asio::buffer(len_buf_),
                     [self = shared_from_this()](const std::error_code& ec, size_t) {
                       if (self->closed_)
                         return;
                       if (ec) {
                         self->close();
                         return;
                       }
                       size_t len = (size_t{self->len_buf_[0]} << 8) | self->len_buf_[1];
                       self->readBody(len);
                     });
  }

  void readBody(size_t len) {
    body_.resize(len);
    asio::async_read(socket_, asio::buffer(body_),
                     [self = shared_from_this()](const std::error_code& ec, size_t) {
                       if (self->closed_)
                         return;
                       if (ec) {
                         self->close();
                         return;
                       }
                       self->onQuery();
                     });
  }

  void onQuery() {
    idle_->disable();
    core_->stats.tcp_queries++;
    ZoneResponse resp = core_->zone->handle(body_, Transport::kTcp);
    core_->account(resp);
    switch (resp.action) {
    case ZoneResponse::Action::kDrop:
      // Without a readable header the stream may be out of step: hang up.
      close();
      return;
    case ZoneResponse::Action::kReply:
      write(std::move(resp.wire));
      return;
    case ZoneResponse::Action::kForward: {
      std::weak_ptr<TcpConnection> weak = weak_from_this();
      core_->forward(*resp.query, body_, Transport::kTcp, [weak](std::vector<uint8_t> wire) {
        if (auto self = weak.lock(); self && !self->closed_)
          self->write(std::move(wire));
      });
      return;
    }
    }
  }

  void write(std::vector<uint8_t> wire) {
    out_.clear();
    out_.push_back(static_cast<uint8_t>(wire.size() >> 8));
    out_.push_back(static_cast<uint8_t>(wire.size()));
    out_.insert(out_.end(), wire.begin(), wire.end());
    // A peer that stops reading is as idle as one that stops writing.
    idle_->enable(core_->config.tcp_idle_timeout);
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this()](const std::error_code& ec, size_t) {
                        if (self->closed_)
                          return;
                        if (ec) {
                          self->close();
                          return;
                        }
                        self->readLength();
                      });
  }

  std::shared_ptr<Server::Core> core_;
  asio::ip::tcp::socket socket_;
  std::unique_ptr<Timer> idle_;
  std::array<uint8_t, 2> len_buf_{};
  std::vector<uint8_t> body_;
  std::vector<uint8_t> out_;
  bool closed_ = false;
};

// ---- forwarding ----

// One query forwarded to the recursors over UDP, one at a time in configured order, each
// with its own socket (a fresh ephemeral port), a random ID and recursor_timeout. A reply
// counts only if it comes from the recursor (connected socket), carries our ID and repeats
// our question (RFC 5452). A reply with TC set is asked again of the same recursor over TCP
// (RFC 7766 section 5), with a new ID, within a new recursor_timeout.
class Forward : public std::enable_shared_from_this<Forward> {
public:
  using Done = std::function<void(std::vector<uint8_t>)>;

  Forward(Server::Core& core, Query query, std::span<const uint8_t> request, Transport transport,
          Done done)
      : core_(core), query_(std::move(query)), request_(request.begin(), request.end()),
        transport_(transport), done_(std::move(done)), buf_(kUdpBufferSize) {
    timer_ = core_.dispatcher.createTimer([this] { tryNext(); });
  }

  void start() { tryNext(); }

  // Stops without calling back (the server is going away).
  void cancel() {
    finished_ = true;
    timer_->disable();
    closeSockets();
  }

private:
  void closeSockets() {
    std::error_code ec;
    if (udp_)
      udp_->close(ec);
    if (tcp_)
      tcp_->close(ec);
  }

  // A fresh random ID in the request for the next attempt.
  void newId() {
    upstream_id_ = static_cast<uint16_t>(core_.random.uniform(65536));
    request_[0] = static_cast<uint8_t>(upstream_id_ >> 8);
    request_[1] = static_cast<uint8_t>(upstream_id_);
  }

  void tryNext() {
    ++attempt_; // handlers of earlier attempts see a stale number and stand down
    timer_->disable();
    closeSockets();
    buf_.resize(kUdpBufferSize);
    const auto& recursors = core_.config.recursors;
    while (next_ < recursors.size()) {
      const net::SocketAddress& r = recursors[next_++];
      std::error_code ec;
      udp_.emplace(core_.dispatcher.io());
      udp_->open(r.ip.is_v4() ? asio::ip::udp::v4() : asio::ip::udp::v6(), ec);
      if (!ec)
        udp_->connect(r.udp(), ec);
      newId();
      if (!ec)
        udp_->send(asio::buffer(request_), 0, ec);
      if (ec) {
        TLOG_DEBUG("dns: forwarding to {} failed: {}", r.toString(), ec.message());
        closeSockets();
        continue;
      }
      core_.stats.forwarded++;
      timer_->enable(core_.config.recursor_timeout);
      receive();
      return;
    }
    core_.stats.forward_failed++;
    core_.countRcode(Rcode::kServFail);
    finish(core_.zone->errorReply(query_, Rcode::kServFail));
  }

  void receive() {
    udp_->async_receive(asio::buffer(buf_), [self = shared_from_this(), attempt = attempt_](
                                                const std::error_code& ec, size_t n) {
      if (self->finished_ || attempt != self->attempt_)
        return;
      self->onReceive(ec, n);
    });
  }

  void onReceive(const std::error_code& ec, size_t n) {
    if (ec) {
      // E.g. ECONNREFUSED from an ICMP port unreachable: this recursor is not there.
      tryNext();
      return;
    }
    std::span<const uint8_t> wire(buf_.data(), n);
    auto header = parseHeader(wire);
    if (!header || !header->qr || header->id != upstream_id_) {
      receive(); // not our answer; keep waiting until the timer says otherwise
      return;
    }
    answer(wire, /*over_tcp=*/false);
  }

  // The same recursor, over TCP: a 2-byte length and the request with a new ID, then the
  // answer's length and the answer (RFC 1035 4.2.2).
  void askOverTcp() {
    ++attempt_;
    timer_->disable();
    closeSockets();
    const net::SocketAddress& r = core_.config.recursors[next_ - 1];
    newId();
    frame_.assign(
        {static_cast<uint8_t>(request_.size() >> 8), static_cast<uint8_t>(request_.size())});
    frame_.insert(frame_.end(), request_.begin(), request_.end());
    tcp_.emplace(core_.dispatcher.io());
    core_.stats.forwarded_tcp++;
    timer_->enable(core_.config.recursor_timeout);
    auto step = [self = shared_from_this(), attempt = attempt_](auto next) {
      return [self, attempt, next](const std::error_code& ec, auto&&...) {
        if (self->finished_ || attempt != self->attempt_)
          return;
        if (ec) {
          TLOG_DEBUG("dns: forwarding over tcp to {} failed: {}",
                     self->core_.config.recursors[self->next_ - 1].toString(), ec.message());
          self->tryNext();
          return;
        }
        next(*self);
      };
    };
    auto read_answer = [step](Forward& f) {
      const size_t len = (size_t(f.frame_[0]) << 8) | f.frame_[1];
      if (len < kHeaderSize) {
        f.tryNext(); // not a DNS message
        return;
      }
      f.buf_.resize(len);
      asio::async_read(*f.tcp_, asio::buffer(f.buf_), step([](Forward& g) {
        g.answer(std::span<const uint8_t>(g.buf_.data(), g.buf_.size()),
                 /*over_tcp=*/true);
      }));
    };
    auto read_length = [step, read_answer](Forward& f) {
      asio::async_read(*f.tcp_, asio::buffer(f.frame_.data(), 2), step(read_answer));
    };
    auto write = [step, read_length](Forward& f) {
      asio::async_write(*f.tcp_, asio::buffer(f.frame_), step(read_length));
    };
    tcp_->async_connect(r.tcp(), step(write));
  }

  // A recursor's answer (from its connected UDP socket or our TCP connection): relayed if it
  // is ours, else the next recursor is tried.
  void answer(std::span<const uint8_t> wire, bool over_tcp) {
    auto msg = parseMessage(wire);
    if (!msg || !msg->header.qr || msg->header.id != upstream_id_ || msg->questions.size() != 1 ||
        !msg->questions[0].name.equals(query_.question.name) ||
        msg->questions[0].type != query_.question.type ||
        msg->questions[0].klass != query_.question.klass) {
      tryNext();
      return;
    }
    if (msg->header.tc && !over_tcp) {
      askOverTcp();
      return;
    }
    core_.countRcode(msg->rcode());
    std::vector<uint8_t> reply(wire.begin(), wire.end());
    reply[0] = static_cast<uint8_t>(query_.header.id >> 8);
    reply[1] = static_cast<uint8_t>(query_.header.id);
    if (reply.size() > core_.zone->replyLimit(query_, transport_)) {
      // Too big for the client: tell it to retry over TCP.
      MessageBuilder b(kMinUdpPayload);
      Header h = msg->header;
      h.id = query_.header.id;
      h.tc = true;
      b.setHeader(h);
      (void)b.addQuestion(query_.question);
      if (query_.edns) {
        Edns e;
        e.udp_payload_size = core_.config.zone.max_udp_payload;
        (void)b.addEdns(e);
      }
      reply = b.finish();
      core_.stats.truncated++;
    }
    finish(std::move(reply));
  }

  void finish(std::vector<uint8_t> reply) {
    auto self = shared_from_this(); // the erase below may drop the last other owner
    finished_ = true;
    timer_->disable();
    closeSockets();
    core_.forwards.erase(this);
    done_(std::move(reply));
  }

  Server::Core& core_; // outlives every forward not yet cancelled
  Query query_;
  std::vector<uint8_t> request_;
  Transport transport_;
  Done done_;
  std::vector<uint8_t> buf_;
  std::vector<uint8_t> frame_; // over TCP: the framed request, then the answer's length
  std::optional<asio::ip::udp::socket> udp_;
  std::optional<asio::ip::tcp::socket> tcp_;
  std::unique_ptr<Timer> timer_;
  size_t next_ = 0;
  uint64_t attempt_ = 0;
  uint16_t upstream_id_ = 0;
  bool finished_ = false;
};

// ---- core ----

Status Server::Core::bind() {
  const net::SocketAddress& want = config.listen;
  for (int attempt = 0; attempt < kMaxPortPairAttempts; ++attempt) {
    std::error_code ec;
    udp.open(want.ip.is_v4() ? asio::ip::udp::v4() : asio::ip::udp::v6(), ec);
    if (!ec)
      udp.bind(want.udp(), ec);
    if (ec)
      return makeError(ErrorCode::kUnavailable, "dns: cannot bind UDP {}: {}", want.toString(),
                       ec.message());
    uint16_t port = udp.local_endpoint(ec).port();
    asio::ip::tcp::endpoint tep(want.ip, port);
    acceptor.open(tep.protocol(), ec);
    if (!ec)
      acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec)
      acceptor.bind(tep, ec);
    if (!ec)
      acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (!ec) {
      udp.non_blocking(true, ec);
      if (ec)
        return makeError(ErrorCode::kIo, "dns: cannot make the UDP socket non-blocking: {}",
                         ec.message());
      return okStatus();
    }
    std::error_code ignored;
    acceptor.close(ignored);
    udp.close(ignored);
    if (want.port != 0 || ec != asio::error::address_in_use)
      return makeError(ErrorCode::kUnavailable, "dns: cannot listen on TCP {}: {}",
                       net::fromEndpoint(tep).toString(), ec.message());
    // UDP's free port is taken for TCP: try another.
  }
  return makeError(ErrorCode::kUnavailable,
                   "dns: found no port free for both UDP and TCP on {} in {} attempts",
                   want.ip.to_string(), kMaxPortPairAttempts);
}

void Server::Core::start() {
  accept_retry = dispatcher.createTimer([this] { acceptTcp(); });
  receiveUdp();
  acceptTcp();
}

void Server::Core::stop() {
  stopped = true;
  std::error_code ec;
  udp.close(ec);
  acceptor.close(ec);
  if (accept_retry)
    accept_retry->disable();
  auto conns_copy = conns;
  for (auto& [ptr, conn] : conns_copy)
    conn->close();
  for (auto& [ptr, fwd] : forwards)
    fwd->cancel();
  forwards.clear();
}

// Datagrams answered per wake-up of the UDP socket beyond the first.
constexpr int kUdpBurst = 64;

void Server::Core::receiveUdp() {
  if (!udp.non_blocking()) {
    std::error_code ec;
    udp.non_blocking(true, ec);
  }
  udp.async_receive_from(asio::buffer(udp_buf), udp_peer,
                         [self = shared_from_this()](const std::error_code& ec, size_t n) {
                           if (self->stopped)
                             return;
                           if (!ec) {
                             self->onUdp(n);
                             // Drain what else is queued before going back to epoll: one
                             // wake-up serves a burst (bounded, so TCP clients get a turn).
                             for (int i = 0; i < kUdpBurst && !self->stopped; ++i) {
                               std::error_code rec;
                               size_t m = self->udp.receive_from(asio::buffer(self->udp_buf),
                                                                 self->udp_peer, 0, rec);
                               if (rec)
                                 break;
                               self->onUdp(m);
                             }
                           } else if (ec != asio::error::operation_aborted) {
                             TLOG_DEBUG("dns: UDP receive: {}", ec.message());
                           }
                           // ICMP errors from earlier replies surface here; keep serving.
                           self->receiveUdp();
                         });
}

void Server::Core::onUdp(size_t n) {
  stats.udp_queries++;
  std::span<const uint8_t> request(udp_buf.data(), n);
  ZoneResponse resp = zone->handle(request, Transport::kUdp);
  account(resp);
  switch (resp.action) {
  case ZoneResponse::Action::kDrop:
    return;
  case ZoneResponse::Action::kReply:
    sendUdp(udp_peer, resp.wire);
    return;
  case ZoneResponse::Action::kForward:
    forward(*resp.query, request, Transport::kUdp,
            [self = shared_from_this(), peer = udp_peer](std::vector<uint8_t> wire) {
              if (!self->stopped)
                self->sendUdp(peer, wire);
            });
    return;
  }
}

void Server::Core::sendUdp(const asio::ip::udp::endpoint& peer, const std::vector<uint8_t>& wire) {
  // Non-blocking: when the socket buffer is full the reply is dropped and the client
  // retries, as with any lost datagram.
  std::error_code ec;
  udp.send_to(asio::buffer(wire), peer, 0, ec);
  if (ec)
    stats.udp_send_errors++;
}

void Server::Core::acceptTcp() {
  acceptor.async_accept(
      [self = shared_from_this()](const std::error_code& ec, asio::ip::tcp::socket socket) {
        if (self->stopped)
          return;
        if (ec) {
          if (ec != asio::error::operation_aborted) {
            TLOG_WARN("dns: TCP accept failed: {}; retrying in {}", ec.message(),
                      formatDuration(kAcceptRetryDelay));
            self->accept_retry->enable(kAcceptRetryDelay);
          }
          return;
        }
        if (self->conns.size() >= self->config.max_tcp_connections) {
          self->stats.tcp_rejected++;
          std::error_code ignored;
          socket.close(ignored);
        } else {
          self->stats.tcp_accepted++;
          self->stats.tcp_active++;
          auto conn = std::make_shared<TcpConnection>(self, std::move(socket));
          self->conns.emplace(conn.get(), conn);
          conn->start();
        }
        self->acceptTcp();
      });
}

void Server::Core::account(const ZoneResponse& r) {
  if (r.qtype)
    stats.queries_by_type[ServerStats::typeIndex(*r.qtype)]++;
  if (r.malformed)
    stats.malformed++;
  switch (r.action) {
  case ZoneResponse::Action::kDrop:
    stats.dropped++;
    break;
  case ZoneResponse::Action::kReply:
    countRcode(r.rcode);
    if (r.truncated)
      stats.truncated++;
    break;
  case ZoneResponse::Action::kForward:
    break; // counted when the forward finishes
  }
}

void Server::Core::forward(const Query& query, std::span<const uint8_t> request,
                           Transport transport, std::function<void(std::vector<uint8_t>)> reply) {
  if (forwards.size() >= config.max_pending_forwards) {
    stats.forward_rejected++;
    countRcode(Rcode::kServFail);
    reply(zone->errorReply(query, Rcode::kServFail));
    return;
  }
  auto fwd = std::make_shared<Forward>(*this, query, request, transport, std::move(reply));
  forwards.emplace(fwd.get(), fwd);
  fwd->start();
}

// ---- server ----

Result<std::unique_ptr<Server>> Server::create(Dispatcher& dispatcher, ServerConfig config,
                                               Directory& directory, RandomSource& random) {
  TRELLIS_RETURN_IF_ERROR(config.validate());
  config.zone.recursion_available = !config.recursors.empty();
  auto zone = Zone::create(config.zone, directory, random, dispatcher.timeSource());
  if (!zone)
    return zone.error();
  auto core =
      std::make_shared<Core>(dispatcher, std::move(config), std::move(zone).value(), random);
  TRELLIS_RETURN_IF_ERROR(core->bind());
  core->start();
  TLOG_INFO("dns: serving {} on udp+tcp {}", core->config.zone.domain,
            net::fromEndpoint(core->acceptor.local_endpoint()).toString());
  return std::unique_ptr<Server>(new Server(std::move(core)));
}

Server::~Server() {
  core_->stop();
}

net::SocketAddress Server::udpAddress() const {
  std::error_code ec;
  auto ep = core_->udp.local_endpoint(ec);
  return {ep.address(), ep.port()};
}

net::SocketAddress Server::tcpAddress() const {
  std::error_code ec;
  return net::fromEndpoint(core_->acceptor.local_endpoint(ec));
}

const ServerStats& Server::stats() const {
  return core_->stats;
}

const Zone& Server::zone() const {
  return *core_->zone;
}

} // namespace trellis::dns
