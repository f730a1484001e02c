#include "http/client.h"

#include <algorithm>
#include <array>
#include <list>
#include <map>
#include <optional>

#include <cerrno>

#include <sys/socket.h>

#include <asio/ip/tcp.hpp>
#include <asio/write.hpp>

#include "base/units.h"

namespace trellis::http {

ClientErrorKind clientErrorKind(const Error& e) {
  switch (e.code()) {
  case ErrorCode::kUnavailable:
    return ClientErrorKind::kConnectFailed;
  case ErrorCode::kDeadlineExceeded:
    return ClientErrorKind::kTimeout;
  case ErrorCode::kIo:
    return ClientErrorKind::kReset;
  case ErrorCode::kInvalidArgument:
    return ClientErrorKind::kBadResponse;
  case ErrorCode::kResourceExhausted:
    return ClientErrorKind::kResponseTooLarge;
  case ErrorCode::kFailedPrecondition:
    return ClientErrorKind::kInvalidRequest;
  default:
    return ClientErrorKind::kNone;
  }
}

// Idle keep-alive connections by address. Each idle socket keeps a readiness wait outstanding:
// an HTTP/1.1 server has nothing to say on an idle connection, so readable means closed (EOF),
// reset or misbehaving, and the socket is dropped. Each also has a timer that closes it after
// pool_idle_timeout.
class ConnectionPool : public std::enable_shared_from_this<ConnectionPool> {
public:
  using Socket = asio::ip::tcp::socket;
  using Endpoint = asio::ip::tcp::endpoint;

  ConnectionPool(Dispatcher& d, ClientSettings settings) : dispatcher_(d), settings_(settings) {}
  ~ConnectionPool() { closeAll(); }

  // Hands over an idle connection to `to` that still looks alive (the most recently used).
  std::optional<Socket> take(const Endpoint& to) {
    auto it = idle_.find(to);
    if (it == idle_.end())
      return std::nullopt;
    auto& list = it->second;
    std::optional<Socket> found;
    while (!found && !list.empty()) {
      std::shared_ptr<Idle> c = std::move(list.back());
      list.pop_back();
      c->pooled = false;
      c->timer->disable();
      asio::error_code ec;
      c->sock.cancel(ec); // the readiness wait ends with operation_aborted
      if (!ec && stillOpen(c->sock))
        found.emplace(std::move(c->sock));
      else
        c->sock.close(ec);
    }
    if (list.empty())
      idle_.erase(it);
    return found;
  }

  // Keeps `sock` (connected to `to`, nothing outstanding on it) for a later take().
  void put(const Endpoint& to, Socket sock) {
    if (settings_.max_idle_per_address == 0 || settings_.pool_idle_timeout <= Duration::zero()) {
      asio::error_code ignore;
      sock.close(ignore);
      return;
    }
    auto c = std::make_shared<Idle>(std::move(sock), to);
    Idle* raw = c.get();
    // The timer belongs to the entry, so it cannot fire once the entry is gone.
    c->timer = dispatcher_.createTimer([this, raw] { drop(raw); });
    c->timer->enable(settings_.pool_idle_timeout);
    c->sock.async_wait(Socket::wait_read, [weak = weak_from_this(), c](const asio::error_code& ec) {
      if (ec == asio::error::operation_aborted || !c->pooled)
        return;
      if (auto pool = weak.lock())
        pool->drop(c.get());
    });
    auto& list = idle_[to];
    list.push_back(std::move(c));
    while (list.size() > settings_.max_idle_per_address)
      drop(list.front().get());
  }

  void closeAll() {
    auto all = std::move(idle_);
    idle_.clear();
    for (auto& [to, list] : all)
      for (auto& c : list)
        closeEntry(*c);
  }

  size_t idleCount() const {
    size_t n = 0;
    for (const auto& [to, list] : idle_)
      n += list.size();
    return n;
  }
  size_t idleCount(const Endpoint& to) const {
    auto it = idle_.find(to);
    return it == idle_.end() ? 0 : it->second.size();
  }

private:
  struct Idle {
    Idle(Socket s, Endpoint e) : sock(std::move(s)), to(std::move(e)) {}
    Socket sock;
    Endpoint to;
    std::unique_ptr<Timer> timer;
    bool pooled = true;
  };

