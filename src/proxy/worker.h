#pragma once

#include <array>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <asio/ip/tcp.hpp>

#include "base/dispatcher.h"
#include "http/codec.h"
#include "proxy/config.h"
#include "proxy/lb/load_balancer.h"
#include "proxy/lb/random.h"
#include "proxy/resilience/shared_state.h"
#include "proxy/stats.h"
#include "telemetry/access_log.h"
#include "telemetry/metrics.h"

namespace trellis::proxy {

class Worker;
class UpstreamPool;
struct WorkerConfig;

// An upstream connection, busy with one request or idle in its endpoint's pool.
class UpstreamConn {
public:
  UpstreamConn(asio::io_context& io, UpstreamPool& pool) : socket(io), pool_(&pool) {}
  ~UpstreamConn() {
    if (counted_by)
      counted_by->limit(LimitKind::kConnections).release();
  }

  asio::ip::tcp::socket socket;
  uint32_t requests = 0;      // requests sent on it so far
  MonotonicTime idle_since{}; // when it last went back to the pool
  bool idle = false;          // in the pool, with a read-readiness watch armed
  // The cluster whose max_connections this connection counts against, until it is destroyed.
  std::shared_ptr<ClusterState> counted_by;
  UpstreamPool& pool() { return *pool_; }

private:
  UpstreamPool* pool_;
};

// Keep-alive connections to one endpoint on one worker. Survives configuration reloads (it is
// keyed by address), so a reload does not throw warm connections away.
class UpstreamPool {
public:
  UpstreamPool(Worker& worker, net::SocketAddress address)
      : worker_(worker), address_(address) {}
  ~UpstreamPool();

  const net::SocketAddress& address() const { return address_; }
  // The most recently used idle connection, or null.
  std::shared_ptr<UpstreamConn> take();
  // Returns a connection that finished a request cleanly. Closes it instead when the pool
  // holds `max_idle` already or it served `max_requests` (0 = unlimited).
  void release(std::shared_ptr<UpstreamConn> conn, uint32_t max_idle, uint32_t max_requests);
  // Closes idle connections unused for `idle_timeout` (called by the worker's sweep).
  void sweep(MonotonicTime now);
  size_t idleCount() const { return idle_.size(); }
  void closeAll();

  // Set by the cluster using this pool: the upstream connection gauge and idle timeout. The
  // gauge is held by value (a handle to the registry's series): the runtime that set it may be
  // gone (a mesh update replaced its cluster) when an idle connection is swept.
  telemetry::GaugeHandle active_gauge;
  Duration idle_timeout{0};
  const WorkerConfig* owner = nullptr; // the configuration that last claimed this pool

private:
  void watch(const std::shared_ptr<UpstreamConn>& conn);
  void drop(UpstreamConn* conn);

  Worker& worker_;
  net::SocketAddress address_;
  std::vector<std::shared_ptr<UpstreamConn>> idle_;
};

// A cluster's metric handles on one worker.
struct ClusterStats {
  telemetry::CounterHandle cx_total, pool_reuse, err_connect, err_connect_timeout, err_reset,
      err_bad_response, err_proxy_error;
  telemetry::GaugeHandle cx_active;
  telemetry::CounterHandle retries, retries_succeeded, retries_budget_exhausted, panic;
  std::array<telemetry::CounterHandle, static_cast<size_t>(LimitKind::kCount)> overflow;
};

// A cluster as one worker runs it: endpoint states, the balancer, per-endpoint pools and
// the cluster's metric handles. Pools and metric series are created on first use, so a
// configuration with many clusters costs little until traffic reaches them.
struct ClusterRuntime {
  ClusterRuntime(const Cluster& cfg, Worker& worker, std::shared_ptr<ClusterState> state);

  // Makes the endpoint set and balancer on first use, then copies endpoint states from the
  // shared ClusterState when they changed (one atomic load when they did not). Call before
  // every pick: `endpoints` and `lb` are valid after it.
  void syncHealth() {
    if (!lb)
      build();
    const uint64_t g = state->generation();
    if (g != seen_generation_)
      syncHealthSlow(g);
  }
  void syncHealthSlow(uint64_t generation);

  // The pool of endpoint `ep` (created on first use, owned by the worker).
  UpstreamPool& pool(size_t ep);
  ClusterStats& stats();
  // Makes `endpoints` and `lb` (syncHealth() calls it the first time).
  void build();

