#include "proxy/mesh/mesh_client.h"

#include <cctype>

#include <nlohmann/json.hpp>

#include "base/log.h"

namespace trellis::proxy::mesh {

// ---- MeshSession -----------------------------------------------------------------------------

Ack MeshSession::reject(uint64_t version, const Error& e) {
  rejected_++;
  TLOG_ERROR("mesh: rejected version {}, keeping version {}: {}", version, applied_version_,
             e.message());
  return Ack{state_.stream(), version, false, e.message()};
}

Ack MeshSession::applyState(uint64_t version) {
  auto snap = builder_.build(state_);
  state_.rebaseEndpointOrigins(); // the next build edits what this one read
  if (!snap.ok())
    return reject(version, snap.error());
  if (auto applied = applier_.apply(*snap); !applied.ok())
    return reject(version, applied.error());
  accepted_++;
  applied_version_ = version;
  return Ack{state_.stream(), version, true, {}};
}

bool MeshSession::take(std::string_view line, std::optional<uint64_t>& pending, BatchOutcome& out) {
  auto flush = [&] {
    if (pending)
      out.acks.push_back(applyState(*pending));
    pending.reset();
  };
  // The usual delta (endpoints of known services) without a JSON tree of the message.
  if (!awaiting_snapshot_)
    if (auto d = readEndpointDelta(line); d && state_.applyEndpointDelta(*d)) {
      pending = d->version;
      return true;
    }
  auto parsed = parseMessage(line);
  if (!parsed.ok()) {
    flush();
    out.stream = parsed.error();
    return false;
  }
  const Message& m = *parsed;
  if (m.type == MessageType::kHeartbeat)
    return true;
  if (awaiting_snapshot_ && m.type != MessageType::kSnapshot) {
    flush();
    out.stream = makeError(ErrorCode::kInvalidArgument,
                           "the stream began with a delta (version {}), not a snapshot", m.version);
    return false;
  }
  Status st = m.type == MessageType::kSnapshot ? state_.applySnapshot(m) : state_.applyDelta(m);
  if (!st.ok()) {
    // The received state no longer follows the server's: resynchronise from a snapshot. What
    // came before in the batch is still good and gets applied first.
    flush();
    Ack ack = reject(m.version, st.error());
    if (m.type == MessageType::kSnapshot)
      ack.stream = m.stream;
    out.acks.push_back(std::move(ack));
    out.stream = st.error();
    return false;
  }
  awaiting_snapshot_ = false;
  pending = m.version;
  return true;
}

MeshSession::BatchOutcome MeshSession::handleLines(const std::vector<std::string>& lines) {
  BatchOutcome out;
  std::optional<uint64_t> pending;
  for (const auto& line : lines)
    if (!take(line, pending, out))
      return out;
  if (pending)
    out.acks.push_back(applyState(*pending));
  return out;
}

MeshSession::Outcome MeshSession::handleLine(std::string_view line) {
  BatchOutcome batch;
  std::optional<uint64_t> pending;
  if (take(line, pending, batch) && pending)
    batch.acks.push_back(applyState(*pending));
  Outcome out;
  if (!batch.acks.empty())
    out.ack = std::move(batch.acks.back());
  out.stream = std::move(batch.stream);
  return out;
}

// ---- ReconnectBackoff ------------------------------------------------------------------------

Duration ReconnectBackoff::cap() const {
  Duration cap = base_;
  for (uint32_t i = 0; i < attempt_ && cap < max_; ++i)
    cap *= 2;
  return std::min(cap, max_);
}

Duration ReconnectBackoff::next() {
  const Duration c = cap();
  attempt_++;
  const uint64_t span = static_cast<uint64_t>(c.count()) + 1;
  return Duration(static_cast<Duration::rep>(random_.next() % span));
}

// ---- MeshClient ------------------------------------------------------------------------------

namespace {

std::string percentEncode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~')
      out.push_back(static_cast<char>(c));
    else
      out += fmt::format("%{:02X}", c);
  }
  return out;
}

} // namespace

MeshClient::MeshClient(Dispatcher& dispatcher, MeshClientOptions options, ConfigBuilder& builder,
                       ConfigApplier& applier, uint64_t seed)
    : dispatcher_(dispatcher), options_(std::move(options)), session_(builder, applier),
      backoff_(options_.backoff_base, options_.backoff_max, seed), http_(dispatcher) {
  server_ = options_.servers.empty() ? 0 : seed % options_.servers.size();
  reconnect_timer_ = dispatcher_.createTimer([this] { connect(); });
  watchdog_timer_ = dispatcher_.createTimer([this] {
    retry(fmt::format("no byte for {} ({} heartbeats)",
                      formatDuration(options_.heartbeat * options_.missed_heartbeats),
                      options_.missed_heartbeats));
  });
  restart_timer_ = dispatcher_.createTimer([this] { retry(failure_); });
}

MeshClient::~MeshClient() {
  stop();
}

