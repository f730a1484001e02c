#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/dispatcher.h"
#include "base/random.h"
#include "base/result.h"
#include "http/client.h"
#include "proxy/config.h"
#include "proxy/mesh/mesh_config.h"
#include "proxy/mesh/mesh_state.h"
#include "telemetry/metrics.h"

// The proxy's side of the mesh protocol (docs/protocol.md): one long-lived stream to a
// server, snapshots and deltas turned into configurations, acknowledgements, reconnection.
namespace trellis::proxy::mesh {

// What switches the running proxy to a configuration: the ProxyServer in the binary, a fake
// in tests.
class ConfigApplier {
public:
  virtual ~ConfigApplier() = default;
  // Switches to `snapshot`; an error leaves the previous configuration running.
  virtual Status apply(std::shared_ptr<const Snapshot> snapshot) = 0;
};

struct Ack {
  std::string stream;
  uint64_t version = 0;
  bool accepted = false;
  std::string error; // when rejected
  // Unix time in µs at which the proxy switched to this version (or rejected it), told to
  // the server in the ack (docs/protocol.md "Acknowledgements"); stamped by MeshClient, the
  // session has no clock.
  int64_t applied_at_us = 0;
};

// The message-handling half of the client, free of sockets and clocks so it is tested alone.
// It holds the received state and turns each snapshot or delta into a configuration.
class MeshSession {
public:
  MeshSession(ConfigBuilder& builder, ConfigApplier& applier)
      : builder_(builder), applier_(applier) {}

  struct Outcome {
    std::optional<Ack> ack;     // to post for a snapshot or delta; none for heartbeats
    Status stream = okStatus(); // an error: the stream is out of sync and must be reopened
  };
  // Handles one line of the stream (without its "\n").
  Outcome handleLine(std::string_view line);

  struct BatchOutcome {
    std::vector<Ack> acks;      // in order; at most one per configuration built, plus a reject
    Status stream = okStatus(); // as in Outcome; lines after the one that broke it are dropped
  };
  // Handles lines that arrived together (a burst): each is applied to the received state in
  // order, then the configuration is built and switched to once, and only the last version is
  // acked (accepted, or rejected with the error). Acks are cumulative (docs/protocol.md): the
  // versions before it in the burst are applied too. A line that breaks the stream first gets
  // what came before it built and acked, then its own reject.
  BatchOutcome handleLines(const std::vector<std::string>& lines);
  // A new stream begins: its first message must be a snapshot.
  void beginStream() { awaiting_snapshot_ = true; }

  const MeshState& state() const { return state_; }
  // The version of the configuration running now; 0 before the first accepted one.
  uint64_t appliedVersion() const { return applied_version_; }
  uint64_t accepted() const { return accepted_; }
  uint64_t rejected() const { return rejected_; }

private:
  Ack reject(uint64_t version, const Error& e);
  // Builds and switches to the received state; the ack for `version`.
  Ack applyState(uint64_t version);
  // Applies one parsed line to the received state. Returns false (with `out` set) when the
  // stream is broken; `pending` is the version applied to the state and not yet built.
  bool take(std::string_view line, std::optional<uint64_t>& pending, BatchOutcome& out);

