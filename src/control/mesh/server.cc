#include "control/mesh/server.h"

#include <algorithm>
#include <charconv>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/log.h"
#include "base/units.h"
#include "manifest/manifest.h"

namespace trellis::control::mesh {

using nlohmann::json;

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Node ids, service and gateway names on the stream: 1..128 of [A-Za-z0-9._:-].
bool validId(std::string_view s) {
  if (s.empty() || s.size() > 128)
    return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == ':' || c == '-';
  });
}

// A Kubernetes namespace or resource name: an RFC 1123 subdomain, 1..253 characters.
bool validResourceName(std::string_view s) {
  if (s.empty() || s.size() > 253)
    return false;
  if (s.front() == '-' || s.front() == '.' || s.back() == '-' || s.back() == '.')
    return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
  });
}

std::optional<manifest::Kind> parseKind(std::string_view s) {
  std::string k = registry::foldName(s);
  for (auto kind : {manifest::Kind::kHttpRoute, manifest::Kind::kTrafficPolicy,
                    manifest::Kind::kService}) {
    std::string name = registry::foldName(manifest::kindName(kind));
    std::string plural = kind == manifest::Kind::kTrafficPolicy ? "trafficpolicies" : name + "s";
    if (k == name || k == plural)
      return kind;
  }
  return std::nullopt;
}

const char* kHelpKinds = "HTTPRoute, TrafficPolicy or Service";

// The version of an ack line written exactly as the trellis proxy writes an accepted one,
// `{"version":N,"accepted":true}`; nullopt for any other line (read as JSON then).
std::optional<uint64_t> acceptedAckVersion(std::string_view line) {
  static constexpr std::string_view kHead = "{\"version\":";
  static constexpr std::string_view kTail = ",\"accepted\":true}";
  if (line.size() <= kHead.size() + kTail.size() || !line.starts_with(kHead) ||
      !line.ends_with(kTail))
    return std::nullopt;
  const std::string_view digits =
      line.substr(kHead.size(), line.size() - kHead.size() - kTail.size());
  if (digits.size() > 1 && digits[0] == '0')
    return std::nullopt;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (ec != std::errc() || end != digits.data() + digits.size())
    return std::nullopt;
  return v;
}

} // namespace

MeshServer::MeshServer(Dispatcher& loop, registry::Registry& registry, telemetry::Registry& metrics,
                       MeshSettings settings)
    : loop_(loop), registry_(registry), metrics_(metrics), settings_(settings),
      compiler_(registry.catalog(), settings.endpoint_tombstones) {
  pump_timer_ = loop_.createTimer([this] { pumpBacklogged(); });
  coalesce_timer_ = loop_.createTimer([this] { onCoalesced(); });
  heartbeat_timer_ = loop_.createTimer([this] { onHeartbeat(); });
  ack_wait_timer_ = loop_.createTimer([this] { onAckWait(); });

  if (auto f = metrics_.counter("trellis_mesh_messages_sent_total",
                                "Mesh protocol messages sent to proxies, by type", {"type"})) {
    sent_snapshot_ = (*f)->handle(0, {"snapshot"});
    sent_delta_ = (*f)->handle(0, {"delta"});
    sent_heartbeat_ = (*f)->handle(0, {"heartbeat"});
  }
  if (auto f = metrics_.counter("trellis_mesh_bytes_sent_total",
                                "Bytes of mesh protocol messages handed to proxy connections"))
    bytes_sent_ = (*f)->handle(0);
  if (auto f = metrics_.counter("trellis_mesh_acks_total", "Acks received from proxies, by result",
                                {"result"})) {
    acks_accepted_ = (*f)->handle(0, {"accepted"});
    acks_rejected_ = (*f)->handle(0, {"rejected"});
  }
  if (auto f = metrics_.counter("trellis_mesh_ack_errors_total",
                                "Ack lines in proxies' stream bodies that were not a valid ack "
                                "(each logged and ignored)"))
    ack_errors_ = (*f)->handle(0);
  if (auto f = metrics_.counter("trellis_mesh_deltas_held_total",
                                "Deltas a proxy's stream got later, in a catch-up delta, because "
                                "the proxy had not acked the last one yet (pacing)"))
    held_ = (*f)->handle(0);
  if (auto f = metrics_.counter("trellis_mesh_rejected_total",
                                "Mesh updates a proxy rejected (it kept its last good state)"))
    rejected_ = (*f)->handle(0);
  if (auto f = metrics_.counter("trellis_mesh_streams_lagging_total",
                                "Streams closed because their client fell too far behind"))
    lagging_ = (*f)->handle(0);
  if (auto r = metrics_.gaugeCallback("trellis_mesh_streams", "Mesh config streams connected",
                                      [this] { return double(streams_.size()); }))
    callbacks_.push_back(std::move(*r));
  if (auto r = metrics_.counterCallback(
          "trellis_mesh_endpoints_skipped_total",
          "Passing instances left out of a compiled service: address not an IP, or port 0",
          [this] { return compiler_.stats().endpoints_skipped; }))
    callbacks_.push_back(std::move(*r));
  if (auto r = metrics_.gaugeCallback("trellis_mesh_version", "The mesh state's version",
                                      [this] { return double(compiler_.version()); }))
    callbacks_.push_back(std::move(*r));
  if (auto r = metrics_.gaugeCallback("trellis_mesh_services", "Services in the mesh state",
                                      [this] { return double(compiler_.services().size()); }))
    callbacks_.push_back(std::move(*r));
}

