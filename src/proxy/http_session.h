#pragma once

#include <memory>
#include <optional>
#include <string>

#include <asio/ip/tcp.hpp>

#include "http/codec.h"
#include "http/headers.h"
#include "proxy/resilience/retry.h"
#include "proxy/worker.h"

namespace trellis::proxy {

// One downstream HTTP/1.1 connection on one worker: parses requests, routes each one, streams
// it to an upstream connection taken from the endpoint's pool, and streams the response back.
// Requests on a connection are handled one at a time (pipelined requests wait in the buffer).
//
// Flow control: a direction's parser runs only while no write to its peer is in flight, and
// a socket is read only when its buffer has been consumed, so a slow reader on either side
// stops the other side's reads instead of growing buffers. Small body pieces are copied into
// the outgoing buffer to coalesce writes; large ones are written from the read buffer.
class HttpSession : public std::enable_shared_from_this<HttpSession>,
                    private http::ParserCallbacks {
public:
  HttpSession(Worker& worker, std::string listener, asio::ip::tcp::socket socket);
  ~HttpSession() override;

  void start();

  static constexpr size_t kBufferSize = 16 * 1024;
  // Body pieces up to this size are copied into the outgoing buffer (coalescing writes);
  // larger ones are written from the read buffer without a copy.
  static constexpr size_t kCopyThreshold = 4096;

private:
  class ResponseSide;
  friend class ResponseSide;

  enum class Phase : uint8_t {
    kIdle,       // waiting for (or reading) a request head
    kConnecting, // head parsed, connecting upstream
    kProxying,   // request and response streaming
    kReplying,   // sending a local reply
    kTunnel,     // handed over to a Tunnel
    kClosed,
  };
  // Why the request parser is paused.
  enum class DownPause : uint8_t { kNone, kConnecting, kPiece, kComplete, kReply };

  // Downstream side.
  void readDown();
  void onDownRead(const std::error_code& ec, size_t n);
  void processDown();
  void onDownParseError();
  // http::ParserCallbacks (the request parser)
  http::Action onMessageBegin() override;
  http::Action onRequestLine(std::string_view method, std::string_view target,
                             http::Version version) override;
  http::Action onHeader(std::string_view name, std::string_view value) override;
  http::Action onHeadersComplete(const http::MessageHead& head) override;
  http::Action onBody(std::string_view piece) override;
  http::Action onMessageComplete() override;

  // Routing and upstream.
  bool routeRequest();
  // After routing (and any injected delay): circuit breaker, deadline, endpoint, first try.
  // kContinue when an upstream connection is ready now; kPause while connecting or replying.
  http::Action beginUpstream();
  // Picks an endpoint not tried yet where possible; false (and a 503 UH reply) when none.
  bool pickEndpoint();
  // Starts a try on ep_: a pooled connection or a new one. Return as beginUpstream().
  http::Action startTry();
  // After a timer started a try: lets the request parser continue if the try is ready.
  void resumeAfterWait(http::Action a);
  void buildUpstreamHead();
  bool connectUpstream(); // false: refused by a circuit breaker (replied 503 UO)
  void onConnected(const std::error_code& ec);
  void upstreamReady(std::shared_ptr<UpstreamConn> conn, bool reused);
  void flushUp();
  void readUp();
  void onUpRead(const std::error_code& ec, size_t n);
  void processUp();
  // A try failed before (or while) its response arrived: retried if the policy allows,
  // otherwise answered with `status` (or the connection cut, if the response had started).
  void onUpstreamFailure(TryFailure failure, const char* flag, uint16_t status);
  // Checks the retry policy, budget and circuit breaker for one more try; true when a retry
  // may start (and holds a retry slot).
  bool acquireRetry(TryFailure failure, uint16_t status);
  // Abandons the current try and waits out the backoff before the next one.
  void scheduleRetry();
  void startRetry();
  void reportOutcome(Outcome o);
  void armTryTimer();
  void armRequestTimer(MonotonicTime at);
  void onRequestTimer();
  void abandonConnect();
  void releaseSlots();

  // Response side (callbacks of the response parser).
  http::Action rspStatusLine(http::Version version, uint16_t status, std::string_view reason);
  http::Action rspHeader(std::string_view name, std::string_view value);
  http::Action rspHeadersComplete(const http::MessageHead& head);
  http::Action rspBody(std::string_view piece);
  http::Action rspComplete();
  bool retryOnStatus(); // at a final response head: whether its status is retried
  bool peerProxyFailure(); // at a 5xx head from a trusted peer: whether it names a failure
  void flushDown();
  void startTunnel();

  // Ending requests and the connection.
  // flag "-": a reply the configuration asked for (a redirect), not counted as a local reply.
  void localReply(uint16_t status, const char* flag, std::string_view body, bool close = false,
                  std::string_view location = {});
  bool routeReplacesOrRemoves(std::string_view name) const;
  // The route's timeout expired: 504 UT, or the connection cut if the response had started.
  void requestTimedOut();
  // Finishes the request once the response is parsed and every write has completed.
  void maybeFinish();
  void finishRequest();
  void releaseUpstream(bool reusable);
  void closeDown();
  void armIdleTimer(Duration d);
  void onIdleTimer();

  Worker& worker_;
  std::string listener_name_;
  asio::ip::tcp::socket down_;
  std::string peer_ip_;
  std::unique_ptr<ResponseSide> rsp_cb_;
  http::Parser dparser_;
  http::Parser uparser_;
  std::unique_ptr<char[]> dbuf_, ubuf_;
  size_t dbeg_ = 0, dend_ = 0, ubeg_ = 0, uend_ = 0;
  bool reading_down_ = false, reading_up_ = false, writing_down_ = false, writing_up_ = false;
  Phase phase_ = Phase::kIdle;
  DownPause down_pause_ = DownPause::kNone;
  bool up_piece_pause_ = false; // the response parser is paused on a zero-copy piece
  std::unique_ptr<Timer> timer_;
  MonotonicTime last_activity_{};
  Duration idle_timeout_{0};
  uint32_t requests_on_conn_ = 0;

  // The current request.
  std::shared_ptr<WorkerConfig> cfg_;
  ListenerRuntime* lrt_ = nullptr;
  std::shared_ptr<uint32_t> counted_in_; // the open-connection counter that counts this one
  const Route* route_ = nullptr;
  size_t route_index_ = 0, target_index_ = 0;
  ClusterRuntime* cluster_ = nullptr;
  size_t ep_ = 0;
  bool ep_counted_ = false;
  std::shared_ptr<UpstreamConn> up_;
  bool up_reused_ = false;
  bool retried_reuse_ = false;
  std::string method_, target_;
  http::Version version_ = http::Version::kHttp11;
  http::HeaderMap req_headers_;
  http::MessageHead req_head_;
  std::string up_head_;     // the serialised upstream head, kept for a reuse-race retry
  char request_id_[128];    // x-request-id sent upstream (received or generated)
  size_t request_id_len_ = 0;
  std::string up_out_;      // bytes to write upstream
  std::string_view up_piece_; // a large body piece written from dbuf_ without copying
  bool up_chunked_ = false;   // request body re-framed as chunked upstream
  bool req_parsed_ = false;   // the whole request has been parsed
  bool req_sent_ = false;     // ... and written upstream
  uint64_t req_body_bytes_ = 0;
  // Response.
  uint16_t status_ = 0;
  http::Version rsp_version_ = http::Version::kHttp11;
  std::string reason_;
  http::HeaderMap rsp_headers_;
  bool rsp_started_ = false;  // response head handed to the downstream buffer
  bool rsp_parsed_ = false;   // whole upstream response parsed
  bool rsp_rechunk_ = false;  // response body re-framed as chunked downstream
  bool keep_alive_ = true;    // downstream connection survives this request
  bool upgrading_ = false;    // a 101 response: switch to a tunnel once written
  std::string down_out_;
  std::string_view down_piece_;
  std::string flag_ = "-";
  MonotonicTime req_start_{};
  SystemTime req_wall_start_{};
  uint64_t bytes_in_req_ = 0, bytes_out_req_ = 0;
  bool closed_ = false;

  // Fault tolerance of the current request.
  enum class Wait : uint8_t { kNone, kFaultDelay, kBackoff };
  std::unique_ptr<Timer> req_timer_; // deadlines, per-try timeout, backoff, injected delay
  Wait wait_ = Wait::kNone;
  std::shared_ptr<HttpSession> wait_hold_; // keeps the session alive through a wait
  bool header_timer_ = false;       // req_timer_ is timing a slow request head
  bool fault_abort_ = false;        // abort after the injected delay
  bool has_req_deadline_ = false, has_try_deadline_ = false;
  MonotonicTime req_deadline_{}, try_deadline_{}, header_deadline_{}, wait_until_{};
  MonotonicTime req_timer_at_ = MonotonicTime::max(); // when req_timer_ fires, if enabled
  uint32_t retries_done_ = 0;
  static constexpr size_t kMaxTries = 11; // attempts (<= 10 retries) + the first try
  std::array<size_t, kMaxTries> tried_{};
  size_t tried_n_ = 0;
  bool holds_request_slot_ = false, holds_retry_slot_ = false, holds_pending_slot_ = false;
  bool holds_waiting_retry_ = false; // counted in the cluster's retriesWaiting()
  bool recording_ = false;   // the route retries: keep the body sent for a replay
  bool replayable_ = true;   // replay_ holds the whole body sent so far
  bool retry_status_ = false; // the response head just parsed is to be retried
  // The response head just parsed is a peer proxy's answer naming a failure (the cluster's
  // trust_proxy_errors): the try fails as that failure, with this flag.
  std::optional<TryFailure> peer_failure_;
  const char* peer_flag_ = "";
  std::string replay_;       // request body as framed upstream, for a retry
  size_t attempt_at_ = 0, attempt_len_ = 0; // the x-trellis-attempt value within up_head_
};

// A downstream TCP connection of a `protocol: tcp` listener: picks an endpoint of the
// listener's cluster, connects, and hands both sockets to a Tunnel.
void startTcpSession(Worker& worker, const std::string& listener, asio::ip::tcp::socket socket);

} // namespace trellis::proxy