Status MeshClient::registerMetrics(telemetry::Registry& registry) {
  auto updates = registry.counter("trellis_proxy_mesh_updates_total",
                                  "Snapshots and deltas from the control plane, by result "
                                  "(accepted, rejected: the last good configuration was kept)",
                                  {"result"});
  if (!updates.ok())
    return updates.error();
  auto connected = registry.gauge("trellis_proxy_mesh_connected",
                                  "1 while a configuration stream to a server is up", {});
  if (!connected.ok())
    return connected.error();
  auto version = registry.gauge("trellis_proxy_mesh_version",
                                "Mesh version of the configuration running now", {});
  if (!version.ok())
    return version.error();
  accepted_metric_ = (*updates)->handle(0, {"accepted"});
  rejected_metric_ = (*updates)->handle(0, {"rejected"});
  connected_metric_ = (*connected)->handle(0);
  version_metric_ = (*version)->handle(0);
  metrics_ = true;
  return okStatus();
}

void MeshClient::start() {
  if (running_ || options_.servers.empty())
    return;
  running_ = true;
  connect();
}

void MeshClient::stop() {
  running_ = false;
  stream_.cancel();
  stream_takes_acks_ = false;
  reconnect_timer_->disable();
  watchdog_timer_->disable();
  restart_timer_->disable();
  lines_.clear(); // a drain still posted finds nothing
  lines_bytes_ = 0;
  setConnected(false);
}

void MeshClient::setConnected(bool c) {
  connected_ = c;
  if (metrics_)
    connected_metric_.set(c ? 1.0 : 0.0);
}

std::string MeshClient::streamTarget() const {
  std::string t = "/v1/mesh/stream?node=" + percentEncode(options_.node) +
                  "&kind=" + percentEncode(options_.kind);
  if (!options_.service.empty())
    t += "&service=" + percentEncode(options_.service);
  if (!options_.gateway.empty())
    t += "&gateway=" + percentEncode(options_.gateway);
  return t;
}

void MeshClient::connect() {
  if (!running_)
    return;
  attempts_++;
  buffer_.clear();
  session_.beginStream();
  stream_takes_acks_ = false;
  http::ClientRequest req;
  req.target = streamTarget();
  req.headers.add("accept", "application/x-ndjson");
  if (!options_.token.empty())
    req.headers.add("x-consul-token", options_.token);
  http::RequestOptions ro;
  ro.connect_timeout = options_.connect_timeout;
  ro.timeout = Duration::zero();
  if (options_.acks_in_stream) {
    req.method = "POST";
    req.headers.add("content-type", "application/x-ndjson");
    ro.open_body = true;
  }
  http::Client::StreamCallbacks cbs;
  cbs.on_head = [this](const http::ClientResponseHead& h) { onHead(h); };
  cbs.on_body = [this](std::string_view piece) { onBody(piece); };
  cbs.on_done = [this](Status st) { onDone(st); };
  TLOG_DEBUG("mesh: connecting to {}", currentServer().toString());
  stream_ = http_.stream(currentServer(), std::move(req), ro, std::move(cbs));
  // The watchdog also bounds a server that accepts the connection and never answers.
  watchdog_timer_->enable(options_.heartbeat * options_.missed_heartbeats);
}

void MeshClient::onHead(const http::ClientResponseHead& head) {
  if (head.status == 405 && options_.acks_in_stream) {
    // A server that streams only to GET: acks go as requests of their own from now on.
    options_.acks_in_stream = false;
    failure_ = "the server does not take acks in the stream (405 to POST); asking with GET";
    restart_timer_->enable(Duration::zero());
    return;
  }
  if (head.status != 200) {
    failure_ = fmt::format("stream answered {} {}", head.status, head.reason);
    restart_timer_->enable(Duration::zero());
    return;
  }
  watchdog_timer_->enable(options_.heartbeat * options_.missed_heartbeats);
  stream_takes_acks_ = options_.acks_in_stream;
  setConnected(true);
  TLOG_INFO("mesh: stream to {} is up", currentServer().toString());
}

void MeshClient::onBody(std::string_view piece) {
  if (restart_timer_->enabled())
    return; // already failing; the restart drops the stream
  watchdog_timer_->enable(options_.heartbeat * options_.missed_heartbeats);
  size_t start = 0;
  while (start < piece.size()) {
    const size_t nl = piece.find('\n', start);
    const std::string_view part =
        piece.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start);
    if (buffer_.size() + part.size() > options_.max_message_bytes) {
      drainLines(); // the complete lines before it still count
      failure_ =
          fmt::format("a message exceeds max_message_bytes ({} bytes)", options_.max_message_bytes);
      restart_timer_->enable(Duration::zero());
      return;
    }
    if (nl == std::string_view::npos) {
      buffer_.append(part);
      break;
    }
    start = nl + 1;
    std::string_view line = part;
    if (!buffer_.empty()) {
      buffer_.append(part);
      line = buffer_;
    }
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    if (!line.empty()) {
      lines_.emplace_back(line);
      lines_bytes_ += line.size();
    }
    buffer_.clear();
  }
  // A burst is handled as one batch once the read that delivered it is done; a backlog
  // larger than one message's limit is handled at once, so the queue stays bounded.
  if (lines_bytes_ > options_.max_message_bytes)
    drainLines();
  else if (!lines_.empty() && !drain_posted_) {
    drain_posted_ = true;
    dispatcher_.post([this, alive = std::weak_ptr<bool>(alive_)] {
      if (alive.expired())
        return;
      drain_posted_ = false;
      drainLines();
    });
  }
}

