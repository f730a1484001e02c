#include "http/client.h"

#include <algorithm>
#include <array>

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

// One request on its own connection: connect, write, parse the response, report once.
class ClientExchange : public std::enable_shared_from_this<ClientExchange>, public ParserCallbacks {
public:
  ClientExchange(Dispatcher& d, const net::SocketAddress& addr, ClientRequest req,
                 RequestOptions opts)
      : dispatcher_(d), addr_(addr), req_(std::move(req)), opts_(std::move(opts)), sock_(d.io()),
        parser_(ParserMode::kResponse, *this, opts_.parser) {}

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
    if (opts_.connect_timeout > Duration::zero())
      connect_timer_->enable(opts_.connect_timeout);
    if (opts_.timeout > Duration::zero())
      total_timer_->enable(opts_.timeout);
    sock_.async_connect(addr_.tcp(), [self](const asio::error_code& ec) { self->onConnect(ec); });
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
    complete();
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
    if (!req_.body.empty() || method == Method::kPost || method == Method::kPut ||
        method == Method::kPatch)
      h.add("Content-Length", std::to_string(req_.body.size()));
    if (!h.contains("Connection"))
      h.add("Connection", "close");
    out_.reserve(m.size() + t.size() + h.byteSize() + 4 * h.size() + 32 + req_.body.size());
    serializeRequestHead(m, t, Version::kHttp11, h, out_);
    out_.append(req_.body);
    req_.body.clear();
    req_.body.shrink_to_fit();
    parser_.expectResponseTo(method);
    return okStatus();
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
    armIdle();
    asio::async_write(sock_, asio::buffer(out_),
                      [self = shared_from_this()](const asio::error_code& wec, size_t) {
                        // A failed write is not reported by itself: the server may have
                        // answered already (e.g. 413 before reading the body). The read
                        // side sees the reset if there is no answer.
                        (void)wec;
                        self->out_.clear();
                        self->out_.shrink_to_fit();
                      });
    read();
  }

  void read() {
    sock_.async_read_some(
        asio::buffer(rbuf_),
        [self = shared_from_this()](const asio::error_code& ec, size_t n) { self->onRead(ec, n); });
  }

  void onRead(const asio::error_code& ec, size_t n) {
    if (done_)
      return;
    if (ec) {
      if (ec == asio::error::eof) {
        const bool nothing = parser_.idle();
        const ParseStatus st = parser_.finish(); // completes a close-delimited body
        if (done_)
          return;
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
      complete();
      return;
    case ParseStatus::kError:
      fail(ErrorCode::kInvalidArgument,
           fmt::format("bad response from {}: {} ({})", addr_.toString(), parser_.errorMessage(),
                       parseErrorName(parser_.error())));
      return;
    }
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
  asio::ip::tcp::socket sock_;
  Parser parser_;
  ClientResponse rsp_;
  std::string out_;
  std::array<char, 16 * 1024> rbuf_;
  std::unique_ptr<Timer> connect_timer_;
  std::unique_ptr<Timer> total_timer_;
  std::unique_ptr<Timer> idle_timer_;
  bool done_ = false;
};

void RequestHandle::cancel() {
  if (auto ex = ex_.lock())
    ex->cancel();
}

bool RequestHandle::active() const {
  auto ex = ex_.lock();
  return ex && ex->active();
}

Client::Client(Dispatcher& dispatcher) : dispatcher_(dispatcher) {}

Client::~Client() {
  for (auto& w : exchanges_)
    if (auto ex = w.lock())
      ex->cancel();
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
  auto ex =
      std::make_shared<ClientExchange>(dispatcher_, address, std::move(req), std::move(options));
  ex->callback = std::move(callback);
  return start(std::move(ex));
}

RequestHandle Client::stream(const net::SocketAddress& address, ClientRequest req,
                             RequestOptions options, StreamCallbacks callbacks) {
  auto ex =
      std::make_shared<ClientExchange>(dispatcher_, address, std::move(req), std::move(options));
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

size_t Client::activeRequests() const {
  size_t n = 0;
  for (auto& w : exchanges_)
    if (auto e = w.lock(); e && e->active())
      ++n;
  return n;
}

} // namespace trellis::http
