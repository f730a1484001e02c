#include "http/server.h"

#include <algorithm>
#include <deque>

#include <asio/write.hpp>

#include "base/log.h"

namespace trellis::http {

std::optional<std::string_view> ServerRequest::query(std::string_view name) const {
  for (const auto& [n, v] : query_params)
    if (n == name)
      return std::string_view(v);
  return std::nullopt;
}

bool ServerRequest::hasQuery(std::string_view name) const {
  return query(name).has_value();
}

// ------------------------------------------------------------------------------------------

class ResponseWriterImpl : public ResponseWriter {
public:
  enum class Phase : uint8_t { kWaiting, kStreaming, kDone };

  ResponseWriterImpl(std::weak_ptr<ServerConnection> conn, Dispatcher& d, uint64_t max_buffer)
      : conn_(std::move(conn)), dispatcher_(d), max_buffer_(max_buffer) {}

  // ResponseWriter
  bool send(uint16_t status, const HeaderMap& headers, std::string_view body) override;
  bool startStream(uint16_t status, const HeaderMap& headers) override;
  bool write(std::string_view data) override;
  bool finish() override;
  bool isOpen() const override { return open_; }
  void onClosed(std::function<void()> cb) override;
  size_t bufferedBytes() const override;
  Dispatcher& dispatcher() override { return dispatcher_; }
  void onRequestBody(std::function<void(std::string_view, bool)> cb) override {
    if (body_streamed && open_)
      on_body_ = std::move(cb);
  }
  // A piece of a streamed request body (end: it ended).
  void bodyPiece(std::string_view piece, bool end) {
    if (on_body_) {
      auto keep = on_body_; // the callback may replace or drop itself
      keep(piece, end);
    }
    if (end)
      on_body_ = nullptr;
  }

  // Connection gone: the writer goes quiet and tells the handler if it had not finished.
  void markClosed();
  // The response is out of the writer's hands; drop the callback (it may hold the writer).
  void completed() {
    on_closed_ = nullptr;
    on_body_ = nullptr; // a body still streaming in is read and dropped
  }

  ServerRequest request;
  std::string pending; // output not yet handed to the connection
  Phase phase = Phase::kWaiting;
  bool head_request = false;
  bool request_keep_alive = true;
  bool force_close = false; // an error response: the connection closes after it
  bool close_after = false; // decided when the response head is written
  bool ready = false;       // the request was read completely (or its body is streamed)
  bool dispatched = false;  // handed to the handler
  bool body_streamed = false; // handed over at its head; body pieces go to on_body_

private:
  // Builds the head; false when headers are invalid (then a 500 is sent instead).
  void writeHead(uint16_t status, HeaderMap h, bool streaming);