MeshServer::~MeshServer() {
  *alive_ = false;
  callbacks_.clear();
  if (started_)
    registry_.catalog().removeObserver(this);
  stop();
}

void MeshServer::start() {
  compiler_.rebuild();
  registry_.catalog().addObserver(this);
  started_ = true;
  heartbeat_timer_->enable(settings_.heartbeat);
  TLOG_INFO("mesh: {} services, {} gateways at version {}", compiler_.services().size(),
            compiler_.gateways().size(), compiler_.version());
}

void MeshServer::stop() {
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [node, s] : streams)
    closeStream(s, true);
  backlogged_.clear();
  heartbeat_timer_->disable();
  coalesce_timer_->disable();
  pump_timer_->disable();
  ack_wait_timer_->disable();
  // A body still being parsed is dropped: its client sees the connection close.
  if (parser_)
    parser_->stop();
  parser_.reset();
  parses_in_flight_ = 0;
  ++parse_epoch_; // results already posted back are dropped
}

// ---------------------------------------------------------------------------------------------
// Changes

void MeshServer::onApplied(const registry::Batch& batch) {
  compiler_.noteBatch(batch);
  if (!compiler_.dirty() || coalesce_timer_->enabled())
    return;
  // Leading edge: the first change after a quiet period costs no wait (the timer runs on the
  // loop's next turn, so batches applied in this turn still join it). One that follows a
  // delta by less than `coalesce` waits for the window's end, and those after it join it.
  const MonotonicTime now = loop_.now();
  Duration wait = Duration::zero();
  if (last_flush_ && *last_flush_ + settings_.coalesce > now)
    wait = *last_flush_ + settings_.coalesce - now;
  coalesce_timer_->enable(wait);
}

void MeshServer::onCoalesced() {
  auto delta = compiler_.flush();
  if (!delta)
    return;
  last_flush_ = loop_.now();
  const uint64_t version = compiler_.version();
  catchups_.clear();
  // Copy: a failing write may close (and unlink) a stream during the loop.
  std::vector<StreamPtr> all;
  all.reserve(streams_.size());
  for (auto& [node, s] : streams_)
    all.push_back(s);
  for (auto& s : all) {
    if (s->closed)
      continue;
    if (!s->queue.empty() || awaitingAck(*s)) {
      // Still sending an earlier message, or its client still applying it: one catch-up
      // delta follows (pump, or the ack).
      if (s->queue.empty()) {
        ++stats_.deltas_held;
        held_.inc();
        armAckWait(s->sent_at + settings_.max_ack_wait);
      }
      s->behind = true;
      continue;
    }
    s->sent_version = version;
    s->sent_at = loop_.now();
    ++stats_.deltas_sent;
    sent_delta_.inc();
    enqueue(s, delta);
  }
}

bool MeshServer::awaitingAck(const Stream& s) const {
  return settings_.max_ack_wait > Duration::zero() && s.acked && s.acked_version < s.sent_version &&
         loop_.now() < s.sent_at + settings_.max_ack_wait;
}

void MeshServer::releaseIfDue(const StreamPtr& s) {
  if (s->closed || !s->behind || !s->queue.empty())
    return;
  if (!awaitingAck(*s)) {
    catchUp(s);
    return;
  }
  armAckWait(s->sent_at + settings_.max_ack_wait);
}

void MeshServer::armAckWait(MonotonicTime due) {
  if (ack_wait_timer_->enabled() && ack_wait_due_ <= due)
    return; // it fires earlier; that turn re-arms for the streams still waiting
  ack_wait_due_ = due;
  const MonotonicTime now = loop_.now();
  ack_wait_timer_->enable(due > now ? due - now : Duration::zero());
}

void MeshServer::onAckWait() {
  // Copy: a catch-up's failing write may close (and unlink) a stream during the loop.
  std::vector<StreamPtr> held;
  for (auto& [node, s] : streams_)
    if (s->behind && s->queue.empty())
      held.push_back(s);
  for (auto& s : held) {
    if (!s->closed && !awaitingAck(*s) && s->acked_version < s->sent_version)
      TLOG_DEBUG("mesh: {} did not ack version {} within {} ms: sending it the next", s->node,
                 s->sent_version, settings_.max_ack_wait / std::chrono::milliseconds(1));
    releaseIfDue(s); // one still waiting re-arms the timer for the earliest of them
  }
}