  // True when a read would block: no EOF, error or unexpected byte is waiting. One peek that
  // does not block whatever the socket's mode (switching the mode around it costs three
  // more system calls on each reuse).
  static bool stillOpen(Socket& sock) {
    char byte;
    ssize_t n;
    do
      n = ::recv(sock.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }

  static void closeEntry(Idle& c) {
    c.pooled = false;
    c.timer->disable();
    asio::error_code ignore;
    c.sock.close(ignore);
  }

  // Closes an idle connection and forgets it (may destroy `c`).
  void drop(Idle* c) {
    auto it = idle_.find(c->to);
    if (it == idle_.end())
      return;
    auto& list = it->second;
    auto pos = std::find_if(list.begin(), list.end(),
                            [c](const std::shared_ptr<Idle>& p) { return p.get() == c; });
    if (pos == list.end())
      return;
    std::shared_ptr<Idle> keep = std::move(*pos);
    list.erase(pos);
    if (list.empty())
      idle_.erase(it);
    closeEntry(*keep);
  }

  Dispatcher& dispatcher_;
  ClientSettings settings_;
  std::map<Endpoint, std::list<std::shared_ptr<Idle>>> idle_;
};

// One request: connect (or take a pooled connection), write, parse the response, report once.
class ClientExchange : public std::enable_shared_from_this<ClientExchange>, public ParserCallbacks {
public:
  ClientExchange(Dispatcher& d, const net::SocketAddress& addr, ClientRequest req,
                 RequestOptions opts, std::weak_ptr<ConnectionPool> pool)
      : dispatcher_(d), addr_(addr), req_(std::move(req)), opts_(std::move(opts)),
        pool_(std::move(pool)), sock_(d.io()), parser_(ParserMode::kResponse, *this, opts_.parser) {
  }

  Client::ResponseCallback callback;
  Client::StreamCallbacks stream_callbacks;
  bool streaming = false;

  void start() {
    auto self = shared_from_this();
    connect_timer_ = dispatcher_.createTimer([this] {
      auto keep = shared_from_this();
      fail(ErrorCode::kDeadlineExceeded,
           fmt::format("connect to {} timed out after {}", addr_.toString(),
                       formatDuration(opts_.connect_timeout)));
    });
    total_timer_ = dispatcher_.createTimer([this] {
      auto keep = shared_from_this();
      fail(ErrorCode::kDeadlineExceeded,
           fmt::format("request to {} timed out after {}", addr_.toString(),
                       formatDuration(opts_.timeout)));
    });
    idle_timer_ = dispatcher_.createTimer([this] {
      auto keep = shared_from_this();
      fail(ErrorCode::kDeadlineExceeded, fmt::format("no data from {} for {}", addr_.toString(),
                                                     formatDuration(opts_.idle_timeout)));
    });
    Status valid = buildRequest();
    if (!valid.ok()) {
      // Report on a later turn: callbacks never run inside request().
      dispatcher_.post([self, e = valid.error()] { self->fail(e.code(), e.message()); });
      return;
    }
    if (opts_.timeout > Duration::zero())
      total_timer_->enable(opts_.timeout);
    if (pooling()) {
      if (auto pool = pool_.lock()) {
        if (auto sock = pool->take(addr_.tcp())) {
          sock_ = std::move(*sock);
          retryable_ = true;
          // Sending now is fine: completion callbacks still run on a later turn.
          send();
          return;
        }
      }
    }
    connect();
  }

  void cancel() {
    if (done_)
      return;
    done_ = true;
    callback = nullptr;
    stream_callbacks = {};
    cleanup();
  }

  bool active() const { return !done_; }

  bool writeBody(std::string_view piece) {
    if (done_ || !streaming || !opts_.open_body)
      return false;
    if (piece.empty())
      return true; // an empty chunk would end the body
    appendChunk(piece, body_out_);
    flushBody();
    return true;
  }