  ConfigBuilder& builder_;
  ConfigApplier& applier_;
  MeshState state_;
  bool awaiting_snapshot_ = true;
  uint64_t applied_version_ = 0;
  uint64_t accepted_ = 0;
  uint64_t rejected_ = 0;
};

// Exponential backoff with full jitter: the n-th wait (from 0) is uniform in
// [0, min(max, base * 2^n)].
class ReconnectBackoff {
public:
  ReconnectBackoff(Duration base, Duration max, uint64_t seed)
      : base_(base), max_(max), random_(seed) {}
  // The bound of the next wait.
  Duration cap() const;
  Duration next();
  void reset() { attempt_ = 0; }

private:
  Duration base_, max_;
  Xoshiro256 random_;
  uint32_t attempt_ = 0;
};

struct MeshClientOptions {
  std::vector<net::SocketAddress> servers; // at least one
  std::string node;                        // [A-Za-z0-9._:-], 1..128
  std::string kind = "sidecar";            // or "gateway"
  std::string service;                     // sidecar
  std::string gateway;                     // gateway
  std::string token;                       // sent as X-Consul-Token when set
  // The server's heartbeat period; a stream silent for missed_heartbeats of them is dead.
  Duration heartbeat = std::chrono::seconds(10);
  uint32_t missed_heartbeats = 3;
  Duration backoff_base = std::chrono::milliseconds(100);
  Duration backoff_max = std::chrono::seconds(10);
  Duration connect_timeout = std::chrono::seconds(1);
  Duration ack_timeout = std::chrono::seconds(5);
  // Longest line (one message) accepted; a snapshot of 10,000 instances is about 1 MiB.
  uint64_t max_message_bytes = 64 * 1024 * 1024;
  // Open the stream as POST and send accepted acks as lines of its request body (no request
  // and response per ack; docs/protocol.md "Acknowledgements"). A server that answers 405 to
  // that is asked again with GET, and acks go as POST /v1/mesh/ack. False: always GET.
  bool acks_in_stream = true;
};

// Keeps one stream open to one of the servers, on the main dispatcher's thread. While no
// stream is up the proxy keeps serving the configuration it last applied (static stability).
class MeshClient {
public:
  MeshClient(Dispatcher& dispatcher, MeshClientOptions options, ConfigBuilder& builder,
             ConfigApplier& applier, uint64_t seed);
  ~MeshClient();

  // Registers trellis_proxy_mesh_* on `registry` (shard 0: the main thread's).
  Status registerMetrics(telemetry::Registry& registry);
  // Connects now, then keeps a stream up until stop().
  void start();
  void stop();

  bool connected() const { return connected_; }
  uint64_t appliedVersion() const { return session_.appliedVersion(); }
  const MeshSession& session() const { return session_; }
  // Streams attempted since start (for tests of the backoff).
  uint64_t attempts() const { return attempts_; }
  // The server the current (or last) attempt went to.
  const net::SocketAddress& currentServer() const { return options_.servers[server_]; }

private:
  void connect();
  void onHead(const http::ClientResponseHead& head);
  void onBody(std::string_view piece);
  void onDone(const Status& st);
  // Drops the stream (if any) and tries again after a backoff.
  void retry(const std::string& why);
  // An accepted ack goes in the stream's body when the stream takes acks. Otherwise it is
  // queued for POST /v1/mesh/ack: those go one at a time, in order (on different connections
  // a late older one could overtake a newer one), an accepted ack replacing a queued accepted
  // one (acks are cumulative); rejections are kept, so the server sees each.
  void sendAck(const Ack& ack);
  void sendNextAck();
  // Handles the complete lines received so far (all that one read delivered) as one batch.
  void drainLines();
  void setConnected(bool c);
  std::string streamTarget() const;

  Dispatcher& dispatcher_;
  MeshClientOptions options_;
  MeshSession session_;
  ReconnectBackoff backoff_;
  http::Client http_;
  http::RequestHandle stream_;
  // The current stream takes accepted acks in its body (it answered 200 to a POST).
  bool stream_takes_acks_ = false;
  std::deque<Ack> acks_; // not sent yet, oldest first; at most kMaxQueuedAcks
  bool ack_in_flight_ = false;
  static constexpr size_t kMaxQueuedAcks = 16;
  size_t server_ = 0;
  std::string buffer_;  // the partial line
  // Complete lines not handled yet: onBody() queues them and posts one drainLines() (it runs
  // after the read that delivered them, on this thread) to handle them together. A post
  // instead of a timer due at once: no timer to arm and re-arm on each update.
  std::vector<std::string> lines_;
  size_t lines_bytes_ = 0;
  bool drain_posted_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true); // for a post that outlives us
  std::string failure_; // set from inside a stream callback; acted on by restart_timer_
  std::unique_ptr<Timer> reconnect_timer_, watchdog_timer_, restart_timer_;
  bool running_ = false;
  bool connected_ = false;
  uint64_t attempts_ = 0;
  telemetry::CounterHandle accepted_metric_, rejected_metric_;
  telemetry::GaugeHandle connected_metric_, version_metric_;
  bool metrics_ = false;
};

} // namespace trellis::proxy::mesh
