#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/chunked_vector.h"
#include "base/time.h"
#include "proxy/config.h"
#include "proxy/resilience/cluster_state.h"
#include "proxy/resilience/token_bucket.h"

namespace trellis::proxy {

// The part of a configuration's runtime state that all workers share: each cluster's
// ClusterState (same order as Snapshot::clusters) and each rate-limited route's token
// bucket. Built on the main thread for every snapshot; endpoint health carries over from the
// previous one.
struct SharedState {
  ChunkedVector<std::shared_ptr<ClusterState>> clusters; // chunks shared with the last state
  // listener name -> one entry per route, null where the route has no rate_limit. Shared
  // with the next state while the listener stays the same object (addRateLimits).
  std::unordered_map<std::string, std::vector<std::shared_ptr<SharedTokenBucket>>> rate_limits;

  SharedTokenBucket* rateLimit(const std::string& listener, size_t route) const {
    auto it = rate_limits.find(listener);
    return it == rate_limits.end() || route >= it->second.size() ? nullptr
                                                                  : it->second[route].get();
  }

  // `previous` (may be null): the running snapshot's state, whose clusters of the same name
  // pass their endpoints' health and ejections on.
  static std::shared_ptr<SharedState> build(const Snapshot& snapshot,
                                            const SharedState* previous, MonotonicTime now);

  // Gives each rate-limited route of `snapshot` its token bucket. A listener that is the
  // very object `previous_snapshot` had (an update that did not touch it: mesh deltas share
  // unchanged listeners) keeps the buckets it had in `previous`, so a stream of unrelated
  // updates does not refill them; any other listener's buckets start full.
  void addRateLimits(const Snapshot& snapshot, const Snapshot* previous_snapshot,
                     const SharedState* previous, MonotonicTime now);
};

inline std::shared_ptr<SharedState> SharedState::build(const Snapshot& snapshot,
                                                       const SharedState* previous,
                                                       MonotonicTime now) {
  auto s = std::make_shared<SharedState>();
  std::unordered_map<std::string_view, const ClusterState*> old;
  if (previous)
    for (const auto& c : previous->clusters)
      old.emplace(c->config().name, c.get());
  for (const auto& c : snapshot.clusters) {
    auto cs = std::make_shared<ClusterState>(c);
    if (auto it = old.find(c.name); it != old.end())
      cs->inheritFrom(*it->second);
    s->clusters.push_back(std::move(cs));
  }
  s->addRateLimits(snapshot, nullptr, nullptr, now);
  return s;
}

inline void SharedState::addRateLimits(const Snapshot& snapshot,
                                       const Snapshot* previous_snapshot,
                                       const SharedState* previous, MonotonicTime now) {
  for (const auto& l : snapshot.listeners) {
    bool any = false;
    for (const auto& r : l.routes)
      any = any || r.rate_limit.has_value();
    if (!any)
      continue;
    if (previous_snapshot != nullptr && previous != nullptr &&
        previous_snapshot->findListener(l.name) == &l) {
      if (auto it = previous->rate_limits.find(l.name); it != previous->rate_limits.end()) {
        rate_limits[l.name] = it->second;
        continue;
      }
    }
    auto& v = rate_limits[l.name];
    for (const auto& r : l.routes)
      v.push_back(r.rate_limit ? std::make_shared<SharedTokenBucket>(
                                     r.rate_limit->requests_per_second, r.rate_limit->burst, now)
                               : nullptr);
  }
}

} // namespace trellis::proxy