  // ParserCallbacks
  Action onMessageBegin() override {
    rsp_ = ClientResponse{};
    return Action::kContinue;
  }
  Action onStatusLine(Version version, uint16_t status, std::string_view reason) override {
    rsp_.version = version;
    rsp_.status = status;
    rsp_.reason.assign(reason);
    return Action::kContinue;
  }
  Action onHeader(std::string_view name, std::string_view value) override {
    rsp_.headers.add(name, value);
    return Action::kContinue;
  }
  Action onHeadersComplete(const MessageHead& head) override {
    if (head.interim)
      return Action::kContinue;
    if (streaming) {
      if (stream_callbacks.on_head)
        stream_callbacks.on_head(rsp_);
      return done_ ? Action::kPause : Action::kContinue;
    }
    if (head.framing == BodyFraming::kContentLength &&
        *head.content_length > opts_.max_response_body_bytes) {
      failTooLarge();
      return Action::kPause;
    }
    return Action::kContinue;
  }
  Action onBody(std::string_view piece) override {
    if (streaming) {
      if (stream_callbacks.on_body)
        stream_callbacks.on_body(piece);
      return done_ ? Action::kPause : Action::kContinue;
    }
    if (rsp_.body.size() + piece.size() > opts_.max_response_body_bytes) {
      failTooLarge();
      return Action::kPause;
    }
    rsp_.body.append(piece);
    return Action::kContinue;
  }
  Action onTrailer(std::string_view name, std::string_view value) override {
    rsp_.trailers.add(name, value);
    return Action::kContinue;
  }
  Action onMessageComplete() override {
    if (parser_.head().interim)
      return Action::kContinue;
    // Completed by the caller of execute()/finish(), which knows whether bytes follow.
    message_complete_ = true;
    return Action::kPause;
  }

private:
  Status buildRequest() {
    const std::string& m = req_.method;
    if (!isValidHeaderName(m)) // a method is a token, like a header name
      return makeError(ErrorCode::kFailedPrecondition, "invalid HTTP method \"{}\"", m);
    const std::string& t = req_.target;
    if (t.empty() || (t.front() != '/' && t != "*"))
      return makeError(ErrorCode::kFailedPrecondition, "request target \"{}\" must start with '/'",
                       t);
    for (unsigned char c : t)
      if (c <= 0x20 || c >= 0x7f)
        return makeError(ErrorCode::kFailedPrecondition,
                         "request target has a space, control or non-ASCII byte");
    Status hv = validateHeaders(req_.headers);
    if (!hv.ok())
      return Error(ErrorCode::kFailedPrecondition, hv.error().message());
    HeaderMap h = std::move(req_.headers);
    if (!h.contains("Host"))
      h.add("Host", addr_.toString());
    h.remove("Transfer-Encoding");
    h.remove("Content-Length");
    const Method method = methodFromToken(m);
    const bool open_body = streaming && opts_.open_body;
    if (open_body)
      h.add("Transfer-Encoding", "chunked");
    else if (!req_.body.empty() || method == Method::kPost || method == Method::kPut ||
             method == Method::kPatch)
      h.add("Content-Length", std::to_string(req_.body.size()));
    if (listHasToken(h.getAll("Connection"), "close"))
      close_requested_ = true;
    else if (!pooling() && !h.contains("Connection"))
      h.add("Connection", "close");
    out_.reserve(m.size() + t.size() + h.byteSize() + 4 * h.size() + 32 + req_.body.size());
    serializeRequestHead(m, t, Version::kHttp11, h, out_);
    if (open_body) {
      if (!req_.body.empty())
        appendChunk(req_.body, out_);
    } else {
      out_.append(req_.body);
    }
    req_.body.clear();
    req_.body.shrink_to_fit();
    method_ = method;
    parser_.expectResponseTo(method);
    return okStatus();
  }

  bool pooling() const { return opts_.keep_alive && !streaming; }

  void connect() {
    if (opts_.connect_timeout > Duration::zero())
      connect_timer_->enable(opts_.connect_timeout);
    sock_.async_connect(addr_.tcp(),
                        [self = shared_from_this(), gen = gen_](const asio::error_code& ec) {
                          if (gen == self->gen_)
                            self->onConnect(ec);
                        });
  }

  void onConnect(const asio::error_code& ec) {
    if (done_)
      return;
    connect_timer_->disable();
    if (ec) {
      fail(ErrorCode::kUnavailable,
           fmt::format("connect to {} failed: {}", addr_.toString(), ec.message()));
      return;
    }
    asio::error_code ignore;
    sock_.set_option(asio::ip::tcp::no_delay(true), ignore);
    send();
  }

  void send() {
    armIdle();
    write_done_ = false;
    asio::async_write(sock_, asio::buffer(out_),
                      [self = shared_from_this(), gen = gen_](const asio::error_code& wec, size_t) {
                        // A failed write is not reported by itself: the server may have
                        // answered already (e.g. 413 before reading the body). The read
                        // side sees the reset if there is no answer.
                        (void)wec;
                        if (gen != self->gen_)
                          return;
                        self->write_done_ = true;
                        self->releaseOutput();
                        self->flushBody();
                      });
    read();
  }

  // Sends the open body's queued chunks once the head is out, one write at a time.
  void flushBody() {
    if (done_ || !write_done_ || body_writing_ || body_out_.empty())
      return;
    body_in_flight_.swap(body_out_);
    body_out_.clear();
    body_writing_ = true;
    asio::async_write(sock_, asio::buffer(body_in_flight_),
                      [self = shared_from_this(), gen = gen_](const asio::error_code&, size_t) {
                        // As for the head: the read side reports a broken connection.
                        if (gen != self->gen_)
                          return;
                        self->body_writing_ = false;
                        self->body_in_flight_.clear();
                        self->flushBody();
                      });
  }

