#pragma once

#include "proxy/lb/lb_base.h"

namespace trellis::proxy {

// Power of (choice_count) choices: draws that many candidates at random, weighted by endpoint
// weight, and keeps the one with the fewest active requests per unit of weight (ties go to the
// first drawn). With no load this reduces to weighted random, so weights are honoured; under
// load, busy endpoints lose to idle ones without any global scan.
class LeastRequestLoadBalancer : public LoadBalancerBase {
public:
  LeastRequestLoadBalancer(const LbConfig& config, const EndpointSet& endpoints,
                           RandomGenerator& random)
      : LoadBalancerBase(config, endpoints, random) {}

  // LoadBalancer
  std::optional<size_t> pick(const LbContext& ctx) override;

private:
  // LoadBalancerBase
  void onUsableChanged() override;

  WeightedSampler sampler_;
};

} // namespace trellis::proxy
