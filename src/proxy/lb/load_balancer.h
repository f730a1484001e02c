#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "proxy/lb/endpoint_set.h"
#include "proxy/lb/random.h"

namespace trellis::proxy {

enum class LbPolicy { kRoundRobin, kLeastRequest, kRandom, kRingHash, kMaglev };

// "round_robin", "least_request", "random", "ring_hash", "maglev".
const char* lbPolicyName(LbPolicy p);
std::optional<LbPolicy> parseLbPolicy(std::string_view name);

// How a cluster balances load; plain data, part of the cluster's configuration.
struct LbConfig {
  LbPolicy policy = LbPolicy::kRoundRobin;
  // Percent (0..100). When fewer than this percent of the endpoints are available, the cluster
  // is in panic and every endpoint is used regardless of state (better some errors than
  // overloading the few survivors). 0 disables panic: with none available, pick() fails.
  uint32_t panic_threshold = 50;
  // least_request: how many random candidates are compared (2 = power of two choices).
  uint32_t choice_count = 2;
  // ring_hash: the ring has at least min_ring_size and at most max_ring_size entries.
  uint64_t min_ring_size = 1024;
  uint64_t max_ring_size = 8 * 1024 * 1024;
  // maglev: lookup table size; must be prime and larger than the endpoint count.
  uint64_t maglev_table_size = 65537;

  bool operator==(const LbConfig&) const = default;
};

// What a pick may depend on besides the endpoints.
struct LbContext {
  // ring_hash/maglev: the hash of the request's key (hash64 of the header value, cookie value
  // or source IP). Without one (the header is absent) a random point is used.
  std::optional<uint64_t> hash;
  // Endpoints tried by earlier attempts of this request. Avoided when any other usable
  // endpoint exists; if all usable endpoints are excluded, the exclusion is ignored.
  std::span<const size_t> exclude;
};

// Picks an endpoint of one cluster on one worker. Reads the EndpointSet it was built with on
// every pick (states, active requests), so callers update that set and never the balancer.
// Not thread-safe; no locks; pick() does not allocate, except that the first pick after an
// availability change rebuilds derived tables.
class LoadBalancer {
public:
  virtual ~LoadBalancer() = default;

  // Returns the index (into the EndpointSet) of the endpoint to use, or nullopt when no
  // endpoint is usable (all unavailable and the cluster not in panic, or the set is empty).
  virtual std::optional<size_t> pick(const LbContext& ctx) = 0;
  // Whether the last pick() was made in panic (too few endpoints available, so all were used).
  virtual bool panicking() const { return false; }
};

// Builds the balancer for `config.policy`. `endpoints` and `random` must outlive it.
std::unique_ptr<LoadBalancer>
createLoadBalancer(const LbConfig& config, const EndpointSet& endpoints, RandomGenerator& random);

} // namespace trellis::proxy
