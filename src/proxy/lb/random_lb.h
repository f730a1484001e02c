#pragma once

#include "proxy/lb/lb_base.h"

namespace trellis::proxy {

// Weighted random: each usable endpoint with probability weight / total usable weight.
class RandomLoadBalancer : public LoadBalancerBase {
public:
  RandomLoadBalancer(const LbConfig& config, const EndpointSet& endpoints, RandomGenerator& random)
      : LoadBalancerBase(config, endpoints, random) {}

  // LoadBalancer
  std::optional<size_t> pick(const LbContext& ctx) override;

private:
  // LoadBalancerBase
  void onUsableChanged() override;

  WeightedSampler sampler_;
};

} // namespace trellis::proxy
