#pragma once

#include <vector>

#include "proxy/lb/lb_base.h"

namespace trellis::proxy {

// Consistent hashing on a ring (Karger et al.): each endpoint owns virtual nodes at
// hash64(key, i), 128 per unit of weight (weights divided by their greatest common divisor),
// more per unit when that would leave the ring below min_ring_size, fewer when it would exceed
// max_ring_size; at least one per endpoint. A request goes to the first node at or after its
// hash. An unavailable endpoint's nodes are skipped, so only its own keys move; adding or
// removing one of N endpoints moves about 1/N of the keys (exactly that endpoint's share once
// the ring is past min_ring_size). Balance: an endpoint's share deviates from its weight by
// about 1/sqrt(its node count), ~9% at 128 nodes; raise min_ring_size for tighter balance.
class RingHashLoadBalancer : public LoadBalancerBase {
public:
  RingHashLoadBalancer(const LbConfig& config, const EndpointSet& endpoints,
                       RandomGenerator& random);

  // LoadBalancer
  std::optional<size_t> pick(const LbContext& ctx) override;

  // Entries on the full ring (all endpoints), for tests and the admin page.
  size_t ringSize() const { return ring_.size(); }

private:
  struct Entry {
    uint64_t hash;
    uint32_t endpoint;
  };

  // LoadBalancerBase
  void onUsableChanged() override;

  std::vector<Entry> ring_;        // every endpoint, sorted by hash
  std::vector<Entry> usable_ring_; // ring_ without unusable endpoints, when some are unusable
  bool use_full_ring_ = true;
};

} // namespace trellis::proxy
