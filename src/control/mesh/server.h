#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/dispatcher.h"
#include "control/mesh/compiler.h"
#include "http/server.h"
#include "manifest/manifest.h"
#include "registry/registry.h"
#include "telemetry/metrics.h"

// The server side of the mesh protocol (docs/protocol.md): the config-push streams, acks,
// the debugging endpoints and the resource API (docs/api.md "Mesh"). Threading: everything
// runs on the control plane's loop thread, the one that owns the registry, except the parse
// of a PUT /v1/mesh/resources body: YAML of up to 1,000 documents takes ~0.1 s, which would
// hold every stream's push, ack and heartbeat, so it runs on a thread of its own and only the
// parsed resources come back to the loop.
namespace trellis::control::mesh {

struct MeshSettings {
  // A heartbeat goes to a stream that was sent nothing for this long.
  Duration heartbeat = std::chrono::seconds(10);
  // Deltas go out at most this often: a change after a quiet period goes at once, changes
  // that follow within this long of a delta wait for the window's end and go as one.
  Duration coalesce = std::chrono::milliseconds(2);
  // Streams connected at once; more get 503.
  size_t max_streams = 16384;
  // A stream whose unsent deltas and heartbeats exceed this many bytes is behind: it is
  // closed, and the proxy reconnects and starts again from a snapshot. (The snapshot itself
  // is shared by every stream at its version and does not count.) A busy stream is queued at
  // most one delta plus one catch-up delta (docs/protocol.md "Deltas"), so in practice this
  // bounds a catch-up: past it, a snapshot is as cheap.
  size_t max_stream_backlog_bytes = 8 * 1024 * 1024;
  // Bytes handed to a stream's connection at a time, only when the connection has taken
  // everything before; bounds what each connection buffers (its own copy) beyond the shared
  // messages.
  size_t write_chunk_bytes = 8 * 1024;
  // How often a stream whose client is not reading is retried.
  Duration backlog_retry = std::chrono::milliseconds(1);
  // Pacing by acks (docs/protocol.md "Flow control"): a stream whose client acknowledges (a
  // proxy: it acked its snapshot) is sent the next delta only once it acknowledged the last
  // one it was sent; the changes made meanwhile go to it as one catch-up delta. A proxy busy
  // applying (a burst, a starved CPU) then applies one update where it would have applied
  // several. A client that does not ack for this long is sent the catch-up anyway. Zero
  // turns pacing off (every delta goes to every stream at once).
  Duration max_ack_wait = std::chrono::seconds(1);
  // Longest error text kept from a rejecting ack.
  size_t max_ack_error_bytes = 1024;
  // Longest ack line a proxy may send in its stream's request body (POST /v1/mesh/stream,
  // docs/protocol.md "Acknowledgements"); a longer one closes the stream.
  size_t max_ack_line_bytes = 4096;
  // Longest `wait` of GET /v1/mesh/proxies?behind=V&wait=D (longer is cut to it).
  Duration max_proxies_wait = std::chrono::minutes(10);
  // Acks remembered per stream (version, time, result), shown by
  // GET /v1/mesh/proxies?history=true: when each proxy applied each version
  // (bench/propagation). 32 bytes each.
  size_t ack_history = 64;
  // Removed endpoint addresses remembered per service, so that a catch-up delta from an older
  // version can name them (docs/protocol.md "Deltas"); a catch-up from before the oldest one
  // carries that service's complete list instead. 16 bytes + the address each.
  size_t endpoint_tombstones = 1024;
};

struct MeshStats {
  uint64_t streams_opened = 0;
  uint64_t streams_replaced = 0;     // a second stream with the same node
  uint64_t streams_lagging = 0;      // closed for exceeding max_stream_backlog_bytes
  uint64_t snapshots_sent = 0;
  uint64_t deltas_sent = 0;
  uint64_t catchups_sent = 0; // deltas from a stream's older version (it was busy; included above)
  uint64_t deltas_held = 0;   // times a delta waited for the stream's ack (pacing)
  uint64_t heartbeats_sent = 0;
  uint64_t bytes_sent = 0;
  uint64_t acks_accepted = 0;
  uint64_t acks_rejected = 0;
  uint64_t ack_errors = 0; // stream ack lines that were not a valid ack (ignored)
};

class MeshServer : public registry::CatalogObserver {
public:
  MeshServer(Dispatcher& loop, registry::Registry& registry, telemetry::Registry& metrics,
             MeshSettings settings = {});
  ~MeshServer() override;
  MeshServer(const MeshServer&) = delete;
  MeshServer& operator=(const MeshServer&) = delete;