void MeshServer::catchUp(const StreamPtr& s) {
  s->behind = false;
  const uint64_t version = compiler_.version();
  if (s->sent_version >= version)
    return;
  auto& msg = catchups_[s->sent_version];
  if (!msg)
    msg = compiler_.deltaSince(s->sent_version);
  if (!msg) {
    TLOG_WARN("mesh: closing the stream of {} ({}): too far behind (version {}) for a delta",
              s->node, s->peer, s->sent_version);
    ++stats_.streams_lagging;
    lagging_.inc();
    closeStream(s, true);
    return;
  }
  s->sent_version = version;
  s->sent_at = loop_.now();
  ++stats_.deltas_sent;
  ++stats_.catchups_sent;
  sent_delta_.inc();
  enqueue(s, msg);
}

void MeshServer::onHeartbeat() {
  heartbeat_timer_->enable(settings_.heartbeat);
  const MonotonicTime now = loop_.now();
  std::shared_ptr<const std::string> msg;
  std::vector<StreamPtr> due;
  for (auto& [node, s] : streams_)
    if (s->queue.empty() && now - s->last_write >= settings_.heartbeat)
      due.push_back(s);
  if (due.empty())
    return;
  msg = std::make_shared<const std::string>(
      fmt::format("{{\"type\":\"heartbeat\",\"version\":{}}}\n", compiler_.version()));
  for (auto& s : due) {
    if (s->closed)
      continue;
    ++stats_.heartbeats_sent;
    sent_heartbeat_.inc();
    enqueue(s, msg);
  }
}

// ---------------------------------------------------------------------------------------------
// Streams and their output

void MeshServer::enqueue(const StreamPtr& s, std::shared_ptr<const std::string> msg,
                         bool lag) {
  if (s->closed || msg->empty())
    return;
  s->queued_bytes += msg->size();
  if (lag)
    s->lag_bytes += msg->size();
  s->queue.push_back({std::move(msg), 0, lag});
  if (s->lag_bytes > settings_.max_stream_backlog_bytes) {
    TLOG_WARN("mesh: closing the stream of {} ({}): {} bytes not taken by the client (limit {})",
              s->node, s->peer, s->lag_bytes, settings_.max_stream_backlog_bytes);
    ++stats_.streams_lagging;
    lagging_.inc();
    closeStream(s, true);
    return;
  }
  pump(s);
}

// Hands the queued bytes to the connection a chunk at a time, and only when it has taken
// everything before: what is queued stays shared, and each connection holds at most one
// chunk of its own copy.
void MeshServer::pump(const StreamPtr& s) {
  while (!s->closed && !s->queue.empty() && s->w->bufferedBytes() == 0) {
    Piece& p = s->queue.front();
    const std::shared_ptr<const std::string> data = p.data; // outlives the pop below
    const size_t n = std::min(settings_.write_chunk_bytes, data->size() - p.offset);
    const std::string_view chunk(data->data() + p.offset, n);
    // Advance first: a failing write closes the stream, which clears the queue.
    p.offset += n;
    s->queued_bytes -= n;
    if (p.lag)
      s->lag_bytes -= n;
    if (p.offset == data->size())
      s->queue.pop_front();
    s->last_write = loop_.now();
    stats_.bytes_sent += n;
    bytes_sent_.add(n);
    if (!s->w->write(chunk)) {
      closeStream(s, false);
      return;
    }
  }
  if (!s->closed && s->queue.empty() && s->behind) {
    releaseIfDue(s); // enqueues (and pumps) the catch-up delta, unless an ack is awaited
    return;
  }
  if (!s->closed && !s->queue.empty() && !s->backlogged) {
    s->backlogged = true;
    backlogged_.push_back(s);
    if (!in_pump_round_) // a round schedules the next one itself, by its progress
      schedulePump(true);
  }
}

void MeshServer::schedulePump(bool progress) {
  if (pump_posted_ || pump_timer_->enabled())
    return;
  if (progress) {
    // The connection's write completion is already queued when the kernel took the bytes:
    // a post runs after it, so a fast client is fed at loop speed.
    pump_posted_ = true;
    auto alive = alive_;
    loop_.post([this, alive] {
      if (!*alive)
        return;
      pump_posted_ = false;
      pumpBacklogged();
    });
  } else {
    pump_timer_->enable(settings_.backlog_retry);
  }
}

void MeshServer::pumpBacklogged() {
  auto list = std::move(backlogged_);
  backlogged_.clear();
  bool progress = false;
  in_pump_round_ = true;
  for (auto& s : list) {
    s->backlogged = false;
    const size_t before = s->queued_bytes;
    pump(s); // re-adds itself to backlogged_ if bytes remain
    progress = progress || s->queued_bytes != before;
  }
  in_pump_round_ = false;
  if (!backlogged_.empty())
    schedulePump(progress);
}

void MeshServer::closeStream(const StreamPtr& s, bool finish) {
  if (s->closed)
    return;
  s->closed = true;
  s->queue.clear();
  s->queued_bytes = 0;
  s->lag_bytes = 0;
  auto it = streams_.find(s->node);
  if (it != streams_.end() && it->second == s)
    streams_.erase(it);
  if (finish && s->w->isOpen()) {
    s->w->onClosed(nullptr);
    s->w->finish();
  }
  TLOG_DEBUG("mesh: stream {} of {} closed", s->id, s->node);
  answerWaiters(); // a closed stream is behind no more
}

