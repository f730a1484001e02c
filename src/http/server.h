#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include <asio/ip/tcp.hpp>

#include "base/dispatcher.h"
#include "base/result.h"
#include "http/codec.h"
#include "http/headers.h"
#include "http/uri.h"
#include "net/address.h"

// A small HTTP/1.1 server for the admin listener and the control-plane API: keep-alive,
// pipelining, bounded request bodies, asynchronous and streaming (chunked) responses.
// Everything runs on one Dispatcher.
namespace trellis::http {

struct ServerRequest;

struct ServerSettings {
  // Largest request body buffered for the handler; above it the server answers 413 and
  // closes (before reading the body when Content-Length announces it).
  uint64_t max_request_body_bytes = 1024 * 1024;
  // Open connections at once; a connection past it gets 503 and is closed.
  uint32_t max_connections = 1024;
  // A connection with no request in progress and no response outstanding is closed after
  // this long. Also the longest pause between bytes while a body is read, and the longest
  // time the client may take no response bytes while a write is pending (then: closed).
  Duration idle_timeout = std::chrono::seconds(60);
  // From the first byte of a request until its header section is complete; past it the
  // server answers 408 and closes (slow-header clients).
  Duration header_read_timeout = std::chrono::seconds(10);
  // Requests parsed ahead of their responses on one connection; beyond it the server stops
  // reading that connection until responses go out.
  uint32_t max_pipelined_requests = 16;
  // Response bytes waiting for a slow client on one connection (counting a streaming
  // response's unsent chunks); a stream write past it closes the connection.
  uint64_t max_response_buffer_bytes = 8 * 1024 * 1024;
  // After the last response of a closing connection, how long unread request bytes are
  // drained so the client sees the response rather than a reset.
  Duration close_linger_timeout = std::chrono::seconds(2);
  ParserLimits parser;
  // Requests to hand to the handler as soon as their head is read, asked for each request
  // whose body is chunked: their body then goes to the handler piece by piece
  // (ResponseWriter::onRequestBody) for as long as it lasts, max_request_body_bytes does
  // not apply, and a silent body is not timed out (a long-lived upload beside a streaming
  // response: the mesh stream's acks). Unset: every body is buffered.
  std::function<bool(const ServerRequest&)> streams_request_body;
};

// Counters of one server; read on its dispatcher's thread.
struct ServerStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_rejected = 0; // over max_connections
  uint64_t requests = 0;             // handed to the handler
  uint64_t bytes_received = 0;
  uint64_t body_too_large = 0;
  uint64_t header_timeouts = 0;
  uint64_t idle_timeouts = 0;
  uint64_t slow_client_closes = 0;
  std::array<uint64_t, static_cast<size_t>(ParseError::kCount)> parse_errors{};
};

// A parsed request with its body. The handler receives a reference that stays valid for as
// long as the handler holds the request's ResponseWriter.
struct ServerRequest {
  Method method = Method::kGet;
  std::string method_name; // as sent ("GET", "PURGE", ...)
  std::string target;      // as sent
  std::string path;        // percent-decoded path of the target
  std::string raw_query;   // the query, undecoded, without '?'
  QueryParams query_params;
  Version version = Version::kHttp11;
  HeaderMap headers;
  std::string body;
  net::SocketAddress peer;
  bool keep_alive = true;
  // The body is not in `body`: it comes piece by piece (ServerSettings::streams_request_body).
  bool body_streamed = false;

  // The first value of query parameter `name`.
  std::optional<std::string_view> query(std::string_view name) const;
  // True when `name` appears in the query, with or without a value ("?recurse").
  bool hasQuery(std::string_view name) const;
  std::optional<std::string_view> header(std::string_view name) const { return headers.get(name); }
};

// The answer to one request. Either send() once, or startStream() then any number of
// write() and one finish(). Responses on a connection go out in request order; a writer not
// at the head of the line buffers its output until the ones before it complete.
// Methods must be called on the server's dispatcher thread (post() to it from elsewhere).
// Calls after the connection closed, or out of order, do nothing and return false.
class ResponseWriter {
public:
  virtual ~ResponseWriter() = default;

  // A complete response. The server sets Content-Length (body omitted for HEAD) and
  // Connection; handler-set Content-Length/Transfer-Encoding are replaced.
  virtual bool send(uint16_t status, const HeaderMap& headers, std::string_view body) = 0;
  // Starts a streaming response: chunked for HTTP/1.1, close-delimited for HTTP/1.0.
  virtual bool startStream(uint16_t status, const HeaderMap& headers) = 0;
  // Sends one piece of a stream. False (and the connection is closed) when the client is
  // gone or is reading so slowly that max_response_buffer_bytes would be exceeded.
  virtual bool write(std::string_view data) = 0;
  // Ends a stream.
  virtual bool finish() = 0;

  // False once the connection is gone (client closed, reset, timed out, server stopped).
  virtual bool isOpen() const = 0;
  // `cb` runs (once, on the dispatcher thread) if the connection closes before this
  // response finished. Runs at once if it already has. Replaces an earlier callback.
  virtual void onClosed(std::function<void()> cb) = 0;
  // Bytes of this connection's responses not yet taken by the kernel.
  virtual size_t bufferedBytes() const = 0;
  virtual Dispatcher& dispatcher() = 0;
  // For a request handed over before its body (ServerSettings::streams_request_body): `cb`
  // gets each piece of the decoded body as it arrives, then ("", true) once it ended.
  // Pieces that arrive before it is set are dropped; it is dropped when the connection
  // closes. Does nothing for other requests.
  virtual void onRequestBody(std::function<void(std::string_view piece, bool end)> cb) = 0;
};

using RequestHandler = std::function<void(ServerRequest&, std::shared_ptr<ResponseWriter>)>;

class ServerConnection;

// Listens on one address and serves every connection on `dispatcher`. Create, use and
// destroy it on the dispatcher's thread (or before the dispatcher runs).
class Server {
public:
  Server(Dispatcher& dispatcher, ServerSettings settings, RequestHandler handler);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts accepting. Port 0 picks a free port (see boundAddress()).
  Status listen(const net::SocketAddress& address);
  net::SocketAddress boundAddress() const { return bound_; }
  // Stops accepting and closes every connection; outstanding writers see isOpen() false
  // and their onClosed callbacks run.
  void stop();

  size_t connectionCount() const { return conns_.size(); }
  const ServerStats& stats() const { return stats_; }
  const ServerSettings& settings() const { return settings_; }
  Dispatcher& dispatcher() { return dispatcher_; }

private:
  friend class ServerConnection;
  void accept();
  void onConnectionClosed(ServerConnection* c);

  Dispatcher& dispatcher_;
  ServerSettings settings_;
  RequestHandler handler_;
  asio::ip::tcp::acceptor acceptor_;
  net::SocketAddress bound_;
  std::unordered_map<ServerConnection*, std::shared_ptr<ServerConnection>> conns_;
  ServerStats stats_;
  // Accept handlers check this so that none runs against a destroyed server.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

} // namespace trellis::http
