#include "proxy/http_session.h"

#include <charconv>
#include <cstring>

#include <asio/connect.hpp>
#include <asio/write.hpp>

#include "base/log.h"
#include "proxy/router.h"
#include "proxy/tunnel.h"
#include "telemetry/trace.h"

namespace trellis::proxy {

// The response parser's callbacks, forwarded to the session (which already implements the
// request parser's callbacks through the same interface).
class HttpSession::ResponseSide : public http::ParserCallbacks {
public:
  explicit ResponseSide(HttpSession& s) : s_(s) {}
  http::Action onStatusLine(http::Version v, uint16_t status, std::string_view reason) override {
    return s_.rspStatusLine(v, status, reason);
  }
  http::Action onHeader(std::string_view name, std::string_view value) override {
    return s_.rspHeader(name, value);
  }
  http::Action onHeadersComplete(const http::MessageHead& head) override {
    return s_.rspHeadersComplete(head);
  }
  http::Action onBody(std::string_view piece) override { return s_.rspBody(piece); }
  http::Action onMessageComplete() override { return s_.rspComplete(); }

private:
  HttpSession& s_;
};

namespace {

http::ParserLimits limitsFor(const Listener* l) {
  http::ParserLimits lim;
  if (l) {
    lim.max_header_bytes = static_cast<uint32_t>(l->max_header_bytes);
    lim.max_headers = l->max_headers;
  }
  return lim;
}

const Listener* listenerConfig(Worker& w, const std::string& name) {
  auto& cfg = w.config();
  auto it = cfg->listeners.find(name);
  return it == cfg->listeners.end() ? nullptr : it->second->cfg;
}

void appendChunkHeader(size_t n, std::string& out) {
  char tmp[24];
  int len = std::snprintf(tmp, sizeof tmp, "%zx\r\n", n);
  out.append(tmp, static_cast<size_t>(len));
}

// The access log's bit for one of our short response flags.
uint32_t flagBits(std::string_view f) {
  using namespace telemetry;
  if (f == "NR")
    return kNoRoute;
  if (f == "UF" || f == "UC" || f == "UPE")
    return kUpstreamConnectionFailure;
  if (f == "UO")
    return kUpstreamOverflow;
  if (f == "UT")
    return kUpstreamRequestTimeout;
  if (f == "UH")
    return kNoHealthyUpstream;
  if (f == "DC")
    return kDownstreamDisconnect;
  if (f == "RL")
    return kRateLimited;
  if (f == "FI")
    return kFaultInjected;
  return 0;
}

// A name of the right length compared case-insensitively: most fields fail on length.
bool nameIs(std::string_view name, std::string_view lower) {
  return name.size() == lower.size() && http::equalsIgnoreCase(name, lower);
}

// The field names listed in a message's Connection fields (hop-by-hop for that message).
struct ConnectionTokens {
  explicit ConnectionTokens(const http::HeaderMap& h) {
    for (auto f : h) {
      if (!nameIs(f.name, "connection"))
        continue;
      http::forEachListElement(f.value, [&](std::string_view t) {
        if (n < names.size())
          names[n++] = t;
        else
          extra.push_back(t);
      });
    }
  }
  bool has(std::string_view name) const {
    for (size_t i = 0; i < n; ++i)
      if (nameIs(name, names[i]))
        return true;
    for (auto t : extra)
      if (nameIs(name, t))
        return true;
    return false;
  }
  std::array<std::string_view, 16> names; // no allocation for the usual handful
  size_t n = 0;
  std::vector<std::string_view> extra;
};

// True for fields a proxy never forwards: hop-by-hop ones, those named in Connection, and
// the framing fields it rewrites itself.
bool isDropped(std::string_view name, const ConnectionTokens& tokens) {
  if (http::isHopByHopHeader(name) || nameIs(name, "content-length"))
    return true;
  return tokens.n > 0 && tokens.has(name);
}

void appendField(std::string& out, std::string_view name, std::string_view value) {
  out.append(name).append(": ").append(value).append("\r\n");
}

void appendNumberField(std::string& out, std::string_view name, uint64_t v) {
  char tmp[24];
  auto [end, ec] = std::to_chars(tmp, tmp + sizeof tmp, v);
  (void)ec;
  out.append(name).append(": ").append(tmp, end).append("\r\n");
}

constexpr size_t kNoEndpoint = static_cast<size_t>(-1);

bool isIdempotent(std::string_view m) {
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "PUT" || m == "DELETE" ||
         m == "TRACE";
}

} // namespace

HttpSession::HttpSession(Worker& worker, std::string listener, asio::ip::tcp::socket socket)
    : worker_(worker), listener_name_(std::move(listener)), down_(std::move(socket)),
      rsp_cb_(std::make_unique<ResponseSide>(*this)),
      dparser_(http::ParserMode::kRequest, *this,
               limitsFor(listenerConfig(worker, listener_name_))),
      uparser_(http::ParserMode::kResponse, *rsp_cb_),
      dbuf_(std::make_unique<char[]>(kBufferSize)), ubuf_(std::make_unique<char[]>(kBufferSize)) {
  worker_.sessionOpened();
}

HttpSession::~HttpSession() {
  releaseSlots();
  worker_.sessionClosed();
}

void HttpSession::start() {
  std::error_code ec;
  auto ep = down_.remote_endpoint(ec);
  peer_ip_ = ec ? "" : ep.address().to_string();
  down_.set_option(asio::ip::tcp::no_delay(true), ec);
  cfg_ = worker_.config();
  auto it = cfg_->listeners.find(listener_name_);
  if (it != cfg_->listeners.end()) {
    lrt_ = it->second.get();
    counted_in_ = lrt_->connections; // the worker counted this connection there
    idle_timeout_ = lrt_->cfg->idle_timeout;
  }
  timer_ = worker_.dispatcher().createTimer([this] { onIdleTimer(); });
  req_timer_ = worker_.dispatcher().createTimer([this] { onRequestTimer(); });
  last_activity_ = req_start_ = worker_.dispatcher().now();
  // The first request's head must arrive within header_read_timeout.
  armIdleTimer(lrt_ ? lrt_->cfg->header_read_timeout : std::chrono::seconds(10));
  readDown();
}

// ---- downstream ---------------------------------------------------------------------------

void HttpSession::readDown() {
  // After an upgrade request's head, bytes from the client belong to the tunnel (or wait for
  // the upstream's refusal); no read may be pending when the sockets move to a Tunnel.
  if (reading_down_ || closed_ || phase_ == Phase::kTunnel || dend_ >= kBufferSize ||
      dparser_.upgraded())
    return;
  reading_down_ = true;
  down_.async_read_some(asio::buffer(dbuf_.get() + dend_, kBufferSize - dend_),
                        [self = shared_from_this()](const std::error_code& ec, size_t n) {
                          self->onDownRead(ec, n);
                        });
}

void HttpSession::onDownRead(const std::error_code& ec, size_t n) {
  reading_down_ = false;
  if (closed_ || phase_ == Phase::kTunnel)
    return;
  if (ec) {
    // The client went away. Mid-request, the upstream connection cannot be reused.
    if (phase_ != Phase::kIdle || !dparser_.idle())
      flag_ = "DC";
    releaseUpstream(false);
    closeDown();
    return;
  }
  dend_ += n;
  bytes_in_req_ += n;
  if (lrt_)
    lrt_->bytes_in.add(n);
  last_activity_ = worker_.dispatcher().now();
  processDown();
}

void HttpSession::processDown() {
  // Runs the parser at least once even with no new bytes: after a pause it may owe an event
  // for bytes it already consumed (the end of a bodyless message, say).
  bool first = true;
  while (!closed_ && (dbeg_ < dend_ || first) && !writing_up_ &&
         down_pause_ == DownPause::kNone && phase_ != Phase::kTunnel) {
    first = false;
    auto r = dparser_.execute(std::string_view(dbuf_.get() + dbeg_, dend_ - dbeg_));
    dbeg_ += r.consumed;
    if (r.status == http::ParseStatus::kError) {
      onDownParseError();
      return;
    }
    if (r.status == http::ParseStatus::kUpgraded) {
      // An upgrade request's head has been handled; the bytes after it are tunnel data,
      // held in dbuf_ until the upstream answers 101.
      if (down_pause_ == DownPause::kNone)
        down_pause_ = DownPause::kComplete;
      break;
    }
    if (r.status == http::ParseStatus::kPaused)
      break;
  }
  if (closed_)
    return;
  if (phase_ == Phase::kIdle && !header_timer_ && !dparser_.idle() && lrt_ &&
      lrt_->cfg->header_read_timeout.count() > 0 && requests_on_conn_ > 0) {
    // A later request on a keep-alive connection whose head did not arrive in one read: it
    // gets header_read_timeout from its first byte (the first request's is timed from the
    // connection's start by the idle timer). Heads that arrive whole never arm this.
    header_timer_ = true;
    header_deadline_ = req_start_ + lrt_->cfg->header_read_timeout;
    armRequestTimer(header_deadline_);
  }
  if (dbeg_ == dend_)
    dbeg_ = dend_ = 0;
  flushUp();
  if (!down_out_.empty())
    flushDown(); // e.g. a "100 Continue" we answered ourselves
  if (down_pause_ == DownPause::kNone && !writing_up_ && phase_ != Phase::kReplying)
    readDown();
  if (req_sent_)
    maybeFinish();
}

void HttpSession::onDownParseError() {
  http::ParseError e = dparser_.error();
  if (lrt_)
    lrt_->parse_errors[static_cast<size_t>(e)].inc();
  TLOG_DEBUG("listener {}: bad request from {}: {}", listener_name_, peer_ip_,
             dparser_.errorMessage());
  if (phase_ == Phase::kIdle || !rsp_started_) {
    releaseUpstream(false);
    localReply(http::parseErrorStatus(e), "DPE", dparser_.errorMessage(), true);
  } else {
    releaseUpstream(false);
    closeDown();
  }
}

http::Action HttpSession::onMessageBegin() {
  req_start_ = worker_.dispatcher().now();
  req_wall_start_ = worker_.dispatcher().timeSource().systemTime();
  req_headers_.clear();
  method_.clear();
  target_.clear();
  return http::Action::kContinue;
}

http::Action HttpSession::onRequestLine(std::string_view method, std::string_view target,
                                        http::Version version) {
  method_.assign(method);
  target_.assign(target);
  version_ = version;
  return http::Action::kContinue;
}

http::Action HttpSession::onHeader(std::string_view name, std::string_view value) {
  req_headers_.add(name, value);
  return http::Action::kContinue;
}

http::Action HttpSession::onHeadersComplete(const http::MessageHead& head) {
  req_head_ = head;
  ++requests_on_conn_;
  header_timer_ = false; // (a timer armed for it finds nothing due and stays quiet)
  // The idle timer stays armed as it is; when it fires it measures idleness from
  // last_activity_ and re-arms for the rest. Re-arming on every request would cost a
  // timer-set insert.
  last_activity_ = worker_.dispatcher().now();
  phase_ = Phase::kConnecting;
  if (!routeRequest())
    return http::Action::kPause; // a local reply is under way
  if (head.expect_continue) {
    // Answer the client's Expect ourselves: the upstream sees a plain request.
    req_headers_.remove("expect");
    down_out_.append("HTTP/1.1 100 Continue\r\n\r\n");
  }
  if (wait_ == Wait::kFaultDelay) {
    down_pause_ = DownPause::kConnecting; // the body waits with the request
    return http::Action::kPause;
  }
  return beginUpstream();
}

http::Action HttpSession::onBody(std::string_view piece) {
  req_body_bytes_ += piece.size();
  if (recording_ && replayable_) {
    const uint64_t limit = lrt_ ? lrt_->cfg->request_buffer_limit : 64 * 1024;
    if (replay_.size() + piece.size() + 32 > limit) {
      replayable_ = false; // too large to keep: this request will not be retried
      std::string().swap(replay_);
    } else {
      if (up_chunked_)
        appendChunkHeader(piece.size(), replay_);
      replay_.append(piece);
      if (up_chunked_)
        replay_.append("\r\n");
    }
  }
  if (up_chunked_)
    appendChunkHeader(piece.size(), up_out_);
  if (piece.size() <= kCopyThreshold) {
    up_out_.append(piece);
    if (up_chunked_)
      up_out_.append("\r\n");
    return http::Action::kContinue;
  }
  up_piece_ = piece;
  down_pause_ = DownPause::kPiece;
  return http::Action::kPause;
}

http::Action HttpSession::onMessageComplete() {
  if (up_chunked_) {
    http::appendLastChunk(up_out_);
    if (recording_ && replayable_)
      http::appendLastChunk(replay_);
  }
  req_parsed_ = true;
  down_pause_ = DownPause::kComplete;
  return http::Action::kPause;
}

// ---- routing and upstream -----------------------------------------------------------------

bool HttpSession::routeRequest() {
  // Each request uses the configuration current when its head arrived; a listener removed by
  // a reload keeps serving its open connections with the configuration they started on.
  const auto& current = worker_.config();
  if (current->listeners.count(listener_name_))
    cfg_ = current;
  else if (!cfg_)
    cfg_ = current;
  auto it = cfg_->listeners.find(listener_name_);
  if (it == cfg_->listeners.end()) {
    localReply(503, "NR", "listener removed", true);
    return false;
  }
  lrt_ = it->second.get();
  if (counted_in_ && counted_in_ != lrt_->connections) {
    // A listener removed and added back since: its counter is a new one. The connection
    // moves to it, so the new count includes it and the old one no longer does.
    if (*counted_in_ > 0)
      --*counted_in_;
    ++*lrt_->connections;
    counted_in_ = lrt_->connections;
  }
  std::string_view path = target_;
  if (path.rfind("http://", 0) == 0 || path.rfind("https://", 0) == 0) {
    // absolute-form: route on its path; the authority becomes the Host
    size_t scheme_end = path.find("://") + 3;
    size_t slash = path.find('/', scheme_end);
    std::string_view authority = path.substr(scheme_end, slash - scheme_end);
    req_headers_.set("host", authority);
    path = slash == std::string_view::npos ? std::string_view("/") : path.substr(slash);
    target_ = std::string(path);
    path = target_;
  }
  size_t q = path.find('?');
  std::string_view path_only = path.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view() : path.substr(q + 1);
  RequestView rr{method_, path_only,
                 [this](std::string_view name) { return req_headers_.get(name); }, query};
  auto match = matchRoute(lrt_->cfg->routes, rr);
  if (!match) {
    route_ = nullptr;
    localReply(404, "NR", "no route matched\n");
    return false;
  }
  route_index_ = *match;
  route_ = &lrt_->cfg->routes[route_index_];
  if (route_->redirect) {
    const std::string location =
        redirectLocation(*route_, req_headers_.get("host").value_or(""), path_only, query);
    route_ = nullptr; // nothing is forwarded: no cluster, no retries
    localReply(lrt_->cfg->routes[route_index_].redirect->status, "-", "", false, location);
    return false;
  }
  target_index_ = selectCluster(*route_, worker_.random().random());
  cluster_ = cfg_->clusters[route_->clusters[target_index_].cluster_index].get();
  ep_ = kNoEndpoint;
  if (route_->rate_limit) {
    SharedTokenBucket* bucket = cfg_->shared->rateLimit(listener_name_, route_index_);
    if (bucket && !bucket->tryTake(worker_.dispatcher().now())) {
      lrt_->route_policy[route_index_].rate_limited.inc();
      localReply(route_->rate_limit->status, "RL", "rate limited\n");
      return false;
    }
  }
  const FaultConfig& fault = route_->fault;
  auto chance = [this](double percent) {
    return percent >= 100 ||
           (percent > 0 && static_cast<double>(worker_.random().random() >> 11) * 0x1.0p-53 * 100 <
                               percent);
  };
  fault_abort_ = fault.abort && chance(fault.abort->percent);
  if (fault.delay && chance(fault.delay->percent)) {
    lrt_->route_policy[route_index_].fault_delay.inc();
    wait_ = Wait::kFaultDelay;
    wait_until_ = worker_.dispatcher().now() + fault.delay->duration;
    wait_hold_ = shared_from_this(); // no I/O is pending while it waits
    armRequestTimer(wait_until_);
    return true;
  }
  if (fault_abort_) {
    lrt_->route_policy[route_index_].fault_abort.inc();
    localReply(fault.abort->status, "FI", "fault injected\n");
    return false;
  }
  return true;
}

http::Action HttpSession::beginUpstream() {
  ClusterState& state = *cluster_->state;
  if (!state.limit(LimitKind::kRequests).tryAcquire()) {
    cluster_->stats().overflow[static_cast<size_t>(LimitKind::kRequests)].inc();
    localReply(503, "UO", "upstream overflow: too many requests to the cluster\n");
    return http::Action::kPause;
  }
  holds_request_slot_ = true;
  has_req_deadline_ = route_->timeout.count() > 0;
  if (has_req_deadline_)
    req_deadline_ = worker_.dispatcher().now() + route_->timeout;
  recording_ = route_->retries.attempts > 0;
  replayable_ = true;
  if (!pickEndpoint())
    return http::Action::kPause;
  buildUpstreamHead();
  return startTry();
}

bool HttpSession::pickEndpoint() {
  cluster_->syncHealth();
  LbContext ctx;
  if (cluster_->cfg.hash_on)
    ctx.hash = requestHash(*cluster_->cfg.hash_on, peer_ip_,
                           [this](std::string_view n) { return req_headers_.get(n); });
  ctx.exclude = std::span<const size_t>(tried_.data(), tried_n_);
  auto pick = cluster_->lb->pick(ctx);
  if (!pick) {
    ep_ = kNoEndpoint;
    localReply(503, "UH", "no healthy upstream\n");
    return false;
  }
  if (cluster_->lb->panicking())
    cluster_->stats().panic.inc();
  ep_ = *pick;
  cluster_->endpoints.onRequestStart(ep_);
  ep_counted_ = true;
  return true;
}

http::Action HttpSession::startTry() {
  armTryTimer();
  if (auto conn = cluster_->pool(ep_).take()) {
    upstreamReady(std::move(conn), true);
    return http::Action::kContinue;
  }
  if (!connectUpstream())
    return http::Action::kPause;
  if (down_pause_ == DownPause::kNone)
    down_pause_ = DownPause::kConnecting;
  return http::Action::kPause;
}

void HttpSession::resumeAfterWait(http::Action a) {
  if (closed_ || phase_ != Phase::kProxying)
    return;
  if (a == http::Action::kContinue && down_pause_ == DownPause::kConnecting) {
    down_pause_ = DownPause::kNone;
    dparser_.resume();
  }
  processDown();
}

void HttpSession::armTryTimer() {
  const MonotonicTime now = worker_.dispatcher().now();
  const Duration per_try = route_->retries.per_try_timeout;
  has_try_deadline_ = per_try.count() > 0;
  if (has_try_deadline_)
    try_deadline_ = now + per_try;
  if (!has_req_deadline_ && !has_try_deadline_)
    return;
  MonotonicTime next = has_req_deadline_ ? req_deadline_ : try_deadline_;
  if (has_try_deadline_ && try_deadline_ < next)
    next = try_deadline_;
  armRequestTimer(next);
}

void HttpSession::armRequestTimer(MonotonicTime at) {
  // Lazy: a timer already due no later than `at` stays as it is; when it fires, the handler
  // finds what is actually due and re-arms for the rest. With the same route timeout on
  // every request of a connection, deadlines only move later, so most requests cost no
  // timer operation at all.
  if (req_timer_at_ <= at && req_timer_->enabled())
    return;
  req_timer_at_ = at;
  req_timer_->enable(std::max(at - worker_.dispatcher().now(), Duration(0)));
}

void HttpSession::onRequestTimer() {
  req_timer_at_ = MonotonicTime::max();
  if (closed_)
    return;
  const MonotonicTime now = worker_.dispatcher().now();
  if (header_timer_) {
    if (now < header_deadline_) {
      armRequestTimer(header_deadline_);
      return;
    }
    header_timer_ = false;
    if (phase_ == Phase::kIdle && !dparser_.idle()) {
      lrt_->timeouts[static_cast<size_t>(TimeoutKind::kHeaderRead)].inc();
      localReply(408, "DT", "request header timeout\n", true);
    }
    return;
  }
  if (wait_ != Wait::kNone) {
    if (now < wait_until_) {
      armRequestTimer(wait_until_);
      return;
    }
    // The wait is over: the session lives on through the I/O it starts now.
    auto hold = std::move(wait_hold_);
    if (wait_ == Wait::kBackoff) {
      startRetry();
      return;
    }
    wait_ = Wait::kNone;
    if (fault_abort_) {
      lrt_->route_policy[route_index_].fault_abort.inc();
      localReply(route_->fault.abort->status, "FI", "fault injected\n");
      return;
    }
    resumeAfterWait(beginUpstream());
    return;
  }
  if (phase_ != Phase::kConnecting && phase_ != Phase::kProxying)
    return; // between requests, or a reply under way: nothing is timed
  if (has_req_deadline_ && now >= req_deadline_) {
    has_req_deadline_ = has_try_deadline_ = false;
    if (!rsp_parsed_)
      reportOutcome(Outcome::kLocalFailure);
    abandonConnect();
    releaseUpstream(false);
    requestTimedOut();
    return;
  }
  if (has_try_deadline_ && now >= try_deadline_) {
    has_try_deadline_ = false;
    if (!rsp_started_) {
      lrt_->timeouts[static_cast<size_t>(TimeoutKind::kPerTry)].inc();
      abandonConnect();
      onUpstreamFailure(TryFailure::kTimeout, "UT", 504);
      return;
    }
  }
  if (has_try_deadline_ && (!has_req_deadline_ || try_deadline_ < req_deadline_))
    armRequestTimer(try_deadline_);
  else if (has_req_deadline_)
    armRequestTimer(req_deadline_);
}

void HttpSession::abandonConnect() {
  if (phase_ == Phase::kConnecting && up_) {
    // The connect in flight is given up: closing cancels it (its handler sees up_ changed).
    std::error_code ec;
    up_->socket.close(ec);
    up_.reset();
  }
  if (holds_pending_slot_) {
    holds_pending_slot_ = false;
    cluster_->state->limit(LimitKind::kPendingRequests).release();
  }
}

void HttpSession::reportOutcome(Outcome o) {
  if (cluster_ && ep_ != kNoEndpoint && cluster_->state->hasOutlierDetection())
    cluster_->state->reportOutcome(ep_, o, worker_.dispatcher().now());
}

bool HttpSession::acquireRetry(TryFailure failure, uint16_t status) {
  if (!route_ || !cluster_ || rsp_started_ || req_head_.upgrade)
    return false;
  const RetryPolicy& p = route_->retries;
  if (retries_done_ >= p.attempts || tried_n_ + 1 >= kMaxTries || !replayable_ ||
      !retryOnCovers(p, failure, status) || !methodAllowsRetry(p, method_, failure))
    return false;
  // Nothing left to retry on: every endpoint failed its checks or is ejected (the balancer
  // may still be using them all, in panic). Failing now beats waiting out backoffs for
  // tries that are all but certain to fail too.
  cluster_->syncHealth();
  if (cluster_->endpoints.availableCount() == 0)
    return false;
  ClusterState& state = *cluster_->state;
  SharedLimit& retries = state.limit(LimitKind::kRetries);
  if (holds_retry_slot_) {
    holds_retry_slot_ = false; // the retry try that just failed is over
    retries.release();
  }
  // A retry try counts under max_retries while it is in flight (from its start after the
  // backoff to the end of the request or of that try): that is the load it adds to the
  // upstreams. The budget also counts retries waiting out their backoff.
  if (!retryBudgetAllows(p, state.limit(LimitKind::kRequests).used(), retries.used(),
                         state.retriesWaiting().load(std::memory_order_relaxed))) {
    cluster_->stats().retries_budget_exhausted.inc();
    return false;
  }
  if (retries.remaining() == 0) {
    cluster_->stats().overflow[static_cast<size_t>(LimitKind::kRetries)].inc();
    return false;
  }
  return true;
}

void HttpSession::scheduleRetry() {
  ++retries_done_;
  cluster_->stats().retries.inc();
  cluster_->state->retriesWaiting().fetch_add(1, std::memory_order_relaxed);
  holds_waiting_retry_ = true;
  if (ep_ != kNoEndpoint)
    tried_[tried_n_++] = ep_;
  abandonConnect();
  releaseUpstream(false);
  up_out_.clear();
  up_piece_ = {};
  req_sent_ = false;
  ubeg_ = uend_ = 0;
  status_ = 0;
  // The request parser waits for the next try's connection (what it already parsed is in
  // replay_); kComplete stays: the whole request is in replay_.
  if (down_pause_ == DownPause::kNone || down_pause_ == DownPause::kPiece)
    down_pause_ = DownPause::kConnecting;
  phase_ = Phase::kConnecting;
  wait_ = Wait::kBackoff;
  const MonotonicTime now = worker_.dispatcher().now();
  wait_until_ = now + retryBackoff(route_->retries, retries_done_, worker_.random().random());
  if (has_req_deadline_ && wait_until_ > req_deadline_)
    wait_until_ = req_deadline_; // startRetry() then answers 504
  wait_hold_ = shared_from_this(); // no I/O is pending while it waits
  // A backoff may end before a deadline the timer is armed for: enable it exactly.
  req_timer_at_ = wait_until_;
  req_timer_->enable(wait_until_ - now);
}

void HttpSession::requestTimedOut() {
  lrt_->timeouts[static_cast<size_t>(TimeoutKind::kRequest)].inc();
  if (rsp_started_) {
    // Part of the response is already on its way: all we can do is cut the connection.
    flag_ = "UT";
    closeDown();
    return;
  }
  localReply(504, "UT", "upstream request timeout\n", !req_parsed_);
}

void HttpSession::startRetry() {
  wait_ = Wait::kNone;
  if (holds_waiting_retry_) {
    holds_waiting_retry_ = false;
    cluster_->state->retriesWaiting().fetch_sub(1, std::memory_order_relaxed);
  }
  if (has_req_deadline_ && worker_.dispatcher().now() >= req_deadline_) {
    requestTimedOut();
    return;
  }
  if (!pickEndpoint())
    return;
  cluster_->state->limit(LimitKind::kRetries).acquire();
  holds_retry_slot_ = true;
  // The same head with the next attempt number, then the body kept so far.
  const std::string n = std::to_string(retries_done_ + 1);
  up_head_.replace(attempt_at_, attempt_len_, n);
  attempt_len_ = n.size();
  up_out_ = up_head_;
  up_out_.append(replay_);
  uparser_.reset();
  uparser_.expectResponseTo(req_head_.method);
  resumeAfterWait(startTry());
}

bool HttpSession::routeReplacesOrRemoves(std::string_view name) const {
  // Routes set or remove a handful of headers at most: a scan beats building a set.
  for (const auto& hv : route_->request_headers_to_add)
    if (nameIs(name, hv.name))
      return true;
  for (const auto& r : route_->request_headers_to_remove)
    if (nameIs(name, r))
      return true;
  return false;
}

void HttpSession::buildUpstreamHead() {
  // One pass over the request's fields writes the upstream head directly: hop-by-hop fields
  // (and those named in Connection) are dropped, the fields we own are replaced, the rest are
  // copied as they came. (Editing a HeaderMap and serialising it cost several passes.)
  ConnectionTokens tokens(req_headers_);
  std::string_view xff, rid, tp, upgrade;
  std::string& out = up_head_;
  out.clear();
  out.append(method_).append(" ").append(target_).append(" HTTP/1.1\r\n");
  for (auto f : req_headers_) {
    if (isDropped(f.name, tokens)) {
      if (req_head_.upgrade && nameIs(f.name, "upgrade"))
        upgrade = f.value;
      continue;
    }
    if (nameIs(f.name, "x-forwarded-for")) {
      xff = f.value;
      continue;
    }
    if (nameIs(f.name, "x-request-id")) {
      rid = f.value;
      continue;
    }
    if (nameIs(f.name, "traceparent")) {
      tp = f.value;
      continue;
    }
    if (nameIs(f.name, "x-forwarded-proto") || nameIs(f.name, "x-trellis-attempt"))
      continue;
    if (routeReplacesOrRemoves(f.name))
      continue;
    appendField(out, f.name, f.value);
  }
  out.append("x-forwarded-for: ");
  if (!xff.empty())
    out.append(xff).append(", ");
  out.append(peer_ip_).append("\r\nx-forwarded-proto: http\r\n");
  auto& ids = telemetry::threadIdGenerator();
  if (rid.empty() || !telemetry::isAcceptableRequestId(rid)) {
    ids.writeRequestId(request_id_);
    request_id_len_ = telemetry::kRequestIdLength;
  } else {
    request_id_len_ = std::min(rid.size(), sizeof request_id_);
    std::memcpy(request_id_, rid.data(), request_id_len_);
  }
  appendField(out, "x-request-id", std::string_view(request_id_, request_id_len_));
  appendField(out, "traceparent", ids.propagate(tp, false).traceparent());
  for (const auto& hv : route_->request_headers_to_add)
    appendField(out, hv.name, hv.value);
  for (const auto& hv : route_->request_headers_to_append)
    appendField(out, hv.name, hv.value);
  if (route_->retries.attempts > 0) {
    // Which try this is, for the upstream's logs; a retry rewrites the number in place.
    out.append("x-trellis-attempt: ");
    attempt_at_ = out.size();
    attempt_len_ = 1;
    out.append("1\r\n");
  }
  up_chunked_ = false;
  if (req_head_.chunked) {
    out.append("transfer-encoding: chunked\r\n");
    up_chunked_ = true;
  } else if (req_head_.content_length) {
    appendNumberField(out, "content-length", *req_head_.content_length);
  }
  if (!upgrade.empty()) {
    out.append("connection: upgrade\r\n");
    appendField(out, "upgrade", upgrade);
  }
  out.append("\r\n");
  up_out_.append(up_head_);
  uparser_.reset();
  uparser_.expectResponseTo(req_head_.method);
}

bool HttpSession::connectUpstream() {
  auto& pool = cluster_->pool(ep_);
  ClusterState& state = *cluster_->state;
  if (!state.limit(LimitKind::kConnections).tryAcquire()) {
    cluster_->stats().overflow[static_cast<size_t>(LimitKind::kConnections)].inc();
    localReply(503, "UO", "upstream overflow: too many connections to the cluster\n",
               !req_parsed_);
    return false;
  }
  auto conn = std::make_shared<UpstreamConn>(worker_.dispatcher().io(), pool);
  conn->counted_by = cluster_->state;
  if (!state.limit(LimitKind::kPendingRequests).tryAcquire()) {
    cluster_->stats().overflow[static_cast<size_t>(LimitKind::kPendingRequests)].inc();
    localReply(503, "UO", "upstream overflow: too many requests waiting for a connection\n",
               !req_parsed_);
    return false;
  }
  holds_pending_slot_ = true;
  phase_ = Phase::kConnecting;
  up_ = conn;
  up_reused_ = false;
  armIdleTimer(cluster_->cfg.connect_timeout);
  conn->socket.async_connect(pool.address().tcp(),
                             [self = shared_from_this(), conn](const std::error_code& ec) {
                               if (self->up_ != conn)
                                 return; // timed out and given up on
                               self->onConnected(ec);
                             });
  return true;
}

void HttpSession::onConnected(const std::error_code& ec) {
  if (closed_)
    return;
  if (holds_pending_slot_) {
    holds_pending_slot_ = false;
    cluster_->state->limit(LimitKind::kPendingRequests).release();
  }
  if (ec) {
    cluster_->stats().err_connect.inc();
    up_.reset();
    onUpstreamFailure(TryFailure::kConnectFailure, "UF", 503);
    return;
  }
  auto conn = up_;
  cluster_->stats().cx_total.inc();
  cluster_->stats().cx_active.inc();
  std::error_code ignored;
  conn->socket.set_option(asio::ip::tcp::no_delay(true), ignored);
  armIdleTimer(idle_timeout_);
  upstreamReady(std::move(conn), false);
  if (down_pause_ == DownPause::kConnecting) {
    down_pause_ = DownPause::kNone;
    dparser_.resume();
  }
  processDown();
}

void HttpSession::upstreamReady(std::shared_ptr<UpstreamConn> conn, bool reused) {
  if (reused)
    cluster_->stats().pool_reuse.inc();
  up_ = std::move(conn);
  up_reused_ = reused;
  up_->requests++;
  phase_ = Phase::kProxying;
  ubeg_ = uend_ = 0;
  readUp();
  // No flushUp() here: this may run inside a request-parser callback that goes on to append
  // body bytes to up_out_, which must not happen under a write in flight (the write would
  // hold a stale buffer, and its completion would drop what was appended). Callers flush
  // through processDown() once the parser has stopped.
}

void HttpSession::flushUp() {
  if (writing_up_ || !up_ || phase_ != Phase::kProxying)
    return;
  if (up_out_.empty() && up_piece_.empty()) {
    if (req_parsed_ && !req_sent_)
      req_sent_ = true;
    return;
  }
  writing_up_ = true;
  std::array<asio::const_buffer, 3> bufs{
      asio::buffer(up_out_), asio::buffer(up_piece_.data(), up_piece_.size()),
      asio::buffer(up_chunked_ && !up_piece_.empty() ? "\r\n" : "",
                   up_chunked_ && !up_piece_.empty() ? 2 : 0)};
  asio::async_write(up_->socket, bufs,
                    [self = shared_from_this(), conn = up_](const std::error_code& ec, size_t) {
                      if (self->up_ != conn || self->closed_)
                        return;
                      self->writing_up_ = false;
                      if (ec) {
                        // A write error shows up as a read error too; let the read side
                        // decide (it may still hold a complete response).
                        self->up_out_.clear();
                        self->up_piece_ = {};
                        return;
                      }
                      self->up_out_.clear();
                      if (!self->up_piece_.empty()) {
                        self->up_piece_ = {};
                        if (self->down_pause_ == DownPause::kPiece) {
                          self->down_pause_ = DownPause::kNone;
                          self->dparser_.resume();
                        }
                      }
                      if (self->req_parsed_)
                        self->req_sent_ = true;
                      // Parse on first: the request's end (of a bodyless request, say) may
                      // still be in the buffer while the response is already complete.
                      self->processDown();
                      self->maybeFinish();
                    });
}

void HttpSession::maybeFinish() {
  if (closed_ || phase_ != Phase::kProxying || !rsp_parsed_ || writing_down_ || writing_up_ ||
      !down_out_.empty() || !down_piece_.empty())
    return;
  finishRequest();
}

void HttpSession::readUp() {
  if (reading_up_ || !up_ || closed_ || uend_ >= kBufferSize || phase_ != Phase::kProxying)
    return;
  reading_up_ = true;
  up_->socket.async_read_some(
      asio::buffer(ubuf_.get() + uend_, kBufferSize - uend_),
      [self = shared_from_this(), conn = up_](const std::error_code& ec, size_t n) {
        if (self->up_ != conn) {
          return;
        }
        self->reading_up_ = false;
        self->onUpRead(ec, n);
      });
}

void HttpSession::onUpRead(const std::error_code& ec, size_t n) {
  if (closed_)
    return;
  if (ec) {
    if (rsp_parsed_)
      return;
    if (ec == asio::error::eof && uparser_.head().framing == http::BodyFraming::kUntilClose &&
        rsp_started_) {
      if (uparser_.finish() == http::ParseStatus::kOk) {
        releaseUpstream(false);
        flushDown();
        return;
      }
    }
    cluster_->stats().err_reset.inc();
    if (!rsp_started_ && up_reused_ && !retried_reuse_ && req_body_bytes_ == 0 && req_parsed_ &&
        isIdempotent(method_)) {
      // The pooled connection was closed by the upstream as we reused it: the request never
      // reached it. Send it again on a fresh connection.
      retried_reuse_ = true;
      releaseUpstream(false);
      up_out_ = up_head_;
      req_sent_ = false;
      phase_ = Phase::kConnecting;
      connectUpstream();
      return;
    }
    onUpstreamFailure(TryFailure::kReset, "UC", 502);
    return;
  }
  uend_ += n;
  last_activity_ = worker_.dispatcher().now();
  processUp();
}

void HttpSession::processUp() {
  bool first = true; // as in processDown()
  while (!closed_ && (ubeg_ < uend_ || first) && up_ && phase_ == Phase::kProxying &&
         !writing_down_ && !up_piece_pause_ && !rsp_parsed_ && !upgrading_) {
    first = false;
    auto r = uparser_.execute(std::string_view(ubuf_.get() + ubeg_, uend_ - ubeg_));
    ubeg_ += r.consumed;
    if (r.status == http::ParseStatus::kError) {
      cluster_->stats().err_bad_response.inc();
      TLOG_DEBUG("cluster {}: bad response from {}: {}", cluster_->cfg.name,
                 cluster_->pool(ep_).address().toString(), uparser_.errorMessage());
      onUpstreamFailure(TryFailure::kBadResponse, "UPE", 502);
      return;
    }
    if (r.status == http::ParseStatus::kUpgraded) {
      upgrading_ = true;
      break;
    }
    if (r.status == http::ParseStatus::kPaused)
      break;
  }
  if (closed_)
    return;
  if (retry_status_) {
    // A response head whose status the route retries: drop this try (and its response).
    retry_status_ = false;
    scheduleRetry();
    return;
  }
  if (peer_failure_) {
    // The peer proxy's answer stands for a failure of its app: the try failed like that.
    const TryFailure f = *peer_failure_;
    peer_failure_.reset();
    onUpstreamFailure(f, peer_flag_, std::string_view(peer_flag_) == "UF" ? 503 : 502);
    return;
  }
  if (ubeg_ == uend_ && !upgrading_)
    ubeg_ = uend_ = 0;
  flushDown();
  if (!rsp_parsed_ && !upgrading_ && !writing_down_ && !up_piece_pause_)
    readUp();
}

void HttpSession::onUpstreamFailure(TryFailure failure, const char* flag, uint16_t status) {
  reportOutcome(Outcome::kLocalFailure);
  if (!rsp_started_ && acquireRetry(failure, status)) {
    scheduleRetry();
    return;
  }
  releaseUpstream(false);
  if (rsp_started_) {
    // Part of the response is already on its way: all we can do is cut the connection.
    flag_ = flag;
    closeDown();
    return;
  }
  const char* body = "upstream sent an invalid response\n";
  switch (failure) {
  case TryFailure::kConnectFailure:
    body = "upstream connect error\n";
    break;
  case TryFailure::kReset:
    body = "upstream reset before the response\n";
    break;
  case TryFailure::kTimeout:
    body = "upstream timeout\n";
    break;
  default:
    break;
  }
  localReply(status, flag, body, !req_parsed_);
}

// ---- response -----------------------------------------------------------------------------

bool HttpSession::retryOnStatus() {
  // The try got its answer: only the route's deadline applies from here on.
  has_try_deadline_ = false;
  if (status_ >= 500)
    reportOutcome(status_ >= 502 && status_ <= 504 ? Outcome::kGatewayError : Outcome::k5xx);
  else
    reportOutcome(Outcome::kSuccess);
  if (status_ >= 500 || (route_ && !route_->retries.retriable_status_codes.empty())) {
    if (acquireRetry(TryFailure::kStatus, status_))
      return true;
  }
  if (retries_done_ > 0 && status_ < 500 && cluster_)
    cluster_->stats().retries_succeeded.inc();
  return false;
}

bool HttpSession::peerProxyFailure() {
  auto flag = rsp_headers_.get(kProxyErrorHeader);
  if (!flag)
    return false;
  // UF: the peer could not connect to its app; UH: it had no usable one. Either way the
  // request reached no app, as with a connect failure here. UC: the app closed or reset
  // before answering. The endpoint's word is taken for that only where a wrong word costs
  // nothing: a non-idempotent request (which a connect failure would retry whatever its
  // method) fails as after a reset, retried only where the route allows such retries. An
  // instance registered without a sidecar could send the header after doing the work.
  if (*flag == "UF" || *flag == "UH") {
    peer_failure_ = isIdempotent(method_) ? TryFailure::kConnectFailure : TryFailure::kReset;
    peer_flag_ = "UF";
  } else if (*flag == "UC") {
    peer_failure_ = TryFailure::kReset;
    peer_flag_ = "UC";
  } else {
    return false; // an answer of the peer's policy (rate limit, fault, ...): passed on
  }
  has_try_deadline_ = false;
  cluster_->stats().err_proxy_error.inc();
  return true;
}

http::Action HttpSession::rspStatusLine(http::Version version, uint16_t status,
                                        std::string_view reason) {
  rsp_version_ = version;
  status_ = status;
  reason_.assign(reason);
  rsp_headers_.clear();
  return http::Action::kContinue;
}

http::Action HttpSession::rspHeader(std::string_view name, std::string_view value) {
  rsp_headers_.add(name, value);
  return http::Action::kContinue;
}

http::Action HttpSession::rspHeadersComplete(const http::MessageHead& head) {
  ConnectionTokens tokens(rsp_headers_);
  std::string& out = down_out_;
  auto statusLine = [&](http::Version v) {
    char code[8];
    auto [end, ec] = std::to_chars(code, code + sizeof code, status_);
    (void)ec;
    out.append(http::versionString(v)).append(" ").append(code, end).append(" ");
    out.append(reason_.empty() ? http::reasonPhrase(status_) : std::string_view(reason_));
    out.append("\r\n");
  };
  const bool trusted = cluster_ && cluster_->cfg.trust_proxy_errors;
  if (head.interim) {
    statusLine(http::Version::kHttp11);
    for (auto f : rsp_headers_)
      if (!isDropped(f.name, tokens) && (trusted || !nameIs(f.name, kProxyErrorHeader)))
        appendField(out, f.name, f.value);
    out.append("\r\n");
    return http::Action::kContinue;
  }
  if (trusted && status_ >= 500 && peerProxyFailure())
    return http::Action::kPause;
  if (retryOnStatus()) {
    retry_status_ = true;
    return http::Action::kPause;
  }
  std::string_view upgrade;
  bool switching = head.upgrade && status_ == 101;
  statusLine(version_);
  for (auto f : rsp_headers_) {
    if (!trusted && nameIs(f.name, kProxyErrorHeader))
      continue; // only a proxy's own answers carry it
    if (isDropped(f.name, tokens)) {
      if (switching && nameIs(f.name, "upgrade"))
        upgrade = f.value;
      continue;
    }
    appendField(out, f.name, f.value);
  }
  keep_alive_ = req_head_.keep_alive && !upgrading_;
  if (lrt_ && lrt_->cfg->max_requests_per_connection > 0 &&
      requests_on_conn_ >= lrt_->cfg->max_requests_per_connection)
    keep_alive_ = false;
  rsp_rechunk_ = false;
  switch (head.framing) {
  case http::BodyFraming::kContentLength:
    appendNumberField(out, "content-length", *head.content_length);
    break;
  case http::BodyFraming::kChunked:
  case http::BodyFraming::kUntilClose:
    if (version_ == http::Version::kHttp11) {
      out.append("transfer-encoding: chunked\r\n");
      rsp_rechunk_ = true;
    } else {
      keep_alive_ = false; // HTTP/1.0 client: the body ends when we close
    }
    break;
  case http::BodyFraming::kNone:
    if (head.content_length && req_head_.method == http::Method::kHead)
      appendNumberField(out, "content-length", *head.content_length);
    else if (status_ >= 200 && status_ != 204 && status_ != 304 && !head.upgrade)
      out.append("content-length: 0\r\n");
    break;
  }
  if (!upgrade.empty()) {
    out.append("connection: upgrade\r\n");
    appendField(out, "upgrade", upgrade);
  } else if (!keep_alive_) {
    out.append("connection: close\r\n");
  } else if (version_ == http::Version::kHttp10) {
    out.append("connection: keep-alive\r\n");
  }
  out.append("\r\n");
  rsp_started_ = true;
  if (switching)
    upgrading_ = true;
  return http::Action::kContinue;
}

http::Action HttpSession::rspBody(std::string_view piece) {
  if (rsp_rechunk_)
    appendChunkHeader(piece.size(), down_out_);
  if (piece.size() <= kCopyThreshold) {
    down_out_.append(piece);
    if (rsp_rechunk_)
      down_out_.append("\r\n");
    return http::Action::kContinue;
  }
  down_piece_ = piece;
  up_piece_pause_ = true;
  return http::Action::kPause;
}

http::Action HttpSession::rspComplete() {
  if (rsp_rechunk_)
    http::appendLastChunk(down_out_);
  rsp_parsed_ = true;
  return http::Action::kPause;
}

void HttpSession::flushDown() {
  if (writing_down_ || closed_)
    return;
  if (down_out_.empty() && down_piece_.empty()) {
    if (upgrading_ && rsp_started_)
      startTunnel();
    else
      maybeFinish(); // (with a write upstream in flight, its completion finishes)
    return;
  }
  writing_down_ = true;
  std::array<asio::const_buffer, 3> bufs{
      asio::buffer(down_out_), asio::buffer(down_piece_.data(), down_piece_.size()),
      asio::buffer(rsp_rechunk_ && !down_piece_.empty() ? "\r\n" : "",
                   rsp_rechunk_ && !down_piece_.empty() ? 2 : 0)};
  asio::async_write(down_, bufs, [self = shared_from_this()](const std::error_code& ec, size_t n) {
    self->writing_down_ = false;
    if (self->closed_)
      return;
    if (ec) {
      self->flag_ = "DC";
      self->releaseUpstream(false);
      self->closeDown();
      return;
    }
    self->bytes_out_req_ += n;
    if (self->lrt_)
      self->lrt_->bytes_out.add(n);
    self->last_activity_ = self->worker_.dispatcher().now();
    self->down_out_.clear();
    if (!self->down_piece_.empty()) {
      self->down_piece_ = {};
      self->up_piece_pause_ = false;
      self->uparser_.resume();
    }
    if (self->phase_ == Phase::kReplying) {
      self->finishRequest();
      return;
    }
    if (self->upgrading_) {
      self->flushDown();
      return;
    }
    if (self->rsp_parsed_) {
      self->flushDown();
      return;
    }
    self->processUp();
  });
}

void HttpSession::startTunnel() {
  if (!up_)
    return;
  phase_ = Phase::kTunnel;
  timer_->disable();
  std::string to_up(dbuf_.get() + dbeg_, dend_ - dbeg_);
  std::string to_down(ubuf_.get() + ubeg_, uend_ - ubeg_);
  auto conn = std::move(up_);
  up_.reset();
  cluster_->stats().cx_active.dec();
  if (ep_counted_) {
    cluster_->endpoints.onRequestEnd(ep_);
    ep_counted_ = false;
  }
  // Count the upgrade (a 101, so 1xx) as an answered request now; the tunnel may live for
  // hours.
  if (route_)
    lrt_->routes[route_index_][target_index_].by_class[0].inc();
  auto cfg = cfg_;
  ListenerRuntime* lrt = lrt_;
  auto counted = std::move(counted_in_); // null when the listener was not found at start
  auto tunnel = std::make_shared<Tunnel>(
      worker_.dispatcher(), std::move(down_), std::move(conn->socket), std::move(to_up),
      std::move(to_down), idle_timeout_, [cfg, lrt, counted](const Tunnel::Counters& c) {
        lrt->bytes_in.add(c.a_to_b);
        lrt->bytes_out.add(c.b_to_a);
        lrt->cx_active.dec();
        if (counted && *counted > 0)
          --*counted; // as closeDown() would have done
      });
  closed_ = true; // the session is done; the tunnel owns the sockets
  tunnel->start();
}

// ---- ending -------------------------------------------------------------------------------

void HttpSession::localReply(uint16_t status, const char* flag, std::string_view body,
                             bool close, std::string_view location) {
  if (lrt_ && *flag != '-') // "-": an answer the configuration asked for (a redirect)
    lrt_->localReply(flag).inc();
  flag_ = flag;
  status_ = status;
  // If the request body has not been read, the connection cannot carry another request.
  if (close || !req_parsed_)
    keep_alive_ = false;
  else
    keep_alive_ = req_head_.keep_alive;
  std::string text(body);
  if (!text.empty() && text.back() != '\n')
    text.push_back('\n');
  http::HeaderMap h;
  h.add("content-type", "text/plain");
  h.add("content-length", std::to_string(text.size()));
  if (!keep_alive_)
    h.add("connection", "close");
  if (status == 429)
    h.add("retry-after", "1");
  if (*flag != '-')
    h.add(kProxyErrorHeader, flag);
  if (!location.empty())
    h.add("location", location);
  http::serializeResponseHead(http::Version::kHttp11, status, "", h, down_out_);
  down_out_.append(text);
  rsp_started_ = true;
  rsp_parsed_ = true;
  phase_ = Phase::kReplying;
  wait_ = Wait::kNone;
  has_req_deadline_ = has_try_deadline_ = false;
  down_pause_ = DownPause::kReply;
  flushDown();
}

void HttpSession::releaseSlots() {
  if (!cluster_)
    return;
  ClusterState& state = *cluster_->state;
  if (holds_request_slot_)
    state.limit(LimitKind::kRequests).release();
  if (holds_retry_slot_)
    state.limit(LimitKind::kRetries).release();
  if (holds_pending_slot_)
    state.limit(LimitKind::kPendingRequests).release();
  if (holds_waiting_retry_)
    state.retriesWaiting().fetch_sub(1, std::memory_order_relaxed);
  holds_waiting_retry_ = false;
  holds_request_slot_ = holds_retry_slot_ = holds_pending_slot_ = false;
}

void HttpSession::releaseUpstream(bool reusable) {
  if (ep_counted_) {
    cluster_->endpoints.onRequestEnd(ep_);
    ep_counted_ = false;
  }
  if (!up_)
    return;
  auto conn = std::move(up_);
  up_.reset();
  reading_up_ = writing_up_ = false;
  if (!conn->socket.is_open())
    return;
  if (reusable) {
    conn->pool().release(std::move(conn), cluster_->cfg.pool.max_idle_per_endpoint,
                         cluster_->cfg.pool.max_requests_per_connection);
  } else {
    std::error_code ec;
    conn->socket.close(ec);
    cluster_->stats().cx_active.dec();
  }
}

void HttpSession::finishRequest() {
  if (closed_ || phase_ == Phase::kIdle)
    return;
  MonotonicTime now = worker_.dispatcher().now();
  Duration took = now - req_start_;
  if (lrt_ && status_ > 0) {
    size_t cls = std::min<size_t>(std::max<size_t>(status_ / 100, 1), 5) - 1;
    if (route_) {
      auto& st = lrt_->routes[route_index_][target_index_];
      st.by_class[cls].inc();
      st.duration.observe(took);
    } else {
      lrt_->no_route_by_class[cls].inc();
      lrt_->no_route_duration.observe(took);
    }
  }
  if (auto* log = worker_.accessLog(); log && lrt_) {
    telemetry::AccessLogEntry e;
    e.start_time = req_wall_start_;
    e.method = method_;
    auto host = req_headers_.get("host");
    e.authority = host ? *host : std::string_view();
    e.path = target_;
    e.code = status_;
    e.bytes_received = req_body_bytes_;
    e.bytes_sent = bytes_out_req_;
    e.duration = took;
    // ep_ is kNoEndpoint until the balancer picked one for this request.
    std::string upstream =
        cluster_ && ep_ != kNoEndpoint ? cluster_->pool(ep_).address().toString() : "";
    e.upstream = upstream;
    e.request_id = std::string_view(request_id_, request_id_len_);
    e.response_flags = flagBits(flag_);
    e.listener = listener_name_;
    std::string route_label = route_ ? route_->name : "";
    e.route = route_label;
    e.cluster = cluster_ ? std::string_view(cluster_->cfg.name) : std::string_view();
    log->log(e);
  }
  bool up_clean = up_ && req_sent_ && rsp_parsed_ && uparser_.head().keep_alive &&
                  ubeg_ == uend_ && !writing_up_;
  if (up_ && !req_sent_)
    keep_alive_ = false; // the rest of the request body was never read
  releaseUpstream(up_clean);
  releaseSlots();
  // Reset per-request state.
  wait_ = Wait::kNone;
  fault_abort_ = has_req_deadline_ = has_try_deadline_ = retry_status_ = false;
  peer_failure_.reset();
  retries_done_ = 0;
  tried_n_ = 0;
  recording_ = false;
  replayable_ = true;
  if (replay_.capacity() > kCopyThreshold)
    std::string().swap(replay_); // a large body's buffer is not kept for the next request
  else
    replay_.clear();
  route_ = nullptr;
  cluster_ = nullptr;
  req_parsed_ = req_sent_ = rsp_started_ = rsp_parsed_ = rsp_rechunk_ = false;
  up_chunked_ = up_reused_ = retried_reuse_ = false;
  req_body_bytes_ = bytes_out_req_ = bytes_in_req_ = 0;
  request_id_len_ = 0;
  status_ = 0;
  flag_ = "-";
  up_out_.clear();
  ubeg_ = uend_ = 0;
  if (!keep_alive_ || dparser_.error() != http::ParseError::kNone) {
    closeDown();
    return;
  }
  keep_alive_ = true;
  phase_ = Phase::kIdle;
  down_pause_ = DownPause::kNone;
  if (dparser_.upgraded())
    dparser_.continueAfterUpgrade(); // the upstream declined the upgrade
  dparser_.resume();
  last_activity_ = req_start_ = worker_.dispatcher().now();
  if (!timer_->enabled())
    armIdleTimer(idle_timeout_);
  processDown();
}

void HttpSession::closeDown() {
  if (closed_)
    return;
  TLOG_DEBUG("listener {}: closing connection from {} (phase {}, flag {}, keep_alive {}, "
             "request keep-alive {}, sent {})",
             listener_name_, peer_ip_, static_cast<int>(phase_), flag_, keep_alive_,
             req_head_.keep_alive, req_sent_);
  abandonConnect(); // a connect in flight is not a connection to put back
  closed_ = true;
  phase_ = Phase::kClosed;
  releaseUpstream(false);
  releaseSlots();
  if (timer_)
    timer_->disable();
  if (req_timer_)
    req_timer_->disable();
  if (wait_hold_) // released on the next turn: callers of closeDown() still use the session
    worker_.dispatcher().post([hold = std::move(wait_hold_)] {});
  std::error_code ec;
  down_.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
  down_.close(ec);
  if (lrt_) {
    lrt_->cx_active.dec();
    if (counted_in_ && *counted_in_ > 0)
      --*counted_in_;
    counted_in_.reset();
  }
}

void HttpSession::armIdleTimer(Duration d) {
  if (!timer_)
    return;
  if (d.count() <= 0) {
    timer_->disable();
    return;
  }
  last_activity_ = worker_.dispatcher().now();
  timer_->enable(d);
}

void HttpSession::onIdleTimer() {
  if (closed_)
    return;
  if (phase_ == Phase::kConnecting && up_) {
    // connect_timeout
    cluster_->stats().err_connect_timeout.inc();
    if (lrt_)
      lrt_->timeouts[static_cast<size_t>(TimeoutKind::kConnect)].inc();
    abandonConnect();
    onUpstreamFailure(TryFailure::kConnectFailure, "UF", 503);
    return;
  }
  if (phase_ == Phase::kIdle && !dparser_.idle()) {
    // A request head still incomplete: a slow-header client gets header_read_timeout from
    // the start of its request line (or from the previous request, if even that is missing).
    Duration limit = lrt_ ? lrt_->cfg->header_read_timeout : std::chrono::seconds(10);
    Duration taken = worker_.dispatcher().now() - req_start_;
    if (taken < limit) {
      timer_->enable(limit - taken);
      return;
    }
    if (lrt_)
      lrt_->timeouts[static_cast<size_t>(TimeoutKind::kHeaderRead)].inc();
    localReply(408, "DT", "request header timeout\n", true);
    return;
  }
  if (wait_ != Wait::kNone) {
    // Backoff or an injected delay: the request timer is in charge; look again later.
    if (idle_timeout_.count() > 0)
      timer_->enable(idle_timeout_);
    return;
  }
  Duration since = worker_.dispatcher().now() - last_activity_;
  if (idle_timeout_.count() > 0 && since < idle_timeout_) {
    timer_->enable(idle_timeout_ - since);
    return;
  }
  if (lrt_)
    lrt_->timeouts[static_cast<size_t>(phase_ == Phase::kIdle ? TimeoutKind::kDownstreamIdle
                                                              : TimeoutKind::kUpstreamIdle)]
        .inc();
  if (phase_ == Phase::kProxying && !rsp_started_) {
    reportOutcome(Outcome::kLocalFailure);
    releaseUpstream(false);
    localReply(504, "UT", "upstream timeout\n", true);
    return;
  }
  releaseUpstream(false);
  closeDown();
}

// ---- TCP ----------------------------------------------------------------------------------

void startTcpSession(Worker& worker, const std::string& listener, asio::ip::tcp::socket socket) {
  auto cfg = worker.config();
  auto it = cfg->listeners.find(listener);
  if (it == cfg->listeners.end())
    return;
  ListenerRuntime* lrt = it->second.get();
  ClusterRuntime* cluster = cfg->clusters[lrt->cfg->cluster_index].get();
  LbContext ctx;
  std::error_code ec;
  auto remote = socket.remote_endpoint(ec);
  std::string peer = ec ? "" : remote.address().to_string();
  if (cluster->cfg.hash_on)
    ctx.hash = requestHash(*cluster->cfg.hash_on, peer,
                           [](std::string_view) { return std::optional<std::string_view>(); });
  cluster->syncHealth();
  auto pick = cluster->lb->pick(ctx);
  auto down = std::make_shared<asio::ip::tcp::socket>(std::move(socket));
  auto done_down = [lrt, cfg] {
    lrt->cx_active.dec();
    if (*lrt->connections > 0)
      --*lrt->connections;
  };
  if (!pick) {
    lrt->localReply("UH").inc();
    down->close(ec);
    done_down();
    return;
  }
  size_t ep = *pick;
  auto up = std::make_shared<asio::ip::tcp::socket>(worker.dispatcher().io());
  auto timer = std::shared_ptr<Timer>(worker.dispatcher().createTimer([up] {
    std::error_code ignored;
    up->close(ignored);
  }));
  timer->enable(cluster->cfg.connect_timeout);
  cluster->endpoints.onRequestStart(ep);
  Dispatcher* d = &worker.dispatcher();
  Duration idle = lrt->cfg->idle_timeout;
  up->async_connect(
      cluster->pool(ep).address().tcp(),
      [cfg, lrt, cluster, ep, down, up, timer, d, idle, done_down](const std::error_code& ec) {
        timer->disable();
        cluster->endpoints.onRequestEnd(ep);
        cluster->state->reportOutcome(ep, ec ? Outcome::kLocalFailure : Outcome::kSuccess, d->now());
        if (ec) {
          cluster->stats().err_connect.inc();
          lrt->localReply("UF").inc();
          std::error_code ignored;
          down->close(ignored);
          done_down();
          return;
        }
        cluster->stats().cx_total.inc();
        cluster->stats().cx_active.inc();
        std::error_code ignored;
        up->set_option(asio::ip::tcp::no_delay(true), ignored);
        down->set_option(asio::ip::tcp::no_delay(true), ignored);
        auto tunnel = std::make_shared<Tunnel>(
            *d, std::move(*down), std::move(*up), "", "", idle,
            [cfg, lrt, cluster, done_down](const Tunnel::Counters& c) {
              lrt->bytes_in.add(c.a_to_b);
              lrt->bytes_out.add(c.b_to_a);
              cluster->stats().cx_active.dec();
              done_down();
            });
        tunnel->start();
      });
}

} // namespace trellis::proxy