  // The request bytes are kept while they may have to be sent again.
  void releaseOutput() {
    if (write_done_ && !retryable_) {
      out_.clear();
      out_.shrink_to_fit();
    }
  }

  // A reused connection failed before any response byte: the server most likely closed it
  // while it sat idle, so send the request again on a fresh connection (once).
  void retryOnFreshConnection() {
    retryable_ = false;
    ++gen_; // handlers still queued for the old socket are ignored
    asio::error_code ignore;
    sock_.close(ignore);
    sock_ = asio::ip::tcp::socket(dispatcher_.io());
    idle_timer_->disable();
    parser_.reset();
    parser_.expectResponseTo(method_);
    rsp_ = ClientResponse{};
    connect();
  }

  void read() {
    sock_.async_read_some(asio::buffer(rbuf_), [self = shared_from_this(),
                                                gen = gen_](const asio::error_code& ec, size_t n) {
      if (gen == self->gen_)
        self->onRead(ec, n);
    });
  }

  void onRead(const asio::error_code& ec, size_t n) {
    if (done_)
      return;
    if (ec && retryable_ && ec != asio::error::operation_aborted) {
      retryOnFreshConnection();
      return;
    }
    if (ec) {
      if (ec == asio::error::eof) {
        const bool nothing = parser_.idle();
        const ParseStatus st = parser_.finish(); // completes a close-delimited body
        if (done_)
          return;
        if (message_complete_) {
          complete();
          return;
        }
        if (st == ParseStatus::kError || !nothing)
          fail(ErrorCode::kIo, fmt::format("connection to {} closed before the response was "
                                           "complete",
                                           addr_.toString()));
        else
          fail(ErrorCode::kIo,
               fmt::format("connection to {} closed without a response", addr_.toString()));
        return;
      }
      fail(ErrorCode::kIo,
           fmt::format("connection to {} failed: {}", addr_.toString(), ec.message()));
      return;
    }
    if (retryable_ && n > 0) {
      retryable_ = false; // the server answered on this connection: never send twice
      releaseOutput();
    }
    armIdle();
    ParseResult r = parser_.execute(std::string_view(rbuf_.data(), n));
    if (done_)
      return;
    switch (r.status) {
    case ParseStatus::kOk:
      read();
      return;
    case ParseStatus::kUpgraded:
      // 101 or a CONNECT tunnel: this client does not switch protocols; the head is the
      // answer.
      complete();
      return;
    case ParseStatus::kPaused:
      if (message_complete_ && r.consumed == n && reusable())
        returnToPool();
      complete();
      return;
    case ParseStatus::kError:
      fail(ErrorCode::kInvalidArgument,
           fmt::format("bad response from {}: {} ({})", addr_.toString(), parser_.errorMessage(),
                       parseErrorName(parser_.error())));
      return;
    }
  }

  // The connection may carry the next request (RFC 9112 9.3): the parser's keep_alive covers
  // the version, "Connection: close" and close-delimited bodies.
  bool reusable() const {
    const MessageHead& head = parser_.head();
    return pooling() && write_done_ && !close_requested_ && head.keep_alive && !head.upgrade &&
           head.version == Version::kHttp11 && head.framing != BodyFraming::kUntilClose &&
           rsp_.status >= 200;
  }

  void returnToPool() {
    auto pool = pool_.lock();
    if (!pool)
      return;
    connect_timer_->disable();
    total_timer_->disable();
    idle_timer_->disable();
    ++gen_;
    pool->put(addr_.tcp(), std::move(sock_));
    sock_ = asio::ip::tcp::socket(dispatcher_.io());
  }

  void armIdle() {
    if (opts_.idle_timeout > Duration::zero())
      idle_timer_->enable(opts_.idle_timeout);
  }

  void failTooLarge() {
    fail(ErrorCode::kResourceExhausted,
         fmt::format("response body from {} exceeds the limit of {} bytes", addr_.toString(),
                     opts_.max_response_body_bytes));
  }

  void complete() {
    if (done_)
      return;
    done_ = true;
    cleanup();
    if (streaming) {
      auto cb = std::move(stream_callbacks.on_done);
      stream_callbacks = {};
      if (cb)
        cb(okStatus());
    } else {
      auto cb = std::move(callback);
      callback = nullptr;
      if (cb)
        cb(std::move(rsp_));
    }
  }