  const Cluster& cfg;
  Worker& worker;
  std::shared_ptr<ClusterState> state;
  uint64_t seen_generation_ = 0;
  // Both made by the first syncHealth() (build()), not by the constructor: a mesh update
  // makes a runtime per changed cluster, and most serve no request before the next update.
  // Until then the set is empty and `lb` null.
  EndpointSet endpoints{std::vector<uint32_t>{}};
  std::unique_ptr<LoadBalancer> lb;
  // Per endpoint, null until first used; empty until the cluster's first pool (a mesh update
  // makes a runtime per changed cluster, most of which carry no request before the next).
  std::vector<UpstreamPool*> pools;
  std::unique_ptr<ClusterStats> stats_;
};

// Per route, per target cluster: request counters by code class and the duration histogram.
struct RouteTargetStats {
  std::array<telemetry::CounterHandle, 5> by_class;
  telemetry::HistogramHandle duration;
};

enum class TimeoutKind : uint8_t {
  kConnect,        // connecting to an endpoint (the cluster's connect_timeout)
  kPerTry,         // one try's per_try_timeout before its response head
  kRequest,        // the route's timeout, all tries included
  kUpstreamIdle,   // no bytes from the upstream for the listener's idle_timeout mid-request
  kDownstreamIdle, // an idle keep-alive downstream connection
  kHeaderRead,     // a request head not complete within header_read_timeout
  kCount,
};
const char* timeoutKindName(TimeoutKind k);

// Counters of a route's rate limit and fault injection (only for routes that have them).
struct RoutePolicyStats {
  telemetry::CounterHandle rate_limited, fault_delay, fault_abort;
};

struct ListenerRuntime {
  const Listener* cfg = nullptr;
  std::vector<RoutePolicyStats> route_policy; // [route]
  std::array<telemetry::CounterHandle, static_cast<size_t>(TimeoutKind::kCount)> timeouts;
  std::vector<std::vector<RouteTargetStats>> routes; // [route][target]
  std::array<telemetry::CounterHandle, 5> no_route_by_class;
  telemetry::HistogramHandle no_route_duration;
  telemetry::CounterHandle cx_total, cx_rejected, bytes_in, bytes_out;
  telemetry::GaugeHandle cx_active;
  std::array<telemetry::CounterHandle, static_cast<size_t>(http::ParseError::kCount)> parse_errors;
  std::map<std::string, telemetry::CounterHandle, std::less<>> local_replies;
  // Open now on this worker, through this listener name: one counter that every
  // configuration's runtime of the listener shares, so a connection accepted under one
  // configuration and closed under another (or still on the old one) is counted once.
  std::shared_ptr<uint32_t> connections = std::make_shared<uint32_t>(0);
  telemetry::CounterHandle& localReply(std::string_view flag);
};

// Everything a worker derives from one configuration snapshot. Requests hold a shared_ptr to
// the one they started on, so a reload never pulls state out from under them. A cluster the
// snapshot shares with the previous one (same Cluster object, same shared ClusterState) keeps
// its ClusterRuntime: balancer, endpoint states and pools carry over at no cost.
struct WorkerConfig {
  ~WorkerConfig();
  std::shared_ptr<const Snapshot> snapshot;
  std::shared_ptr<const SharedState> shared;
  // Same order as snapshot->clusters; chunks shared with the previous configuration's.
  ChunkedVector<std::shared_ptr<ClusterRuntime>> clusters;
  // Shared with the previous configuration while the Listener object is the same.
  std::unordered_map<std::string, std::shared_ptr<ListenerRuntime>> listeners;
};

// One worker thread's share of the proxy: its listeners' acceptors, its sessions, its pools.
// Everything here is used only on the worker's dispatcher thread.
class Worker {
public:
  Worker(size_t index, Dispatcher& dispatcher, ProxyStats& stats,
         telemetry::AccessLogWorker* access_log);
  ~Worker();

  // Switches to `snapshot`. `listen_fds` maps listener name to a listening socket this worker
  // takes ownership of, for listeners it does not have yet. Runs on the worker's thread.
  void apply(std::shared_ptr<const Snapshot> snapshot, std::shared_ptr<const SharedState> shared,
             std::map<std::string, int> listen_fds);
  // Stops accepting and closes idle connections; sessions finish what they are doing.
  void shutdown();

  Dispatcher& dispatcher() { return dispatcher_; }
  size_t index() const { return index_; }
  const std::shared_ptr<WorkerConfig>& config() const { return config_; }
  ProxyStats& stats() { return stats_; }
  telemetry::AccessLogWorker* accessLog() { return access_log_; }
  RandomGenerator& random() { return random_; }
  UpstreamPool& pool(const net::SocketAddress& address);
  size_t shard() const { return index_ + 1; } // metrics shard; 0 is the main thread's
  // Active sessions, for shutdown; sessions add and remove themselves.
  size_t sessionCount() const { return sessions_; }
  void sessionOpened() { ++sessions_; }
  void sessionClosed() { --sessions_; }

private:
  struct Acceptor {
    std::string name;
    net::SocketAddress address;
    std::unique_ptr<asio::ip::tcp::acceptor> acceptor;
  };
  void accept(Acceptor& a);
  void onAccepted(const std::string& listener, asio::ip::tcp::socket socket);
  void sweepPools();

  size_t index_;
  Dispatcher& dispatcher_;
  ProxyStats& stats_;
  telemetry::AccessLogWorker* access_log_;
  RandomGeneratorImpl random_;
  std::shared_ptr<WorkerConfig> config_;
  std::list<Acceptor> acceptors_;
  std::unordered_map<std::string, std::unique_ptr<UpstreamPool>> pools_;
  // How many clusters of the current configuration list each endpoint address: a pool is
  // retired when its count drops to zero. Kept up to date from the clusters an apply adds
  // and drops, so an update that changes one cluster costs that cluster's endpoints only.
  struct AddressHash {
    size_t operator()(const net::SocketAddress& a) const;
  };
  std::unordered_map<net::SocketAddress, uint32_t, AddressHash> endpoint_refs_;
  std::vector<std::unique_ptr<UpstreamPool>> retired_pools_;
  std::unique_ptr<Timer> sweep_timer_;
  size_t sessions_ = 0;
  bool shutting_down_ = false;
};

} // namespace trellis::proxy
