#pragma once

// Shared machinery of the load balancer implementations; not part of the public interface.

#include <vector>

#include "proxy/lb/load_balancer.h"

namespace trellis::proxy {

// Whether endpoint i is named in ctx.exclude (a handful of entries at most).
inline bool isExcluded(const LbContext& ctx, size_t i) {
  for (size_t e : ctx.exclude) {
    if (e == i)
      return true;
  }
  return false;
}

// Tracks availability and panic for one EndpointSet and tells the subclass when it changes.
class LoadBalancerBase : public LoadBalancer {
public:
  bool panicking() const override { return panic_; }

protected:
  LoadBalancerBase(const LbConfig& config, const EndpointSet& endpoints, RandomGenerator& random)
      : config_(config), endpoints_(endpoints), random_(random) {}

  // Brings panic_, usable_count_ and the subclass's derived state up to date with the set.
  // Cheap when nothing changed; call first in every pick().
  void refresh() {
    if (built_ && built_generation_ == endpoints_.generation())
      return;
    built_ = true;
    built_generation_ = endpoints_.generation();
    const size_t n = endpoints_.size();
    const size_t avail = endpoints_.availableCount();
    panic_ = n > 0 && avail * 100 < static_cast<uint64_t>(config_.panic_threshold) * n;
    usable_count_ = panic_ ? n : avail;
    onUsableChanged();
  }

  // Whether endpoint i may receive traffic now: available, or anything while in panic.
  bool usable(size_t i) const { return panic_ || endpoints_.available(i); }

  // True when ctx.exclude leaves at least one usable endpoint, so the exclusion is honoured.
  bool honourExclude(const LbContext& ctx) const {
    if (ctx.exclude.empty())
      return false;
    size_t excluded_usable = 0;
    for (size_t k = 0; k < ctx.exclude.size(); ++k) {
      const size_t e = ctx.exclude[k];
      if (e >= endpoints_.size() || !usable(e))
        continue;
      bool dup = false;
      for (size_t j = 0; j < k && !dup; ++j)
        dup = ctx.exclude[j] == e;
      if (!dup)
        ++excluded_usable;
    }
    return excluded_usable < usable_count_;
  }

  // Called by refresh() when the usable set may have changed.
  virtual void onUsableChanged() {}

  const LbConfig config_;
  const EndpointSet& endpoints_;
  RandomGenerator& random_;
  bool panic_ = false;
  size_t usable_count_ = 0;

private:
  bool built_ = false;
  uint64_t built_generation_ = 0;
};

// Weighted random choice among the usable endpoints: O(1) for equal weights, O(log n)
// otherwise. Rebuilt (allocating) only when the usable set changes.
class WeightedSampler {
public:
  // Rebuilds from the endpoints for which usable(i) holds.
  template <typename Usable> void rebuild(const EndpointSet& eps, Usable usable) {
    index_.clear();
    cumulative_.clear();
    equal_ = true;
    total_ = 0;
    for (size_t i = 0; i < eps.size(); ++i) {
      if (!usable(i))
        continue;
      if (!index_.empty() && eps.weight(i) != eps.weight(index_.front()))
        equal_ = false;
      index_.push_back(i);
      total_ += eps.weight(i);
      cumulative_.push_back(total_);
    }
  }

  bool empty() const { return index_.empty(); }

  // Returns a usable endpoint with probability proportional to its weight. Not empty().
  size_t pick(uint64_t r) const;

  // As pick(), but never returns an endpoint in `exclude` (linear; for retries only). At
  // least one usable endpoint must be outside `exclude`.
  size_t pickExcluding(uint64_t r, const LbContext& ctx, const EndpointSet& eps) const;

private:
  std::vector<size_t> index_;
  std::vector<uint64_t> cumulative_;
  uint64_t total_ = 0;
  bool equal_ = true;
};

} // namespace trellis::proxy