  // Compiles the state from the catalog and starts following it.
  void start();
  // Ends every stream (the proxies reconnect elsewhere or later).
  void stop();

  // Handles a request whose path starts with /v1/mesh/; `rest` is the path after it.
  void handle(http::ServerRequest& req, std::shared_ptr<http::ResponseWriter> w,
              std::string_view rest);

  size_t streamCount() const { return streams_.size(); }
  // PUT /v1/mesh/resources bodies being parsed off the loop (their answer is still to come).
  size_t resourceParses() const { return parses_in_flight_; }
  const MeshStats& stats() const { return stats_; }
  const MeshCompiler& compiler() const { return compiler_; }

  // CatalogObserver
  void onApplied(const registry::Batch& batch) override;

private:
  using Writer = std::shared_ptr<http::ResponseWriter>;
  struct Piece {
    std::shared_ptr<const std::string> data;
    size_t offset = 0;
    bool lag = true; // counts towards max_stream_backlog_bytes (the snapshot does not)
  };
  struct Stream {
    std::string id;
    std::string node;
    std::string kind;
    std::string target; // the service (sidecar) or gateway name
    std::string peer;
    Writer w;
    std::deque<Piece> queue;
    size_t queued_bytes = 0;
    size_t lag_bytes = 0; // queued bytes of deltas and heartbeats
    uint64_t sent_version = 0;
    uint64_t acked_version = 0;
    bool acked = false;
    bool last_accepted = false;
    uint64_t rejected = 0;
    std::string last_error;
    // The last settings_.ack_history acks, a ring: once full, acks[ack_next] is the oldest.
    struct AckRecord {
      uint64_t version = 0;
      int64_t at_us = 0;         // unix time the ack arrived (the server's clock)
      int64_t applied_at_us = 0; // unix time the proxy says it applied it (0: not told)
      bool accepted = false;
    };
    std::vector<AckRecord> acks;
    size_t ack_next = 0;
    MonotonicTime last_write{};
    SystemTime connected_at{};
    bool backlogged = false;
    bool closed = false;
    // Deltas were produced while this stream was still sending an earlier message: it gets
    // one delta from `sent_version` to the current version once its queue is empty, instead
    // of every delta in between (a slow stream costs no memory and catches up in one step).
    bool behind = false;
    // When the last snapshot or delta was queued: an unacknowledged one holds the next
    // (settings_.max_ack_wait) until an ack or this long after.
    MonotonicTime sent_at{};
    // Acks come in this stream's request body (POST): the line received so far.
    std::string ack_line;
  };
  using StreamPtr = std::shared_ptr<Stream>;

