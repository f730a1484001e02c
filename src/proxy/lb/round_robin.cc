#include "proxy/lb/round_robin.h"

#include <algorithm>

namespace trellis::proxy {

RoundRobinLoadBalancer::RoundRobinLoadBalancer(const LbConfig& config, const EndpointSet& endpoints,
                                               RandomGenerator& random)
    : LoadBalancerBase(config, endpoints, random), current_(endpoints.size(), 0) {}

void RoundRobinLoadBalancer::onUsableChanged() {
  std::fill(current_.begin(), current_.end(), 0);
}

std::optional<size_t> RoundRobinLoadBalancer::pick(const LbContext& ctx) {
  refresh();
  if (usable_count_ == 0)
    return std::nullopt;
  const bool exclude = honourExclude(ctx);
  int64_t total = 0;
  size_t best = endpoints_.size();
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    if (!usable(i) || (exclude && isExcluded(ctx, i)))
      continue;
    const int64_t w = endpoints_.weight(i);
    current_[i] += w;
    total += w;
    if (best == endpoints_.size() || current_[i] > current_[best])
      best = i;
  }
  current_[best] -= total;
  return best;
}

} // namespace trellis::proxy