  std::weak_ptr<ServerConnection> conn_;
  Dispatcher& dispatcher_;
  uint64_t max_buffer_;
  bool open_ = true;
  bool chunked_ = false;
  bool suppress_body_ = false;
  std::function<void()> on_closed_;
  std::function<void(std::string_view, bool)> on_body_;
};

class ServerConnection : public std::enable_shared_from_this<ServerConnection>,
                         public ParserCallbacks {
public:
  ServerConnection(Server& server, asio::ip::tcp::socket sock)
      : server_(&server), dispatcher_(server.dispatcher_), settings_(server.settings_),
        sock_(std::move(sock)), parser_(ParserMode::kRequest, *this, settings_.parser) {
    asio::error_code ec;
    auto ep = sock_.remote_endpoint(ec);
    if (!ec)
      peer_ = net::fromEndpoint(ep);
    sock_.set_option(asio::ip::tcp::no_delay(true), ec);
    // Writes are tried at once (startWrite): a synchronous write_some must not block.
    sock_.non_blocking(true, ec);
  }

  void start() {
    idle_timer_ = dispatcher_.createTimer([this] { onIdleTimeout(); });
    header_timer_ = dispatcher_.createTimer([this] { onHeaderTimeout(); });
    linger_timer_ = dispatcher_.createTimer([this] {
      auto self = shared_from_this();
      close();
    });
    updateTimers(false);
    read();
  }

  void detach() { server_ = nullptr; }

  // Closes at once; outstanding writers are told.
  void close() {
    if (closed_)
      return;
    closed_ = true;
    idle_timer_->disable();
    header_timer_->disable();
    linger_timer_->disable();
    asio::error_code ec;
    sock_.close(ec);
    auto pl = std::move(pipeline_);
    pipeline_.clear();
    cur_ = nullptr;
    for (auto& w : pl)
      w->markClosed();
    if (server_ != nullptr)
      server_->onConnectionClosed(this);
  }

  // Moves the head-of-line responses' output to the socket, in request order.
  void flush() {
    if (closed_)
      return;
    while (!pipeline_.empty()) {
      auto w = pipeline_.front();
      if (!w->pending.empty()) {
        if (out_.empty())
          out_.swap(w->pending);
        else
          out_.append(w->pending);
        w->pending.clear();
      }
      if (w->phase != ResponseWriterImpl::Phase::kDone)
        break;
      w->completed();
      pipeline_.pop_front();
      if (w->close_after) {
        // Nothing after this response will be answered on this connection.
        closing_ = true;
        auto rest = std::move(pipeline_);
        pipeline_.clear();
        cur_ = nullptr;
        for (auto& r : rest)
          r->markClosed();
        break;
      }
    }
    startWrite();
    maybeLinger();
    if (!closed_ && !in_parse_ && !closing_ && !reading_)
      parseInput(); // the pipeline may have room again
    updateTimers(false);
  }

  size_t buffered() const { return out_.size() + writing_.size(); }
  bool closed() const { return closed_; }
  void countSlowClient() {
    if (server_ != nullptr)
      ++server_->stats_.slow_client_closes;
  }

  // ParserCallbacks
  Action onMessageBegin() override {
    auto w = std::make_shared<ResponseWriterImpl>(weak_from_this(), dispatcher_,
                                                  settings_.max_response_buffer_bytes);
    w->request.peer = peer_;
    pipeline_.push_back(w);
    cur_ = std::move(w);
    return Action::kContinue;
  }

  Action onRequestLine(std::string_view method, std::string_view target, Version version) override {
    ServerRequest& r = cur_->request;
    r.method = methodFromToken(method);
    r.method_name.assign(method);
    r.target.assign(target);
    r.version = version;
    cur_->head_request = r.method == Method::kHead;
    TargetParts parts = splitTarget(target);
    auto path = percentDecode(parts.path);
    auto query = parseQuery(parts.query);
    if (!path.ok() || !query.ok()) {
      failRequest(400, path.ok() ? query.error().message() : path.error().message());
      return Action::kPause;
    }
    r.path = std::move(*path);
    r.raw_query.assign(parts.query);
    r.query_params = std::move(*query);
    return Action::kContinue;
  }

  Action onHeader(std::string_view name, std::string_view value) override {
    cur_->request.headers.add(name, value);
    return Action::kContinue;
  }

  Action onHeadersComplete(const MessageHead& head) override {
    ServerRequest& r = cur_->request;
    r.keep_alive = head.keep_alive;
    cur_->request_keep_alive = head.keep_alive;
    if (head.method == Method::kConnect) {
      failRequest(405, "CONNECT is not supported by this server");
      return Action::kPause;
    }
    if (head.content_length && *head.content_length > settings_.max_request_body_bytes) {
      if (server_ != nullptr)
        ++server_->stats_.body_too_large;
      failRequest(413, fmt::format("request body of {} bytes exceeds the limit of {} bytes",
                                   *head.content_length, settings_.max_request_body_bytes));
      return Action::kPause;
    }
    if (head.framing == BodyFraming::kChunked && settings_.streams_request_body &&
        settings_.streams_request_body(r)) {
      // Handed over now (outside the parser); the body follows piece by piece.
      cur_->body_streamed = true;
      r.body_streamed = true;
      cur_->ready = true;
      return Action::kPause;
    }
    if (head.content_length)
      r.body.reserve(static_cast<size_t>(std::min<uint64_t>(*head.content_length, 64 * 1024)));
    if (head.expect_continue && head.version == Version::kHttp11 &&
        head.framing != BodyFraming::kNone) {
      // Interim answer; it waits in line behind earlier responses like any other output.
      cur_->pending.append("HTTP/1.1 100 Continue\r\n\r\n");
      auto self = shared_from_this();
      flush();
    }
    return Action::kContinue;
  }

  Action onBody(std::string_view piece) override {
    if (cur_->body_streamed) {
      auto keep = cur_;
      keep->bodyPiece(piece, false);
      return closed_ || closing_ ? Action::kPause : Action::kContinue;
    }
    std::string& body = cur_->request.body;
    if (body.size() + piece.size() > settings_.max_request_body_bytes) {
      if (server_ != nullptr)
        ++server_->stats_.body_too_large;
      failRequest(413, fmt::format("request body exceeds the limit of {} bytes",
                                   settings_.max_request_body_bytes));
      return Action::kPause;
    }
    body.append(piece);
    return Action::kContinue;
  }

  Action onMessageComplete() override {
    cur_->ready = true;
    if (cur_->body_streamed) {
      auto keep = std::move(cur_);
      cur_ = nullptr;
      keep->bodyPiece({}, true);
      return Action::kPause;
    }
    cur_ = nullptr;
    // Hand the request over outside the parser.
    return Action::kPause;
  }

private:
  void read() {
    if (reading_ || closed_)
      return;
    reading_ = true;
    sock_.async_read_some(
        asio::buffer(rbuf_),
        [self = shared_from_this()](const asio::error_code& ec, size_t n) { self->onRead(ec, n); });
  }

  void onRead(const asio::error_code& ec, size_t n) {
    reading_ = false;
    if (closed_)
      return;
    if (ec) {
      // EOF or reset. A client that half-closes is treated as gone: the signal a long-held
      // request (a blocking query) needs to stop waiting.
      close();
      return;
    }
    if (server_ != nullptr)
      server_->stats_.bytes_received += n;
    if (lingering_ || closing_) {
      read(); // discard what a closing connection still receives
      return;
    }
    in_.append(rbuf_.data(), n);
    updateTimers(true);
    parseInput();
  }

  void parseInput() {
    auto self = shared_from_this();
    in_parse_ = true;
    while (!closed_ && !closing_ && !in_.empty()) {
      if (pipeline_.size() >= settings_.max_pipelined_requests && parser_.idle())
        break; // back-pressure: wait for responses before reading more requests
      ParseResult r = parser_.execute(in_);
      in_.erase(0, r.consumed);
      if (r.status == ParseStatus::kOk)
        break;
      if (r.status == ParseStatus::kError) {
        if (server_ != nullptr)
          ++server_->stats_.parse_errors[static_cast<size_t>(parser_.error())];
        failRequest(parseErrorStatus(parser_.error()), parser_.errorMessage());
        break;
      }
      if (r.status == ParseStatus::kUpgraded)
        parser_.continueAfterUpgrade(); // this server does not switch protocols
      parser_.resume();
      dispatchReady();
    }
    in_parse_ = false;
    if (closed_)
      return;
    if (closing_ || pipeline_.size() < settings_.max_pipelined_requests || !parser_.idle())
      read();
    updateTimers(false);
  }

  void dispatchReady() {
    for (;;) {
      std::shared_ptr<ResponseWriterImpl> next;
      for (auto& w : pipeline_) {
        if (w->ready && !w->dispatched) {
          next = w;
          break;
        }
      }
      if (!next || closed_ || server_ == nullptr)
        return;
      next->dispatched = true;
      ++server_->stats_.requests;
      server_->handler_(next->request, next);
    }
  }

  // Answers the request being read (or a new slot) with an error and closes after it.
  void failRequest(uint16_t status, std::string_view why) {
    std::shared_ptr<ResponseWriterImpl> w = cur_;
    if (!w) {
      w = std::make_shared<ResponseWriterImpl>(weak_from_this(), dispatcher_,
                                               settings_.max_response_buffer_bytes);
      w->request.peer = peer_;
      pipeline_.push_back(w);
    }
    cur_ = nullptr;
    closing_ = true;
    header_timer_->disable();
    w->ready = true;
    w->dispatched = true;
    w->force_close = true;
    if (w->phase == ResponseWriterImpl::Phase::kWaiting) {
      HeaderMap h{{"Content-Type", "text/plain; charset=utf-8"}};
      w->send(status, h, fmt::format("{}\n", why));
    } else if (w->phase == ResponseWriterImpl::Phase::kStreaming) {
      // Its response started (a request whose body is streamed): no room for an error
      // answer, and the response would never end; the close tells the handler.
      TLOG_DEBUG("http server: closing connection from {}: {}", peer_.toString(), why);
      close();
    }
  }

  void startWrite() {
    if (write_in_flight_ || out_.empty() || closed_)
      return;
    // The kernel takes what it can now, so a response (or a stream's message) is out and no
    // longer buffered here by the time the writer returns: the caller's next write and
    // bufferedBytes() see an empty buffer without waiting for a loop turn. Only what it
    // refused waits for writability. An error other than "would block" is left to the
    // asynchronous write below, whose completion closes the connection.
    asio::error_code ec;
    const size_t n = sock_.write_some(asio::buffer(out_), ec);
    if (!ec) {
      if (n == out_.size()) {
        out_.clear();
        return;
      }
      out_.erase(0, n);
    }
    writing_.swap(out_);
    out_.clear();
    write_in_flight_ = true;
    if (!idle_timer_->enabled())
      idle_timer_->enable(settings_.idle_timeout);
    asio::async_write(
        sock_, asio::buffer(writing_),
        [self = shared_from_this()](const asio::error_code& ec, size_t) { self->onWrite(ec); });
  }

  void onWrite(const asio::error_code& ec) {
    write_in_flight_ = false;
    writing_.clear();
    if (closed_)
      return;
    if (ec) {
      close();
      return;
    }
    startWrite();
    maybeLinger();
    updateTimers(true);
  }

  // Once a closing connection has written everything: half-close and drain what the client
  // still sends for a while, so it reads our answer instead of a reset.
  void maybeLinger() {
    if (!closing_ || lingering_ || closed_ || !pipeline_.empty() || write_in_flight_ ||
        !out_.empty())
      return;
    lingering_ = true;
    asio::error_code ec;
    sock_.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
    idle_timer_->disable();
    header_timer_->disable();
    linger_timer_->enable(settings_.close_linger_timeout);
    read();
  }

  // The idle timer runs while the connection waits on the client: for a new request, for
  // more of a body, or for it to take response bytes (a write in flight); `progress`
  // re-arms it. The header timer runs from a request's first byte to its last header line
  // and is not extended by progress. Neither runs while only the handler is busy.
  void updateTimers(bool progress) {
    if (closed_ || lingering_) {
      idle_timer_->disable();
      header_timer_->disable();
      return;
    }
    const bool head = !closing_ && parser_.readingHead();
    if (head) {
      if (!header_timer_->enabled())
        header_timer_->enable(settings_.header_read_timeout);
    } else {
      header_timer_->disable();
    }
    const bool idle = !closing_ && parser_.idle() && pipeline_.empty();
    // A streamed body may be silent for as long as its request lasts.
    const bool body = !closing_ && !parser_.idle() && !head && !(cur_ && cur_->body_streamed);
    if (idle || body || write_in_flight_) {
      if (progress || !idle_timer_->enabled())
        idle_timer_->enable(settings_.idle_timeout);
    } else {
      idle_timer_->disable();
    }
  }

  void onHeaderTimeout() {
    auto self = shared_from_this();
    if (server_ != nullptr)
      ++server_->stats_.header_timeouts;
    failRequest(408, "request header not received in time");
  }

  void onIdleTimeout() {
    auto self = shared_from_this();
    if (write_in_flight_) {
      // The client stopped taking our bytes.
      countSlowClient();
      close();
      return;
    }
    if (server_ != nullptr)
      ++server_->stats_.idle_timeouts;
    if (cur_ != nullptr)
      failRequest(408, "request body not received in time");
    else
      close();
  }

  Server* server_;
  Dispatcher& dispatcher_;
  const ServerSettings settings_;
  asio::ip::tcp::socket sock_;
  net::SocketAddress peer_;
  Parser parser_;
  std::array<char, 16 * 1024> rbuf_;
  std::string in_; // received, not yet parsed (only while the pipeline is full)
  std::deque<std::shared_ptr<ResponseWriterImpl>> pipeline_;
  std::shared_ptr<ResponseWriterImpl> cur_; // the request being parsed
  std::string out_;
  std::string writing_;
  std::unique_ptr<Timer> idle_timer_;
  std::unique_ptr<Timer> header_timer_;
  std::unique_ptr<Timer> linger_timer_;
  bool reading_ = false;
  bool write_in_flight_ = false;
  bool in_parse_ = false;
  bool closing_ = false; // no further requests are read; close after the pipeline drains
  bool lingering_ = false;
  bool closed_ = false;
};

// ------------------------------------------------------------------------------------------
// ResponseWriterImpl

void ResponseWriterImpl::writeHead(uint16_t status, HeaderMap h, bool streaming) {
  Status valid = validateHeaders(h);
  if (!valid.ok()) {
    TLOG_ERROR("http server: handler produced an invalid response ({}); sending 500",
               valid.error().message());
    h.clear();
    status = 500;
    streaming = false;
    suppress_body_ = true;
    h.add("Content-Length", "0");
  }
  h.remove("Transfer-Encoding");
  const bool no_body_status = status < 200 || status == 204 || status == 304;
  close_after = force_close || !request_keep_alive || listHasToken(h.getAll("Connection"), "close");
  if (streaming && !no_body_status) {
    h.remove("Content-Length");
    if (request.version == Version::kHttp11) {
      h.add("Transfer-Encoding", "chunked");
      chunked_ = true;
    } else {
      close_after = true; // HTTP/1.0 has no chunking: the close ends the body
    }
  }
  if (close_after)
    h.set("Connection", "close");
  else if (request.version == Version::kHttp10)
    h.set("Connection", "keep-alive");
  else
    h.remove("Connection");
  if (head_request || no_body_status)
    suppress_body_ = true;
  serializeResponseHead(Version::kHttp11, status, "", h, pending);
}

bool ResponseWriterImpl::send(uint16_t status, const HeaderMap& headers, std::string_view body) {
  auto conn = conn_.lock();
  if (!open_ || phase != Phase::kWaiting || !conn || status < 200 || status > 999)
    return false;
  HeaderMap h = headers;
  h.remove("Content-Length");
  const bool no_body_status = status == 204 || status == 304;
  if (!no_body_status)
    h.add("Content-Length", std::to_string(body.size()));
  writeHead(status, std::move(h), false);
  if (!suppress_body_)
    pending.append(body);
  phase = Phase::kDone;
  conn->flush();
  return true;
}

bool ResponseWriterImpl::startStream(uint16_t status, const HeaderMap& headers) {
  auto conn = conn_.lock();
  if (!open_ || phase != Phase::kWaiting || !conn || status < 200 || status > 999)
    return false;
  writeHead(status, headers, true);
  phase = Phase::kStreaming;
  conn->flush();
  return true;
}

bool ResponseWriterImpl::write(std::string_view data) {
  auto conn = conn_.lock();
  if (!open_ || phase != Phase::kStreaming || !conn)
    return false;
  if (data.empty() || suppress_body_)
    return true;
  if (chunked_)
    appendChunk(data, pending);
  else
    pending.append(data);
  conn->flush();
  if (pending.size() + conn->buffered() > max_buffer_) {
    TLOG_WARN("http server: closing connection from {}: client reads too slowly ({} bytes "
              "buffered)",
              request.peer.toString(), pending.size() + conn->buffered());
    conn->countSlowClient();
    conn->close();
    return false;
  }
  return true;
}

bool ResponseWriterImpl::finish() {
  auto conn = conn_.lock();
  if (!open_ || phase != Phase::kStreaming || !conn)
    return false;
  if (chunked_ && !suppress_body_)
    appendLastChunk(pending);
  phase = Phase::kDone;
  conn->flush();
  return true;
}

void ResponseWriterImpl::onClosed(std::function<void()> cb) {
  if (!open_) {
    if (phase != Phase::kDone && cb)
      cb();
    return;
  }
  on_closed_ = std::move(cb);
}

size_t ResponseWriterImpl::bufferedBytes() const {
  auto conn = conn_.lock();
  return pending.size() + (conn ? conn->buffered() : 0);
}

void ResponseWriterImpl::markClosed() {
  if (!open_)
    return;
  open_ = false;
  pending.clear();
  on_body_ = nullptr;
  auto cb = std::move(on_closed_);
  on_closed_ = nullptr;
  if (phase != Phase::kDone && cb)
    cb();
}

// ------------------------------------------------------------------------------------------
// Server

Server::Server(Dispatcher& dispatcher, ServerSettings settings, RequestHandler handler)
    : dispatcher_(dispatcher), settings_(std::move(settings)), handler_(std::move(handler)),
      acceptor_(dispatcher.io()) {}

Server::~Server() {
  stop();
  alive_.reset();
}

Status Server::listen(const net::SocketAddress& address) {
  asio::error_code ec;
  auto ep = address.tcp();
  acceptor_.open(ep.protocol(), ec);
  if (!ec)
    acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec)
    acceptor_.bind(ep, ec);
  if (!ec)
    acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    asio::error_code ignore;
    acceptor_.close(ignore);
    return makeError(ErrorCode::kUnavailable, "http server: cannot listen on {}: {}",
                     address.toString(), ec.message());
  }
  bound_ = net::fromEndpoint(acceptor_.local_endpoint(ec));
  accept();
  return okStatus();
}

