#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "base/time.h"
#include "proxy/config.h"
#include "proxy/lb/endpoint_set.h"
#include "proxy/resilience/health_tracker.h"
#include "proxy/resilience/outlier.h"

namespace trellis::proxy {

// One circuit-breaker limit, shared by every worker of a proxy: a counter of what is in use
// and its maximum. Lock-free.
class SharedLimit {
public:
  explicit SharedLimit(uint32_t max = 0) : max_(max) {}

  // Takes one unit if the limit is not reached.
  bool tryAcquire() {
    uint32_t cur = used_.load(std::memory_order_relaxed);
    do {
      if (cur >= max_)
        return false;
    } while (!used_.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed));
    return true;
  }
  // Takes one unit whatever the limit (the caller checked it earlier and may overshoot by
  // the few that decided at the same time).
  void acquire() { used_.fetch_add(1, std::memory_order_relaxed); }
  void release() { used_.fetch_sub(1, std::memory_order_relaxed); }
  uint32_t used() const { return used_.load(std::memory_order_relaxed); }
  uint32_t max() const { return max_; }
  uint32_t remaining() const {
    uint32_t u = used();
    return u >= max_ ? 0 : max_ - u;
  }

private:
  std::atomic<uint32_t> used_{0};
  uint32_t max_;
};

enum class LimitKind : uint8_t { kConnections, kPendingRequests, kRequests, kRetries, kCount };
// "connections", "pending_requests", "requests", "retries" (the metrics' `limit` label).
const char* limitKindName(LimitKind k);

// What a whole proxy knows about one cluster, shared by its workers: circuit-breaker usage,
// and each endpoint's health (active checks, run on the main thread) and ejection (outlier
// detection, fed by every worker's requests). Workers read endpoint states through
// generation()/state() and copy them into their own EndpointSet when the generation moves,
// so the per-request cost is one atomic load. Built per configuration snapshot;
// inheritFrom() carries endpoint state over a reload.
class ClusterState {
public:
  explicit ClusterState(const Cluster& config);

  const Cluster& config() const { return cfg_; }
  SharedLimit& limit(LimitKind k) { return limits_[static_cast<size_t>(k)]; }
  // Retries decided and waiting out their backoff (not yet counted under kRetries, which
  // counts retry tries in flight); the retry budget counts both.
  std::atomic<uint32_t>& retriesWaiting() { return retries_waiting_; }
  const SharedLimit& limit(LimitKind k) const { return limits_[static_cast<size_t>(k)]; }

  // ---- endpoint state ----
  // Bumped whenever some endpoint's state changes.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  EndpointState state(size_t ep) const;
  size_t size() const { return n_; }
  bool hasOutlierDetection() const { return cfg_.outlier_detection.has_value(); }

  // A request's outcome at endpoint `ep` (any thread). Cheap for a success after a success.
  void reportOutcome(size_t ep, Outcome o, MonotonicTime now);
  // An active check's result (main thread).
  void reportHealthCheck(size_t ep, bool success);
  // Ends ejections that are due and forgives old ones (main thread, every outlier interval).
  void tick(MonotonicTime now);
  // Takes over the state of endpoints (matched by address) that `old` also has. Call before
  // any worker uses this state.
  void inheritFrom(const ClusterState& old);

  // ---- counters, for metrics ----
  uint64_t ejections(EjectReason r) const {
    return ejections_[static_cast<size_t>(r)].load(std::memory_order_relaxed);
  }
  uint64_t ejectionOverflows() const;
  size_t activeEjections() const;
  uint64_t healthChecks(bool success) const {
    return checks_[success ? 1 : 0].load(std::memory_order_relaxed);
  }
  // Endpoints in each state now (healthy, unhealthy, ejected).
  std::array<size_t, 3> stateCounts() const;

private:
  void publish() { generation_.fetch_add(1, std::memory_order_acq_rel); }
  // Makes the per-endpoint memory (flags, outlier detector, health trackers) if it is not
  // there yet. With mu_ held, or before the state is shared.
  void materialize();
  // Whether anything ever changes an endpoint's state (else no per-endpoint memory is made).
  bool tracksEndpoints() const { return cfg_.outlier_detection || cfg_.health_check; }
  // The per-endpoint flags, each a run of n_ in the block: ejected, unhealthy, and counting (a
  // failure was counted since the last success, so the next success must take the lock to
  // reset the run; keeps success after success lock-free).
  enum class Flag : size_t { kEjected, kUnhealthy, kCounting };
  size_t slot(Flag f, size_t ep) const { return static_cast<size_t>(f) * n_ + ep; }
  // Valid once materialized.
  std::atomic<bool>& ejected(size_t ep) { return flags_owner_[slot(Flag::kEjected, ep)]; }
  std::atomic<bool>& unhealthy(size_t ep) { return flags_owner_[slot(Flag::kUnhealthy, ep)]; }
  std::atomic<bool>& counting(size_t ep) { return flags_owner_[slot(Flag::kCounting, ep)]; }

  const Cluster& cfg_;
  const size_t n_;
  std::array<SharedLimit, static_cast<size_t>(LimitKind::kCount)> limits_;
  // The per-endpoint flags, 3 x n_ in one block, made on the first thing that happens to an
  // endpoint (a failure, a check, an inherited state), or at once with active health checks.
  // Until then every endpoint is healthy and nothing is counted, and a mesh update that
  // re-creates the state of each cluster it changes pays no per-endpoint memory for the usual
  // untroubled one. `flags_` publishes the block to lock-free readers.
  std::unique_ptr<std::atomic<bool>[]> flags_owner_; // set with mu_ held
  std::atomic<std::atomic<bool>*> flags_{nullptr};
  std::atomic<uint64_t> generation_{0};
  std::atomic<uint32_t> retries_waiting_{0};

  mutable std::mutex mu_;
  std::optional<OutlierDetector> outlier_; // guarded by mu_; made with the flags
  std::vector<HealthTracker> trackers_;    // guarded by mu_; empty without health_check
  uint64_t overflow_base_ = 0;             // overflows inherited from earlier snapshots
  // Guarded by mu_: every endpoint's state is still as this object made it (no failure, check
  // or ejection was recorded, and none inherited), so a successor with the same health check
  // and outlier settings has nothing to take over. A mesh delta re-creates the state of each
  // cluster it changes: for the usual untroubled cluster that costs no walk of its endpoints.
  bool pristine_ = true;

  std::array<std::atomic<uint64_t>, static_cast<size_t>(EjectReason::kCount)> ejections_{};
  std::array<std::atomic<uint64_t>, 2> checks_{}; // [failure, success]
};

} // namespace trellis::proxy