void MeshClient::drainLines() {
  if (lines_.empty() || restart_timer_->enabled())
    return;
  std::vector<std::string> lines = std::move(lines_);
  lines_.clear();
  lines_bytes_ = 0;
  auto out = session_.handleLines(lines);
  const int64_t applied_at_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                    dispatcher_.timeSource().systemTime().time_since_epoch())
                                    .count();
  for (Ack& ack : out.acks) {
    ack.applied_at_us = applied_at_us;
    if (metrics_)
      (ack.accepted ? accepted_metric_ : rejected_metric_).inc();
    if (ack.accepted)
      TLOG_DEBUG("mesh: applied version {}", ack.version);
    sendAck(ack);
  }
  if (metrics_ && !out.acks.empty())
    version_metric_.set(static_cast<double>(session_.appliedVersion()));
  // A stream that delivered a good snapshot is healthy: the next failure starts the
  // backoff from the beginning.
  if (!out.acks.empty() && out.stream.ok())
    backoff_.reset();
  if (!out.stream.ok()) {
    failure_ = "protocol error: " + out.stream.error().message();
    buffer_.clear();
    restart_timer_->enable(Duration::zero());
  }
}

void MeshClient::onDone(const Status& st) {
  if (!running_)
    return;
  if (restart_timer_->enabled()) // a failure found first says more (e.g. the head's status)
    return retry(failure_);
  retry(st.ok() ? std::string("the server ended the stream") : st.error().message());
}

void MeshClient::retry(const std::string& why) {
  stream_.cancel();
  stream_takes_acks_ = false;
  watchdog_timer_->disable();
  restart_timer_->disable();
  buffer_.clear();
  lines_.clear();
  lines_bytes_ = 0;
  const bool was = connected_;
  setConnected(false);
  if (!running_)
    return;
  const Duration wait = backoff_.next();
  const net::SocketAddress from = currentServer();
  server_ = (server_ + 1) % options_.servers.size();
  if (was)
    TLOG_WARN("mesh: stream to {} lost ({}); keeping version {}; next try {} in {}",
              from.toString(), why, session_.appliedVersion(), currentServer().toString(),
              formatDuration(wait));
  else
    TLOG_INFO("mesh: no stream from {} ({}); next try {} in {}", from.toString(), why,
              currentServer().toString(), formatDuration(wait));
  reconnect_timer_->enable(wait);
}

void MeshClient::sendAck(const Ack& ack) {
  // Accepted acks of this stream ride on it: one write, no request, no response to wait for.
  // A rejection goes as its own request, which reports whether it arrived (the proxy may be
  // about to drop the stream).
  if (ack.accepted && stream_takes_acks_ && ack.stream == session_.state().stream() &&
      stream_.write(fmt::format("{{\"version\":{},\"accepted\":true,\"applied_at_us\":{}}}\n",
                                ack.version, ack.applied_at_us)))
    return;
  if (ack.accepted && !acks_.empty() && acks_.back().accepted)
    acks_.back() = ack;
  else
    acks_.push_back(ack);
  if (acks_.size() > kMaxQueuedAcks)
    acks_.pop_front(); // only rejections pile up, and the newest say most
  if (!ack_in_flight_)
    sendNextAck();
}

void MeshClient::sendNextAck() {
  if (acks_.empty())
    return;
  const Ack ack = std::move(acks_.front());
  acks_.pop_front();
  ack_in_flight_ = true;
  nlohmann::json body{{"node", options_.node},
                      {"stream", ack.stream},
                      {"version", ack.version},
                      {"accepted", ack.accepted},
                      {"applied_at_us", ack.applied_at_us}};
  if (!ack.accepted)
    body["error"] = ack.error;
  http::HeaderMap h;
  h.add("content-type", "application/json");
  if (!options_.token.empty())
    h.add("x-consul-token", options_.token);
  const net::SocketAddress to = currentServer();
  http::ClientRequest req{"POST", "/v1/mesh/ack", std::move(h),
                          body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)};
  http::RequestOptions opts;
  opts.timeout = options_.ack_timeout;
  // One persistent connection per proxy instead of a connect per ack. An ack may then be sent
  // twice (the client retries once when a reused connection was closed under it): harmless,
  // acks are idempotent and cumulative.
  opts.keep_alive = true;
  // The callback runs only while http_ (a member) lives: destroying it cancels requests.
  http_.request(to, std::move(req), std::move(opts),
                [this, to, v = ack.version](Result<http::ClientResponse> r) {
                  ack_in_flight_ = false;
                  if (!r.ok())
                    TLOG_WARN("mesh: ack of version {} to {} failed: {}", v, to.toString(),
                              r.error().message());
                  else if (r->status != 200 && r->status != 404)
                    TLOG_WARN("mesh: ack of version {} to {} answered {}", v, to.toString(),
                              r->status);
                  sendNextAck();
                });
}

} // namespace trellis::proxy::mesh