void Server::accept() {
  acceptor_.async_accept([this, alive = std::weak_ptr<bool>(alive_)](const asio::error_code& ec,
                                                                     asio::ip::tcp::socket sock) {
    if (alive.expired() || !acceptor_.is_open())
      return;
    if (ec) {
      if (ec == asio::error::operation_aborted)
        return;
      // Out of descriptors or similar: retry on a later turn rather than spin.
      TLOG_WARN("http server on {}: accept failed: {}", bound_.toString(), ec.message());
      dispatcher_.post([this, alive] {
        if (!alive.expired() && acceptor_.is_open())
          accept();
      });
      return;
    }
    ++stats_.connections_accepted;
    if (conns_.size() >= settings_.max_connections) {
      ++stats_.connections_rejected;
      static const std::string kBusy = [] {
        const std::string body = "too many connections\n";
        return fmt::format("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                           "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                           body.size(), body);
      }();
      auto s = std::make_shared<asio::ip::tcp::socket>(std::move(sock));
      asio::async_write(*s, asio::buffer(kBusy), [s](const asio::error_code&, size_t) {
        asio::error_code ignore;
        s->shutdown(asio::ip::tcp::socket::shutdown_send, ignore);
        s->close(ignore);
      });
    } else {
      auto c = std::make_shared<ServerConnection>(*this, std::move(sock));
      conns_.emplace(c.get(), c);
      c->start();
    }
    accept();
  });
}

void Server::stop() {
  asio::error_code ec;
  acceptor_.close(ec);
  auto conns = std::move(conns_);
  conns_.clear();
  for (auto& [p, c] : conns) {
    c->detach();
    c->close();
  }
}

void Server::onConnectionClosed(ServerConnection* c) {
  conns_.erase(c);
}

} // namespace trellis::http
