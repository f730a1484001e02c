#pragma once

#include <vector>

#include "proxy/lb/lb_base.h"

namespace trellis::proxy {

// Smooth weighted round robin (nginx's algorithm): on every pick each usable endpoint's
// current weight grows by its weight, the largest wins and drops by the total. Weights
// {5,1,1} give a a b a c a a, spreading the heavy endpoint's turns instead of bunching them.
// O(endpoints) per pick. The current weights restart from zero when availability changes.
class RoundRobinLoadBalancer : public LoadBalancerBase {
public:
  RoundRobinLoadBalancer(const LbConfig& config, const EndpointSet& endpoints,
                         RandomGenerator& random);

  // LoadBalancer
  std::optional<size_t> pick(const LbContext& ctx) override;

private:
  // LoadBalancerBase
  void onUsableChanged() override;

  std::vector<int64_t> current_;
};

} // namespace trellis::proxy
