#include "proxy/resilience/cluster_state.h"

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "base/log.h"

namespace trellis::proxy {

namespace {

struct AddressHash {
  size_t operator()(const net::SocketAddress& a) const {
    return std::hash<asio::ip::address>()(a.ip) * 31 + a.port;
  }
};

} // namespace

const char* limitKindName(LimitKind k) {
  switch (k) {
  case LimitKind::kConnections:
    return "connections";
  case LimitKind::kPendingRequests:
    return "pending_requests";
  case LimitKind::kRequests:
    return "requests";
  case LimitKind::kRetries:
    return "retries";
  case LimitKind::kCount:
    break;
  }
  return "unknown";
}

ClusterState::ClusterState(const Cluster& config)
    : cfg_(config),
      n_(config.endpoints.size()), limits_{
                                       SharedLimit(config.circuit_breakers.max_connections),
                                       SharedLimit(config.circuit_breakers.max_pending_requests),
                                       SharedLimit(config.circuit_breakers.max_requests),
                                       SharedLimit(config.circuit_breakers.max_retries)} {
  // Outlier detection alone waits for the first failure; active checks start at once.
  if (cfg_.health_check)
    materialize();
}

void ClusterState::materialize() {
  if (flags_owner_ || !tracksEndpoints())
    return; // made already, or nothing ever changes an endpoint's state
  // make_unique value-initialises: every flag starts false.
  flags_owner_ = std::make_unique<std::atomic<bool>[]>(3 * n_);
  const bool start_unhealthy = cfg_.health_check && !cfg_.health_check->start_healthy;
  if (start_unhealthy)
    for (size_t i = 0; i < n_; ++i)
      unhealthy(i).store(true, std::memory_order_relaxed);
  if (cfg_.outlier_detection)
    outlier_.emplace(*cfg_.outlier_detection, n_);
  if (cfg_.health_check)
    trackers_.assign(n_, HealthTracker(*cfg_.health_check));
  flags_.store(flags_owner_.get(), std::memory_order_release);
  if (start_unhealthy)
    publish();
}

EndpointState ClusterState::state(size_t ep) const {
  const std::atomic<bool>* f = flags_.load(std::memory_order_acquire);
  if (f == nullptr)
    return EndpointState::kHealthy;
  if (f[slot(Flag::kEjected, ep)].load(std::memory_order_relaxed))
    return EndpointState::kEjected;
  if (f[slot(Flag::kUnhealthy, ep)].load(std::memory_order_relaxed))
    return EndpointState::kUnhealthy;
  return EndpointState::kHealthy;
}

void ClusterState::reportOutcome(size_t ep, Outcome o, MonotonicTime now) {
  if (!cfg_.outlier_detection || ep >= n_)
    return;
  if (o == Outcome::kSuccess) {
    const std::atomic<bool>* f = flags_.load(std::memory_order_acquire);
    if (f == nullptr || !f[slot(Flag::kCounting, ep)].load(std::memory_order_relaxed))
      return;
  }
  std::lock_guard lock(mu_);
  materialize();
  pristine_ = false;
  counting(ep).store(o != Outcome::kSuccess, std::memory_order_relaxed);
  auto reason = outlier_->onOutcome(ep, o, now);
  if (!reason)
    return;
  ejections_[static_cast<size_t>(*reason)].fetch_add(1, std::memory_order_relaxed);
  ejected(ep).store(true, std::memory_order_relaxed);
  counting(ep).store(false, std::memory_order_relaxed);
  publish();
  TLOG_INFO("cluster {}: ejected endpoint {} ({}, ejection {}, for {} ms)", cfg_.name,
            cfg_.endpoints[ep].address.toString(), ejectReasonName(*reason),
            outlier_->ejectionCount(ep),
            std::chrono::duration_cast<std::chrono::milliseconds>(outlier_->ejectedUntil(ep) - now)
                .count());
}

void ClusterState::reportHealthCheck(size_t ep, bool success) {
  if (trackers_.empty() || ep >= n_)
    return;
  checks_[success ? 1 : 0].fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(mu_);
  pristine_ = false;
  if (!trackers_[ep].onResult(success))
    return;
  const bool healthy = trackers_[ep].healthy();
  unhealthy(ep).store(!healthy, std::memory_order_relaxed);
  publish();
  TLOG_INFO("cluster {}: endpoint {} is now {} (active health check)", cfg_.name,
            cfg_.endpoints[ep].address.toString(), healthy ? "healthy" : "unhealthy");
}

void ClusterState::tick(MonotonicTime now) {
  if (!cfg_.outlier_detection)
    return;
  std::lock_guard lock(mu_);
  if (!outlier_)
    return; // nothing failed yet: nothing to end or forgive
  auto back = outlier_->tick(now);
  for (size_t ep : back) {
    ejected(ep).store(false, std::memory_order_relaxed);
    TLOG_INFO("cluster {}: endpoint {} back from ejection", cfg_.name,
              cfg_.endpoints[ep].address.toString());
  }
  if (!back.empty())
    publish();
}

void ClusterState::inheritFrom(const ClusterState& old) {
  for (size_t r = 0; r < ejections_.size(); ++r)
    ejections_[r].store(old.ejections_[r].load(std::memory_order_relaxed),
                        std::memory_order_relaxed);
  for (size_t r = 0; r < checks_.size(); ++r)
    checks_[r].store(old.checks_[r].load(std::memory_order_relaxed), std::memory_order_relaxed);
  std::scoped_lock lock(mu_, old.mu_);
  overflow_base_ = old.overflow_base_ + (old.outlier_ ? old.outlier_->overflows() : 0);
  // Nothing to take over: no state here, or none made there (nothing ever happened to the
  // old endpoints).
  if (!tracksEndpoints() || !old.flags_owner_)
    return;
  // Nothing happened to the old endpoints: each new one's initial state is what it would
  // inherit (the settings that make that state are the same).
  if (old.pristine_ && old.cfg_.health_check == cfg_.health_check &&
      old.cfg_.outlier_detection == cfg_.outlier_detection)
    return;
  materialize();
  pristine_ = false;
  // A mesh delta re-creates the state of every changed cluster, so this is on the update
  // path. A list edited from the old one (the mesh's) says where each endpoint was. Else by
  // address as it is (no text): the two lists are usually in the same order with a few
  // endpoints added or removed (a file keeps its order), so both are walked in step, each
  // endpoint looked for where the walk is or one further. One not found there is new, unless
  // some old endpoint was not found either (the list was reordered): only then is the old list
  // indexed by address.
  const auto& olds = old.cfg_.endpoints;
  std::vector<size_t> from;
  const bool exact = pairByLineage(cfg_, old.cfg_, from);
  const size_t matched = exact ? 0 : matchInStep(cfg_.endpoints, olds, from);
  if (!exact && matched < n_ && matched < old.n_) {
    std::unordered_map<net::SocketAddress, size_t, AddressHash> old_index;
    old_index.reserve(old.n_);
    for (size_t j = 0; j < old.n_; ++j)
      old_index.emplace(olds[j].address, j);
    for (size_t i = 0; i < n_; ++i)
      if (from[i] == kNotInStep)
        if (auto it = old_index.find(cfg_.endpoints[i].address); it != old_index.end())
          from[i] = it->second;
  }
  bool changed = false;
  for (size_t i = 0; i < n_; ++i) {
    const size_t j = from[i];
    if (j == kNotInStep)
      continue;
    if (!trackers_.empty() && !old.trackers_.empty()) {
      trackers_[i].inherit(old.trackers_[j]);
      unhealthy(i).store(!trackers_[i].healthy(), std::memory_order_relaxed);
      changed = true;
    }
    if (outlier_ && old.outlier_) {
      outlier_->inherit(i, *old.outlier_, j);
      ejected(i).store(outlier_->ejected(i), std::memory_order_relaxed);
      changed = true;
    }
  }
  if (changed)
    publish();
}

uint64_t ClusterState::ejectionOverflows() const {
  std::lock_guard lock(mu_);
  return overflow_base_ + (outlier_ ? outlier_->overflows() : 0);
}

size_t ClusterState::activeEjections() const {
  std::lock_guard lock(mu_);
  return outlier_ ? outlier_->ejectedCount() : 0;
}

std::array<size_t, 3> ClusterState::stateCounts() const {
  std::array<size_t, 3> c{0, 0, 0};
  for (size_t i = 0; i < n_; ++i)
    ++c[static_cast<size_t>(state(i))];
  return c;
}

} // namespace trellis::proxy