void MeshServer::openStream(http::ServerRequest& req, const Writer& w) {
  auto node = req.query("node");
  if (!node)
    return reply(w, 400, "node: required (the proxy's unique id)\n");
  if (!validId(*node))
    return reply(w, 400,
                 fmt::format("node: \"{}\" is not 1..128 characters of [A-Za-z0-9._:-]\n",
                             node->substr(0, 200)));
  std::string kind(req.query("kind").value_or("sidecar"));
  std::string target;
  if (kind == "sidecar") {
    if (auto svc = req.query("service")) {
      if (!validId(*svc))
        return reply(w, 400,
                     fmt::format("service: \"{}\" is not 1..128 characters of [A-Za-z0-9._:-]\n",
                                 svc->substr(0, 200)));
      target = *svc;
    }
  } else if (kind == "gateway") {
    auto gw = req.query("gateway");
    if (!gw)
      return reply(w, 400, "gateway: required with kind=gateway (the gateway's name)\n");
    if (!validId(*gw))
      return reply(w, 400,
                   fmt::format("gateway: \"{}\" is not 1..128 characters of [A-Za-z0-9._:-]\n",
                               gw->substr(0, 200)));
    target = *gw;
  } else {
    return reply(w, 400,
                 fmt::format("kind: \"{}\" is not sidecar or gateway\n", kind.substr(0, 200)));
  }
  for (const auto& [k, v] : req.query_params)
    if (k != "node" && k != "kind" && k != "service" && k != "gateway")
      return reply(w, 400,
                   fmt::format("unknown parameter \"{}\" (node, kind, service, gateway)\n",
                               k.substr(0, 200)));

  auto existing = streams_.find(std::string(*node));
  if (existing == streams_.end() && streams_.size() >= settings_.max_streams)
    return reply(w, 503,
                 fmt::format("too many mesh streams ({}, --mesh-max-streams)\n",
                             settings_.max_streams));
  if (existing != streams_.end()) {
    TLOG_INFO("mesh: node {} reconnected from {}; its previous stream is closed", *node,
              req.peer.toString());
    ++stats_.streams_replaced;
    closeStream(existing->second, true);
  }

  auto s = std::make_shared<Stream>();
  s->id = fmt::format("{:016x}", ids_());
  s->node = std::string(*node);
  s->kind = kind;
  s->target = target;
  s->peer = req.peer.toString();
  s->w = w;
  s->connected_at = loop_.timeSource().systemTime();
  s->last_write = loop_.now();
  http::HeaderMap h;
  h.add("Content-Type", "application/x-ndjson");
  h.add("Cache-Control", "no-store");
  h.add("X-Trellis-Mesh-Stream", s->id);
  if (!w->startStream(200, h))
    return;
  streams_[s->node] = s;
  ++stats_.streams_opened;
  std::weak_ptr<Stream> weak = s;
  auto alive = alive_;
  w->onClosed([this, alive, weak] {
    if (!*alive)
      return;
    if (auto st = weak.lock())
      closeStream(st, false);
  });
  if (req.method == http::Method::kPost)
    w->onRequestBody([this, alive, weak](std::string_view piece, bool end) {
      if (!*alive)
        return;
      if (auto st = weak.lock(); st && !st->closed) {
        onAckBytes(st, piece);
        if (end && !st->ack_line.empty())
          onAckBytes(st, "\n"); // a last line without its newline still counts
      }
    });
  // The snapshot: the per-stream head, then the body every stream at this version shares.
  // A change still being coalesced is not in it; it follows as the next delta.
  s->sent_version = compiler_.version();
  s->sent_at = loop_.now();
  ++stats_.snapshots_sent;
  sent_snapshot_.inc();
  enqueue(s,
          std::make_shared<const std::string>(
              fmt::format("{{\"type\":\"snapshot\",\"stream\":\"{}\",", s->id)),
          false);
  enqueue(s, compiler_.snapshotBody(), false);
}

// ---------------------------------------------------------------------------------------------
// HTTP

void MeshServer::reply(const Writer& w, uint16_t status, std::string_view body,
                       std::string_view content_type) {
  http::HeaderMap h;
  h.add("Content-Type", content_type);
  w->send(status, h, body);
}

void MeshServer::handle(http::ServerRequest& req, std::shared_ptr<http::ResponseWriter> w,
                        std::string_view rest) {
  auto method = [&](http::Method m) {
    if (req.method == m || (m == http::Method::kGet && req.method == http::Method::kHead))
      return true;
    reply(w, 405, fmt::format("method {} not allowed on {}\n", req.method_name, req.path));
    return false;
  };
  if (!started_)
    return reply(w, 503, "the mesh is not started yet\n");
  if (rest == "stream") {
    if (req.method == http::Method::kPost) {
      if (!req.body_streamed)
        return reply(w, 400,
                     "POST /v1/mesh/stream takes the proxy's acks in a chunked request body "
                     "(Transfer-Encoding: chunked); GET opens a stream without\n");
      openStream(req, w); // acks follow in the request body
    } else if (method(http::Method::kGet))
      openStream(req, w);
    return;
  }
  if (rest == "ack") {
    if (method(http::Method::kPost))
      ack(req, w);
    return;
  }
  if (rest == "snapshot") {
    if (method(http::Method::kGet))
      snapshot(req, w);
    return;
  }
  if (rest == "proxies") {
    if (method(http::Method::kGet))
      proxies(req, w);
    return;
  }
  if (rest == "resources" || rest.substr(0, 10) == "resources/")
    return resources(req, w, rest.size() > 10 ? rest.substr(10) : std::string_view());
  reply(w, 404, fmt::format("no such endpoint: {}\n", req.path));
}

