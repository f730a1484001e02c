#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/dispatcher.h"
#include "http/server.h"
#include "net/listen.h"
#include "proxy/config.h"
#include "proxy/resilience/health_checker.h"
#include "proxy/resilience/shared_state.h"
#include "proxy/stats.h"
#include "proxy/worker.h"
#include "telemetry/access_log.h"
#include "telemetry/metrics.h"

namespace trellis::proxy {

struct ProxyOptions {
  std::string config_path; // empty: configured by apply() (the control plane), no reload
  size_t concurrency = 0; // 0: the configuration's, else one per CPU
};

// The proxy process: the main dispatcher (admin listener, reloads, signals) and the workers.
// Configuration changes arrive as whole snapshots; each worker switches on its own thread,
// new requests use the new snapshot and requests in flight finish on the one they started on.
//
// With concurrency 1 the one worker runs on `main` itself (no worker thread): an update is
// applied by a direct call instead of a post, a wait and two wake-ups. Its sessions are then
// handlers of main's loop, so such a ProxyServer is destroyed on main's thread while that
// loop is not running, as its last user: the destructor shuts `main` down
// (Dispatcher::shutdown) to destroy the sessions still open before the worker they use.
class ProxyServer {
public:
  ProxyServer(Dispatcher& main, ProxyOptions options);
  // Stops (if stop() was not called), destroys the sessions still open (in flight or idle),
  // then the workers.
  ~ProxyServer();

  // Loads the configuration, binds every listener and the admin address, starts the workers.
  // Errors: kInvalidArgument for a bad configuration (exit 2), others for runtime failures.
  Status start();
  // As start(), from a snapshot built elsewhere (the mesh client's first configuration).
  Status start(std::shared_ptr<const Snapshot> initial);
  // Re-reads the configuration file and switches to it; a bad file leaves the running
  // configuration in place and returns the error. Call on the main dispatcher's thread.
  Status reload();
  // Applies a snapshot built elsewhere (the control plane). Main thread. A failure (a listener
  // that cannot bind) leaves the running configuration in place.
  Status apply(std::shared_ptr<const Snapshot> snapshot);
  // Stops accepting and closes idle upstream connections. Worker threads are stopped and
  // joined; a worker on the main dispatcher has no thread to stop: connections it has open
  // are served while main's loop runs (the owner exits it next) and go with the destructor.
  // Idempotent; may run inside a handler of the main loop (admin, signal, mesh client).
  void stop();

  std::shared_ptr<const Snapshot> snapshot() const { return snapshot_; }
  // The running snapshot's shared cluster state (same order as its clusters). Main thread.
  std::shared_ptr<const SharedState> sharedState() const { return shared_; }
  telemetry::Registry& metrics() { return registry_; }
  net::SocketAddress adminAddress() const;
  // Where listener `name` is bound (its real port when configured with port 0). Main thread.
  std::optional<net::SocketAddress> listenerAddress(std::string_view name) const;

private:
  struct BoundListener {
    net::SocketAddress requested; // as configured (maybe port 0)
    net::ListenGroup group;
  };
  // An update that creates more cluster states than this (or for more than half of its
  // clusters) gives freed memory back to the system (malloc_trim), unless it replaced them in
  // place (a mesh delta): smaller ones and deltas would pay a heap walk for nothing.
  static constexpr size_t kTrimAfterClusters = 64;

  // The shared state for `snap`: clusters that are the same objects as in the running
  // snapshot keep their ClusterState (health, ejections, breaker counts untouched); others
  // get a new one that inherits endpoint state from the cluster of the same name. `fresh`
  // counts the new ones.
  // `fresh`: how many clusters got a new state; `in_place`: when every one of them replaced
  // the state at the same index under the same name (sharedStateInPlace), their indices;
  // empty otherwise.
  std::shared_ptr<SharedState> sharedStateFor(const Snapshot& snap, size_t& fresh,
                                              std::vector<size_t>& in_place);
  // sharedStateFor() when `snap` has the running snapshot's clusters with some replaced in
  // place (same index and name; a mesh delta): the running states with just those replaced,
  // visiting only the chunks the snapshots do not share. Null when that does not hold.
  std::shared_ptr<SharedState> sharedStateInPlace(const Snapshot& snap, size_t& fresh,
                                                  std::vector<size_t>& in_place);
  // Worker i's dispatcher: a pool thread's, or main_ when the one worker runs there.
  Dispatcher& workerDispatcher(size_t i) { return pool_ ? pool_->dispatcher(i) : main_; }
  // Runs fn(i) for workers [from, to) on their dispatchers and returns when all are done:
  // posted to the worker threads at once (waiting for each in turn would add up their
  // wake-up latencies), called directly for a worker on main_, where a post and a wait would
  // deadlock. Main thread; never on the request path.
  void onWorkers(size_t from, size_t to, const std::function<void(size_t)>& fn);
  void handleAdmin(http::ServerRequest& req, std::shared_ptr<http::ResponseWriter> w);
  std::string clustersJson();
  // Endpoint health, ejections and circuit-breaker capacity, read from the shared cluster
  // states at scrape time (no registry series per cluster), in the Prometheus text format.
  void renderClusterState(std::string& out) const;

  Dispatcher& main_;
  ProxyOptions options_;
  size_t concurrency_ = 1;
  telemetry::Registry registry_;
  ProxyStats stats_;
  std::shared_ptr<const Snapshot> snapshot_;
  std::shared_ptr<SharedState> shared_;
  RandomGeneratorImpl random_{0x6865616c7468ull};
  std::unique_ptr<HealthProberImpl> prober_;
  std::unique_ptr<HealthChecker> health_;
  std::unique_ptr<WorkerPool> pool_; // null with one worker: it runs on main_
  std::vector<std::unique_ptr<Worker>> workers_;
  std::map<std::string, BoundListener> bound_;
  std::unique_ptr<telemetry::AccessLog> access_log_;
  std::unique_ptr<http::Server> admin_;
  uint64_t generation_ = 0;
  telemetry::CounterHandle reload_ok_, reload_failed_;
  telemetry::GaugeHandle generation_gauge_;
  bool stopped_ = false;
};

} // namespace trellis::proxy
