#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/dispatcher.h"
#include "base/result.h"
#include "http/codec.h"
#include "http/headers.h"
#include "net/address.h"

// A small asynchronous HTTP/1.1 client on a Dispatcher, for health checks and for sidecars
// talking to the control plane: Content-Length, chunked and close-delimited responses, and a
// streaming mode for long-lived watch responses.
//
// By default each request has its own connection (sent with "Connection: close"). A request()
// with RequestOptions::keep_alive is sent as a persistent HTTP/1.1 request; when its response
// leaves the connection reusable (HTTP/1.1, no "Connection: close", body framed by
// Content-Length or chunked, no extra bytes after it) the socket waits in the Client's idle
// pool (ClientSettings) for the next keep_alive request to the same address. An idle socket
// that the server closes (or sends anything on) is dropped at once. Because a server may close
// an idle connection just as a request goes out on it, a request on a reused connection that
// fails before any response byte arrives is sent again, once, on a fresh connection: use
// keep_alive only for requests that are safe to send twice (idempotent ones, such as the mesh
// ack). stream() never uses or fills the pool.
namespace trellis::http {

struct ClientRequest {
  std::string method = "GET";
  std::string target = "/"; // origin-form ("/v1/health?x=1")
  HeaderMap headers;        // Host, Content-Length and Connection are added when absent
  std::string body;
};

struct RequestOptions {
  Duration connect_timeout = std::chrono::seconds(5);
  // The whole exchange, from connect to the last body byte. Zero: no limit (watch streams).
  Duration timeout = std::chrono::seconds(30);
  // Longest silence from the server once connected. Zero: no limit.
  Duration idle_timeout = Duration::zero();
  // Largest body buffered by request(); larger is an error. (stream() does not buffer.)
  uint64_t max_response_body_bytes = 64 * 1024 * 1024;
  ParserLimits parser;
  // request() only: reuse an idle pooled connection and leave this one in the pool afterwards
  // when it can be (see the comment at the top). The request may be sent twice; see there.
  bool keep_alive = false;
  // stream() only: the request goes with "Transfer-Encoding: chunked" (ClientRequest::body
  // is its first piece, if any) and its body stays open: RequestHandle::write() sends more,
  // for as long as the exchange lasts (the mesh stream's acks ride on it).
  bool open_body = false;
};

// The Client's pool of idle keep-alive connections.
struct ClientSettings {
  // Idle connections kept per address; past it the longest-idle one is closed. Zero: none
  // are kept (keep_alive requests still go out without "Connection: close").
  uint32_t max_idle_per_address = 4;
  // An idle connection unused for this long is closed. Keep it below the servers' own idle
  // timeout (the control plane's is 15 min) so the client is usually the one closing. Zero:
  // none are kept.
  Duration pool_idle_timeout = std::chrono::seconds(30);
};

struct ClientResponseHead {
  uint16_t status = 0;
  std::string reason;
  Version version = Version::kHttp11;
  HeaderMap headers;
};

struct ClientResponse : ClientResponseHead {
  std::string body;
  HeaderMap trailers;
};

// How a request failed; each kind has its own ErrorCode in the Error given to callbacks.
enum class ClientErrorKind : uint8_t {
  kNone,
  kConnectFailed,    // ErrorCode::kUnavailable: refused, unreachable
  kTimeout,          // ErrorCode::kDeadlineExceeded: connect, total or idle timeout
  kReset,            // ErrorCode::kIo: reset, or closed before the response was complete
  kBadResponse,      // ErrorCode::kInvalidArgument: the response did not parse
  kResponseTooLarge, // ErrorCode::kResourceExhausted: over max_response_body_bytes
  kInvalidRequest,   // ErrorCode::kFailedPrecondition: bad method/target/header given
};
ClientErrorKind clientErrorKind(const Error& e);

class ClientExchange;
class ConnectionPool;

// Cancels its request when asked (never by itself going out of scope). A cancelled
// request's callbacks are not called.
class RequestHandle {
public:
  RequestHandle() = default;
  explicit RequestHandle(std::weak_ptr<ClientExchange> ex) : ex_(std::move(ex)) {}
  void cancel();
  // True until the request completed, failed or was cancelled.
  bool active() const;
  // A request with RequestOptions::open_body: sends `piece` as the next chunk of its body
  // (after the head, in call order; queued while connecting). False when the exchange is over
  // or its body is not open. A write that fails is not reported here: the response side sees
  // the closed connection.
  bool write(std::string_view piece);

private:
  std::weak_ptr<ClientExchange> ex_;
};

// Issues requests on one dispatcher. Create, use and destroy it on that dispatcher's thread;
// callbacks run there too, never from inside request()/stream() itself.
class Client {
public:
  using ResponseCallback = std::function<void(Result<ClientResponse>)>;

  struct StreamCallbacks {
    // The final (non-1xx) response head.
    std::function<void(const ClientResponseHead&)> on_head;
    // Each piece of the decoded body, as it arrives.
    std::function<void(std::string_view)> on_body;
    // Called once at the end: ok when the body ended normally, else why it failed (also
    // when it failed before a head arrived).
    std::function<void(Status)> on_done;
  };

  explicit Client(Dispatcher& dispatcher, ClientSettings settings = {});
  // Cancels every outstanding request (their callbacks are not called) and closes the idle
  // pooled connections.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  RequestHandle request(const net::SocketAddress& address, std::string_view method,
                        std::string_view target, HeaderMap headers, std::string body,
                        Duration timeout, ResponseCallback callback);
  RequestHandle request(const net::SocketAddress& address, ClientRequest req,
                        RequestOptions options, ResponseCallback callback);
  // Like request(), but hands the body over piece by piece (for watch streams); the body is
  // never buffered and max_response_body_bytes does not apply.
  RequestHandle stream(const net::SocketAddress& address, ClientRequest req, RequestOptions options,
                       StreamCallbacks callbacks);

  // Requests started and not yet finished.
  size_t activeRequests() const;
  // Idle pooled connections, in all and to one address.
  size_t idleConnections() const;
  size_t idleConnections(const net::SocketAddress& address) const;

private:
  RequestHandle start(std::shared_ptr<ClientExchange> ex);

  Dispatcher& dispatcher_;
  // Shared so that exchanges still finishing can tell whether the Client (and so its pool)
  // is gone.
  std::shared_ptr<ConnectionPool> pool_;
  std::vector<std::weak_ptr<ClientExchange>> exchanges_;
};

} // namespace trellis::http