Status MeshServer::readAck(const json& body, AckFields& out) const {
  auto v = body.find("version");
  if (v == body.end())
    return makeError(ErrorCode::kInvalidArgument, "version: required");
  if (!v->is_number_unsigned())
    return makeError(ErrorCode::kInvalidArgument, "version: expected an unsigned integer, got {}",
                     v->dump());
  out.version = v->get<uint64_t>();
  auto a = body.find("accepted");
  if (a == body.end())
    return makeError(ErrorCode::kInvalidArgument, "accepted: required");
  if (!a->is_boolean())
    return makeError(ErrorCode::kInvalidArgument, "accepted: expected true or false, got {}",
                     a->dump());
  out.accepted = a->get<bool>();
  out.error.clear();
  if (auto e = body.find("error"); e != body.end() && !e->is_null()) {
    if (!e->is_string())
      return makeError(ErrorCode::kInvalidArgument, "error: expected a string, got {}",
                       e->type_name());
    out.error = e->get<std::string>();
    if (out.error.size() > settings_.max_ack_error_bytes)
      out.error.resize(settings_.max_ack_error_bytes);
  }
  out.applied_at_us = 0;
  if (auto t = body.find("applied_at_us"); t != body.end() && !t->is_null()) {
    if (!t->is_number_unsigned() ||
        t->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return makeError(ErrorCode::kInvalidArgument,
                       "applied_at_us: expected unix time in microseconds, got {}", t->dump());
    out.applied_at_us = static_cast<int64_t>(t->get<uint64_t>());
  }
  return okStatus();
}

Status MeshServer::recordAck(StreamPtr sp, AckFields ack) {
  Stream& s = *sp;
  const uint64_t version = ack.version;
  if (version > s.sent_version)
    return makeError(ErrorCode::kInvalidArgument,
                     "version: {} was not sent on this stream (latest {})", version,
                     s.sent_version);
  // Acks are cumulative, and two may travel on different connections: one for an older
  // version than the stream's latest ack is recorded and counted, but does not take the
  // stream's state back.
  const bool late = s.acked && version < s.acked_version;
  if (!late) {
    s.acked = true;
    s.acked_version = version;
    s.last_accepted = ack.accepted;
  }
  if (settings_.ack_history > 0) {
    const auto now = loop_.timeSource().systemTime().time_since_epoch();
    const Stream::AckRecord rec{version,
                                std::chrono::duration_cast<std::chrono::microseconds>(now).count(),
                                ack.applied_at_us, ack.accepted};
    if (s.acks.size() < settings_.ack_history) {
      s.acks.push_back(rec);
    } else {
      s.acks[s.ack_next] = rec;
      s.ack_next = (s.ack_next + 1) % s.acks.size();
    }
  }
  if (ack.accepted) {
    ++stats_.acks_accepted;
    acks_accepted_.inc();
  } else {
    ++stats_.acks_rejected;
    ++s.rejected;
    acks_rejected_.inc();
    rejected_.inc();
    TLOG_WARN("mesh: {} rejected version {}: {}", s.node, version, ack.error);
    if (!late)
      s.last_error = std::move(ack.error);
  }
  // Paced: the ack of the last message sent lets the next go.
  releaseIfDue(sp);
  answerWaiters();
  return okStatus();
}

void MeshServer::ack(http::ServerRequest& req, const Writer& w) {
  auto body = json::parse(req.body, nullptr, false);
  if (body.is_discarded())
    return reply(w, 400, "body: not valid JSON\n");
  if (!body.is_object())
    return reply(w, 400, "body: expected a JSON object {node, stream, version, accepted}\n");
  auto str = [&](const char* key, std::string& out) -> bool {
    auto it = body.find(key);
    if (it == body.end()) {
      reply(w, 400, fmt::format("{}: required\n", key));
      return false;
    }
    if (!it->is_string()) {
      reply(w, 400, fmt::format("{}: expected a string, got {}\n", key, it->type_name()));
      return false;
    }
    out = it->get<std::string>();
    return true;
  };
  std::string node, stream_id;
  if (!str("node", node) || !str("stream", stream_id))
    return;
  AckFields fields;
  if (Status st = readAck(body, fields); !st.ok())
    return reply(w, 400, st.error().message() + "\n");
  auto it = streams_.find(node);
  if (it == streams_.end() || it->second->id != stream_id)
    return reply(w, 404,
                 fmt::format("no stream {} for node {} (closed or replaced: the proxy gets a "
                             "new snapshot when it reconnects)\n",
                             stream_id.substr(0, 64), node.substr(0, 128)));
  if (Status st = recordAck(it->second, std::move(fields)); !st.ok())
    return reply(w, 400, st.error().message() + "\n");
  reply(w, 200, "{}\n", "application/json");
}

void MeshServer::onAckBytes(const StreamPtr& s, std::string_view piece) {
  while (!piece.empty() && !s->closed) {
    const size_t nl = piece.find('\n');
    const std::string_view part = piece.substr(0, nl);
    if (s->ack_line.size() + part.size() > settings_.max_ack_line_bytes) {
      ++stats_.ack_errors;
      ack_errors_.inc();
      TLOG_WARN("mesh: closing the stream of {} ({}): an ack line exceeds {} bytes "
                "(max_ack_line_bytes)",
                s->node, s->peer, settings_.max_ack_line_bytes);
      s->ack_line.clear();
      closeStream(s, true);
      return;
    }
    if (nl == std::string_view::npos) {
      s->ack_line.append(part);
      return;
    }
    piece.remove_prefix(nl + 1);
    std::string_view line = part;
    if (!s->ack_line.empty()) {
      s->ack_line.append(part);
      line = s->ack_line;
    }
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    if (!line.empty()) {
      Status st = okStatus();
      AckFields fields;
      if (auto v = acceptedAckVersion(line)) { // the usual line, without a JSON tree
        fields.version = *v;
        fields.accepted = true;
      } else if (auto body = json::parse(line, nullptr, false); body.is_discarded()) {
        st = makeError(ErrorCode::kInvalidArgument, "not valid JSON");
      } else if (!body.is_object()) {
        st = makeError(ErrorCode::kInvalidArgument, "expected a JSON object {{version, accepted}}");
      } else {
        st = readAck(body, fields);
      }
      if (st.ok())
        st = recordAck(s, std::move(fields));
      if (!st.ok()) {
        ++stats_.ack_errors;
        ack_errors_.inc();
        TLOG_WARN("mesh: ignored an ack line from {} ({}): {}", s->node, s->peer,
                  st.error().message());
      }
    }
    s->ack_line.clear();
  }
}

void MeshServer::snapshot(http::ServerRequest& req, const Writer& w) {
  if (!req.query_params.empty())
    return reply(w, 400, fmt::format("unknown parameter \"{}\"\n", req.query_params.front().first));
  std::string body = "{\"type\":\"snapshot\",";
  body += *compiler_.snapshotBody();
  reply(w, 200, body, "application/json");
}

void MeshServer::proxies(http::ServerRequest& req, const Writer& w) {
  ProxiesQuery q;
  std::optional<Duration> wait;
  for (const auto& [k, v] : req.query_params) {
    if (k == "history") {
      if (v != "true" && v != "false" && !v.empty())
        return reply(w, 400,
                     fmt::format("history: \"{}\" is not true or false\n", v.substr(0, 64)));
      q.history = v != "false";
    } else if (k == "kind") {
      if (v != "sidecar" && v != "gateway")
        return reply(w, 400,
                     fmt::format("kind: \"{}\" is not sidecar or gateway\n", v.substr(0, 64)));
      q.kind = v;
    } else if (k == "behind") {
      uint64_t n = 0;
      auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      if (v.empty() || ec != std::errc() || end != v.data() + v.size())
        return reply(w, 400,
                     fmt::format("behind: \"{}\" is not a version (an unsigned integer)\n",
                                 v.substr(0, 64)));
      q.behind = n;
    } else if (k == "wait") {
      auto d = parseDuration(v);
      if (!d.ok() || *d < Duration::zero())
        return reply(w, 400,
                     fmt::format("wait: \"{}\" is not a duration (e.g. 5s, 250ms)\n",
                                 v.substr(0, 64)));
      wait = std::min(*d, settings_.max_proxies_wait);
    } else {
      return reply(w, 400,
                   fmt::format("unknown parameter \"{}\" (history, kind, behind, wait)\n",
                               k.substr(0, 200)));
    }
  }
  if (wait && !q.behind)
    return reply(w, 400, "wait: only with behind (wait until no proxy is behind that version)\n");
  if (wait && *wait > Duration::zero() && anyListed(q)) { // held until none is behind
    auto waiter = std::make_shared<Waiter>();
    waiter->w = w;
    waiter->q = q;
    std::weak_ptr<Waiter> weak = waiter;
    auto alive = alive_;
    waiter->timer = loop_.createTimer([this, alive, weak] {
      if (*alive)
        if (auto wt = weak.lock())
          answerWaiter(wt);
    });
    waiter->timer->enable(*wait);
    w->onClosed([this, alive, weak] {
      if (*alive)
        if (auto wt = weak.lock())
          std::erase(waiters_, wt);
    });
    waiters_.push_back(std::move(waiter));
    return;
  }
  reply(w, 200, proxiesJson(q) + "\n", "application/json");
}

bool MeshServer::listed(const Stream& s, const ProxiesQuery& q) const {
  if (!q.kind.empty() && s.kind != q.kind)
    return false;
  return !q.behind || !s.acked || !s.last_accepted || s.acked_version < *q.behind;
}

bool MeshServer::anyListed(const ProxiesQuery& q) const {
  return std::any_of(streams_.begin(), streams_.end(),
                     [&](const auto& entry) { return listed(*entry.second, q); });
}

void MeshServer::answerWaiter(const std::shared_ptr<Waiter>& wt) {
  std::erase(waiters_, wt);
  wt->timer->disable();
  if (wt->w->isOpen())
    reply(wt->w, 200, proxiesJson(wt->q) + "\n", "application/json");
}

void MeshServer::answerWaiters() {
  if (waiters_.empty())
    return;
  auto list = waiters_; // replies may run callbacks that touch waiters_
  for (const auto& wt : list)
    if (!anyListed(wt->q))
      answerWaiter(wt);
}

std::string MeshServer::proxiesJson(const ProxiesQuery& q) const {
  std::vector<const Stream*> list;
  for (const auto& [node, s] : streams_)
    if (listed(*s, q))
      list.push_back(s.get());
  std::sort(list.begin(), list.end(),
            [](const Stream* a, const Stream* b) { return a->node < b->node; });
  json out = json::array();
  const SystemTime now = loop_.timeSource().systemTime();
  for (const Stream* s : list) {
    json p = {{"node", s->node},
              {"kind", s->kind},
              {"stream", s->id},
              {"peer", s->peer},
              {"connected_seconds",
               std::chrono::duration_cast<std::chrono::seconds>(now - s->connected_at).count()},
              {"sent_version", s->sent_version},
              {"acked_version", s->acked ? json(s->acked_version) : json(nullptr)},
              {"rejected", s->rejected},
              {"queued_bytes", s->queued_bytes}};
    p[s->kind == "gateway" ? "gateway" : "service"] = s->target;
    if (s->acked)
      p["accepted"] = s->last_accepted;
    if (!s->acks.empty()) { // the newest record is the one before the ring's write position
      const auto& a = s->acks[(s->ack_next + s->acks.size() - 1) % s->acks.size()];
      p["acked_at_us"] = a.at_us;
      if (a.applied_at_us != 0)
        p["applied_at_us"] = a.applied_at_us;
    }
    if (q.history) {
      json acks = json::array();
      for (size_t i = 0; i < s->acks.size(); ++i) {
        const auto& a = s->acks[(s->ack_next + i) % s->acks.size()];
        json rec{{"version", a.version}, {"at_us", a.at_us}, {"accepted", a.accepted}};
        if (a.applied_at_us != 0)
          rec["applied_at_us"] = a.applied_at_us;
        acks.push_back(std::move(rec));
      }
      p["acks"] = std::move(acks);
    }
    if (!s->last_error.empty())
      p["last_error"] = s->last_error;
    out.push_back(std::move(p));
  }
  return dump(out);
}

// ---------------------------------------------------------------------------------------------
// Resources: /v1/mesh/resources[/<Kind>[/<name>]]

void MeshServer::resources(http::ServerRequest& req, const Writer& w, std::string_view rest) {
  std::string ns(req.query("namespace").value_or("default"));
  if (req.hasQuery("namespace") && !validResourceName(ns))
    return reply(w, 400,
                 fmt::format("namespace: \"{}\" is not a DNS name (lowercase letters, digits, "
                             "'-' and '.')\n",
                             ns.substr(0, 253)));
  std::optional<manifest::Kind> kind;
  std::string name;
  if (!rest.empty()) {
    const size_t slash = rest.find('/');
    const std::string_view kind_text = rest.substr(0, slash);
    kind = parseKind(kind_text);
    if (!kind)
      return reply(w, 400,
                   fmt::format("kind: \"{}\" is not one of {}\n", kind_text.substr(0, 64),
                               kHelpKinds));
    if (slash != std::string_view::npos) {
      name = std::string(rest.substr(slash + 1));
      if (!validResourceName(name))
        return reply(w, 400,
                     fmt::format("name: \"{}\" is not a DNS name (lowercase letters, digits, "
                                 "'-' and '.')\n",
                                 name.substr(0, 253)));
    }
  }
  const registry::Catalog& cat = registry_.catalog();

  if (req.method == http::Method::kPut) {
    if (!rest.empty())
      return reply(w, 405, "PUT goes to /v1/mesh/resources (the documents name themselves)\n");
    return putResources(req, w);
  }
  if (req.method == http::Method::kGet || req.method == http::Method::kHead) {
    if (!name.empty()) {
      auto e = cat.kvGet(resourceKey({*kind, ns, name}));
      if (!e.value)
        return reply(w, 404,
                     fmt::format("{} {}/{} not found\n", manifest::kindName(*kind), ns, name));
      return reply(w, 200, e.value->value + "\n", "application/json");
    }
    std::string prefix(kResourcePrefix);
    if (kind)
      prefix += std::string(manifest::kindName(*kind)) + "/";
    const bool one_ns = req.hasQuery("namespace");
    json out = json::array();
    for (const auto& e : cat.kvList(prefix).value) {
      auto doc = json::parse(e->value, nullptr, false);
      if (doc.is_discarded())
        continue;
      if (kind && !e->key.starts_with(prefix))
        continue;
      if (one_ns) {
        const std::string_view rel = std::string_view(e->key).substr(kResourcePrefix.size());
        const size_t a = rel.find('/');
        const size_t b = rel.find('/', a + 1);
        if (a == std::string_view::npos || b == std::string_view::npos ||
            rel.substr(a + 1, b - a - 1) != ns)
          continue;
      }
      out.push_back(std::move(doc));
    }
    return reply(w, 200, dump(out) + "\n", "application/json");
  }
  if (req.method == http::Method::kDelete) {
    if (name.empty())
      return reply(w, 400, "DELETE needs /v1/mesh/resources/<Kind>/<name>\n");
    const std::string key = resourceKey({*kind, ns, name});
    if (!cat.kvGet(key).value)
      return reply(w, 404,
                   fmt::format("{} {}/{} not found\n", manifest::kindName(*kind), ns, name));
    registry::KvDeleteRequest del;
    del.key = key;
    auto alive = alive_;
    registry_.submit(std::move(del), [this, alive, w](Result<registry::WriteResult> r) {
      if (!*alive)
        return;
      if (!r)
        return reply(w, 500, r.error().message() + "\n");
      reply(w, 200, fmt::format("{{\"index\":{}}}\n", r->index), "application/json");
    });
    return;
  }
  reply(w, 405, fmt::format("method {} not allowed on {}\n", req.method_name, req.path));
}

void MeshServer::putResources(http::ServerRequest& req, const Writer& w) {
  if (!parser_) {
    parser_ = std::make_unique<WorkerPool>(1, loop_.timeSource(), "mesh-parse");
    parser_->start();
  }
  ++parses_in_flight_;
  // The parse is pure (text in, resources or an error out); only its result touches this
  // object, on the loop. A server gone meanwhile (alive_) drops it.
  // The writer moves on to the loop's handler: the last reference to it must not be dropped
  // on the parse thread.
  parser_->dispatcher(0).post([this, loop = &loop_, alive = std::weak_ptr<bool>(alive_),
                               epoch = parse_epoch_, body = std::move(req.body), w]() mutable {
    auto loaded = std::make_shared<Result<std::vector<ParsedResource>>>(parseResources(body));
    loop->post([this, alive = std::move(alive), epoch, w = std::move(w), loaded] {
      auto a = alive.lock();
      if (!a || !*a || epoch != parse_epoch_)
        return;
      --parses_in_flight_;
      storeResources(w, std::move(*loaded));
    });
  });
}

Result<std::vector<MeshServer::ParsedResource>> MeshServer::parseResources(std::string_view body) {
  auto loaded = manifest::loadString(body, "body");
  if (!loaded)
    return loaded.error();
  if (loaded->empty())
    return makeError(ErrorCode::kInvalidArgument, "body: no resource documents");
  std::vector<ParsedResource> out;
  out.reserve(loaded->size());
  for (const auto& r : *loaded)
    out.push_back({resourceKey(r.id()), dump(manifest::toJson(r)),
                   std::string(manifest::kindName(r.kind())), r.metadata.namespace_name,
                   r.metadata.name, r.id().toString()});
  return out;
}

void MeshServer::storeResources(const Writer& w, Result<std::vector<ParsedResource>> loaded) {
  if (!loaded)
    return reply(w, 400, loaded.error().message() + "\n");
  // Everything validated: now the writes. Each resource is one KV key; they are submitted
  // together so the registry commits them in one batch (one fsync).
  struct Pending {
    size_t left;
    bool failed = false;
    std::string error;
    uint64_t index = 0;
    json applied = json::array();
  };
  auto pending = std::make_shared<Pending>();
  pending->left = loaded->size();
  auto alive = alive_;
  const registry::Catalog& cat = registry_.catalog();
  for (auto& r : *loaded) {
    registry::KvPutRequest put;
    put.key = std::move(r.key);
    put.value = std::move(r.value);
    auto old = cat.kvGet(put.key);
    const char* action = !old.value                    ? "created"
                         : old.value->value == put.value ? "unchanged"
                                                         : "configured";
    pending->applied.push_back({{"kind", std::move(r.kind)},
                                {"namespace", std::move(r.namespace_name)},
                                {"name", std::move(r.name)},
                                {"result", action}});
    registry_.submit(std::move(put), [this, alive, w, pending, label = std::move(r.label)](
                                         Result<registry::WriteResult> res) {
      if (!*alive)
        return;
      if (!res) {
        pending->failed = true;
        pending->error += fmt::format("{}: {}\n", label, res.error().message());
      } else {
        pending->index = std::max(pending->index, res->index);
      }
      if (--pending->left > 0)
        return;
      if (pending->failed)
        return reply(w, 500, pending->error);
      json out = {{"index", pending->index}, {"applied", pending->applied}};
      reply(w, 200, dump(out) + "\n", "application/json");
    });
  }
}

} // namespace trellis::control::mesh