  void openStream(http::ServerRequest& req, const Writer& w);
  void ack(http::ServerRequest& req, const Writer& w);
  // One ack, from either place: its fields as sent (`error` may be null).
  struct AckFields {
    uint64_t version = 0;
    bool accepted = false;
    std::string error;
    int64_t applied_at_us = 0; // as the proxy told it; 0 when it did not
  };
  // Reads version, accepted, error and applied_at_us from an ack object; the error names the
  // field.
  Status readAck(const nlohmann::json& body, AckFields& out) const;
  // Records an ack of `s`; an error when it acks a version not sent on the stream. Held by
  // value: the catch-up the ack releases may close the stream (and unlink it from streams_).
  Status recordAck(StreamPtr s, AckFields ack);
  // A piece of a POST stream's body: ack lines.
  void onAckBytes(const StreamPtr& s, std::string_view piece);
  void snapshot(http::ServerRequest& req, const Writer& w);
  void proxies(http::ServerRequest& req, const Writer& w);
  // GET /v1/mesh/proxies: which streams to list.
  struct ProxiesQuery {
    bool history = false;
    std::string kind;                    // empty: every kind
    std::optional<uint64_t> behind;      // only those whose newest ack is not an accept >= it
  };
  bool listed(const Stream& s, const ProxiesQuery& q) const;
  bool anyListed(const ProxiesQuery& q) const;
  std::string proxiesJson(const ProxiesQuery& q) const;
  // Answers the held queries that no stream is behind any more (after an ack or a close).
  void answerWaiters();
  struct Waiter {
    Writer w;
    ProxiesQuery q;
    std::unique_ptr<Timer> timer;
  };
  // Answers a held query now (with whoever is still behind) and forgets it.
  void answerWaiter(const std::shared_ptr<Waiter>& wt);
  void resources(http::ServerRequest& req, const Writer& w, std::string_view rest);
  void putResources(http::ServerRequest& req, const Writer& w);
  // A resource of a PUT body, ready to store: its KV key and value and how the answer names it.
  struct ParsedResource {
    std::string key;
    std::string value;
    std::string kind;
    std::string namespace_name;
    std::string name;
    std::string label; // for errors: Kind/namespace/name
  };
  // On the parse thread: the body's resources, validated and serialised (no member touched).
  static Result<std::vector<ParsedResource>> parseResources(std::string_view body);
  // Back on the loop with the parsed body: stores the resources (one registry batch).
  void storeResources(const Writer& w, Result<std::vector<ParsedResource>> loaded);

  void enqueue(const StreamPtr& s, std::shared_ptr<const std::string> msg, bool lag = true);
  void pump(const StreamPtr& s);
  void pumpBacklogged();
  void schedulePump(bool progress);
  void closeStream(const StreamPtr& s, bool finish);
  void onCoalesced();
  // The stream's last message is not acknowledged yet and may still be (pacing, see
  // MeshSettings::max_ack_wait): the next delta waits.
  bool awaitingAck(const Stream& s) const;
  // Sends the catch-up delta to `s` if it is behind and nothing holds it any more (its queue
  // is empty and no ack is awaited); arms the ack-wait timer for one that still waits.
  void releaseIfDue(const StreamPtr& s);
  // Has the ack-wait timer fire by `due` (the earliest held stream's end of wait).
  void armAckWait(MonotonicTime due);
  void onAckWait();
  void catchUp(const StreamPtr& s);
  void onHeartbeat();
  void reply(const Writer& w, uint16_t status, std::string_view body,
             std::string_view content_type = "text/plain; charset=utf-8");

  Dispatcher& loop_;
  registry::Registry& registry_;
  telemetry::Registry& metrics_;
  MeshSettings settings_;
  MeshCompiler compiler_;
  bool started_ = false;
  std::unordered_map<std::string, StreamPtr> streams_; // by node
  std::vector<StreamPtr> backlogged_;
  // Held GET /v1/mesh/proxies?behind=&wait= queries.
  std::vector<std::shared_ptr<Waiter>> waiters_;
  // Catch-up deltas to the current version, by base version (streams behind since the same
  // version share one); cleared when the version changes.
  std::unordered_map<uint64_t, std::shared_ptr<const std::string>> catchups_;
  bool pump_posted_ = false;
  bool in_pump_round_ = false;
  std::unique_ptr<Timer> pump_timer_;
  std::unique_ptr<Timer> coalesce_timer_;
  std::optional<MonotonicTime> last_flush_; // when the last delta was produced
  std::unique_ptr<Timer> heartbeat_timer_;
  // Releases streams held for an ack that did not come within max_ack_wait.
  std::unique_ptr<Timer> ack_wait_timer_;
  MonotonicTime ack_wait_due_{}; // when it fires, while enabled
  std::mt19937_64 ids_{std::random_device{}()};
  // One thread that parses resource bodies (started with the first), and how many it has.
  std::unique_ptr<WorkerPool> parser_;
  size_t parses_in_flight_ = 0;
  uint64_t parse_epoch_ = 0; // moves at stop(): parses started before are dropped
  MeshStats stats_;

  telemetry::CounterHandle sent_snapshot_, sent_delta_, sent_heartbeat_, bytes_sent_;
  telemetry::CounterHandle acks_accepted_, acks_rejected_, ack_errors_, rejected_, lagging_;
  telemetry::CounterHandle held_;
  std::vector<telemetry::CallbackRegistration> callbacks_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

} // namespace trellis::control::mesh
