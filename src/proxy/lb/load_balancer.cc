#include "proxy/lb/load_balancer.h"

#include <algorithm>

#include "proxy/lb/lb_base.h"
#include "proxy/lb/least_request.h"
#include "proxy/lb/maglev.h"
#include "proxy/lb/random_lb.h"
#include "proxy/lb/ring_hash.h"
#include "proxy/lb/round_robin.h"

namespace trellis::proxy {

const char* lbPolicyName(LbPolicy p) {
  switch (p) {
  case LbPolicy::kRoundRobin:
    return "round_robin";
  case LbPolicy::kLeastRequest:
    return "least_request";
  case LbPolicy::kRandom:
    return "random";
  case LbPolicy::kRingHash:
    return "ring_hash";
  case LbPolicy::kMaglev:
    return "maglev";
  }
  return "unknown";
}

std::optional<LbPolicy> parseLbPolicy(std::string_view name) {
  for (LbPolicy p : {LbPolicy::kRoundRobin, LbPolicy::kLeastRequest, LbPolicy::kRandom,
                     LbPolicy::kRingHash, LbPolicy::kMaglev}) {
    if (name == lbPolicyName(p))
      return p;
  }
  return std::nullopt;
}

std::unique_ptr<LoadBalancer>
createLoadBalancer(const LbConfig& config, const EndpointSet& endpoints, RandomGenerator& random) {
  switch (config.policy) {
  case LbPolicy::kRoundRobin:
    return std::make_unique<RoundRobinLoadBalancer>(config, endpoints, random);
  case LbPolicy::kLeastRequest:
    return std::make_unique<LeastRequestLoadBalancer>(config, endpoints, random);
  case LbPolicy::kRandom:
    return std::make_unique<RandomLoadBalancer>(config, endpoints, random);
  case LbPolicy::kRingHash:
    return std::make_unique<RingHashLoadBalancer>(config, endpoints, random);
  case LbPolicy::kMaglev:
    return std::make_unique<MaglevLoadBalancer>(config, endpoints, random);
  }
  return std::make_unique<RoundRobinLoadBalancer>(config, endpoints, random);
}

size_t WeightedSampler::pick(uint64_t r) const {
  if (equal_)
    return index_[scaleRandom(r, index_.size())];
  const uint64_t target = scaleRandom(r, total_);
  // First cumulative weight strictly greater than target: endpoint k covers
  // [cumulative[k-1], cumulative[k]).
  auto it = std::upper_bound(cumulative_.begin(), cumulative_.end(), target);
  return index_[static_cast<size_t>(it - cumulative_.begin())];
}

size_t WeightedSampler::pickExcluding(uint64_t r, const LbContext& ctx,
                                      const EndpointSet& eps) const {
  uint64_t total = 0;
  for (size_t i : index_) {
    if (!isExcluded(ctx, i))
      total += eps.weight(i);
  }
  uint64_t target = scaleRandom(r, total);
  size_t last = index_.front();
  for (size_t i : index_) {
    if (isExcluded(ctx, i))
      continue;
    last = i;
    if (target < eps.weight(i))
      return i;
    target -= eps.weight(i);
  }
  return last;
}

} // namespace trellis::proxy