  void fail(ErrorCode code, std::string message) {
    if (done_)
      return;
    done_ = true;
    cleanup();
    Error e(code, std::move(message));
    if (streaming) {
      auto cb = std::move(stream_callbacks.on_done);
      stream_callbacks = {};
      if (cb)
        cb(e);
    } else {
      auto cb = std::move(callback);
      callback = nullptr;
      if (cb)
        cb(e);
    }
  }

  void cleanup() {
    if (connect_timer_) {
      connect_timer_->disable();
      total_timer_->disable();
      idle_timer_->disable();
    }
    asio::error_code ignore;
    sock_.close(ignore);
  }

  Dispatcher& dispatcher_;
  net::SocketAddress addr_;
  ClientRequest req_;
  RequestOptions opts_;
  std::weak_ptr<ConnectionPool> pool_;
  asio::ip::tcp::socket sock_;
  Parser parser_;
  ClientResponse rsp_;
  std::string out_;
  std::string body_out_;       // open body: chunks not handed to a write yet
  std::string body_in_flight_; // open body: the chunks being written
  bool body_writing_ = false;
  std::array<char, 16 * 1024> rbuf_;
  std::unique_ptr<Timer> connect_timer_;
  std::unique_ptr<Timer> total_timer_;
  std::unique_ptr<Timer> idle_timer_;
  Method method_ = Method::kGet;
  // Bumped whenever the socket is replaced or handed to the pool; handlers of an older
  // generation find nothing to do.
  uint64_t gen_ = 0;
  bool done_ = false;
  bool message_complete_ = false;
  bool write_done_ = false;
  // On a reused connection until the first response byte: a failure is retried once.
  bool retryable_ = false;
  bool close_requested_ = false; // the caller's own "Connection: close"
};

void RequestHandle::cancel() {
  if (auto ex = ex_.lock())
    ex->cancel();
}

bool RequestHandle::active() const {
  auto ex = ex_.lock();
  return ex && ex->active();
}

bool RequestHandle::write(std::string_view piece) {
  auto ex = ex_.lock();
  return ex && ex->writeBody(piece);
}

Client::Client(Dispatcher& dispatcher, ClientSettings settings)
    : dispatcher_(dispatcher), pool_(std::make_shared<ConnectionPool>(dispatcher, settings)) {}

Client::~Client() {
  for (auto& w : exchanges_)
    if (auto ex = w.lock())
      ex->cancel();
  pool_->closeAll();
}

RequestHandle Client::request(const net::SocketAddress& address, std::string_view method,
                              std::string_view target, HeaderMap headers, std::string body,
                              Duration timeout, ResponseCallback callback) {
  ClientRequest req;
  req.method.assign(method);
  req.target.assign(target);
  req.headers = std::move(headers);
  req.body = std::move(body);
  RequestOptions opts;
  opts.timeout = timeout;
  return request(address, std::move(req), std::move(opts), std::move(callback));
}

RequestHandle Client::request(const net::SocketAddress& address, ClientRequest req,
                              RequestOptions options, ResponseCallback callback) {
  auto ex = std::make_shared<ClientExchange>(dispatcher_, address, std::move(req),
                                             std::move(options), pool_);
  ex->callback = std::move(callback);
  return start(std::move(ex));
}

RequestHandle Client::stream(const net::SocketAddress& address, ClientRequest req,
                             RequestOptions options, StreamCallbacks callbacks) {
  auto ex = std::make_shared<ClientExchange>(dispatcher_, address, std::move(req),
                                             std::move(options), pool_);
  ex->streaming = true;
  ex->stream_callbacks = std::move(callbacks);
  return start(std::move(ex));
}

RequestHandle Client::start(std::shared_ptr<ClientExchange> ex) {
  if (exchanges_.size() >= 64) {
    exchanges_.erase(std::remove_if(exchanges_.begin(), exchanges_.end(),
                                    [](const std::weak_ptr<ClientExchange>& w) {
                                      auto e = w.lock();
                                      return !e || !e->active();
                                    }),
                     exchanges_.end());
  }
  exchanges_.push_back(ex);
  ex->start();
  return RequestHandle(ex);
}

size_t Client::idleConnections() const {
  return pool_->idleCount();
}

size_t Client::idleConnections(const net::SocketAddress& address) const {
  return pool_->idleCount(address.tcp());
}

size_t Client::activeRequests() const {
  size_t n = 0;
  for (auto& w : exchanges_)
    if (auto e = w.lock(); e && e->active())
      ++n;
  return n;
}

} // namespace trellis::http
