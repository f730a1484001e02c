#pragma once

#include <vector>

#include "proxy/lb/lb_base.h"

namespace trellis::proxy {

// True when n is prime (trial division; meant for table sizes, a few million at most).
bool isPrime(uint64_t n);

// Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of a prime size M
// where each usable endpoint fills slots in the order of its own permutation
// (offset + j * skip) mod M, taking turns in proportion to its weight. A pick is one table
// read: table[hash mod M]. The table is rebuilt from the usable endpoints when availability
// changes (O(M log M)); an endpoint's permutation depends only on its key, so adding or
// removing one of N endpoints moves about 1/N of the keys. Memory: 4 bytes per slot.
class MaglevLoadBalancer : public LoadBalancerBase {
public:
  MaglevLoadBalancer(const LbConfig& config, const EndpointSet& endpoints, RandomGenerator& random);

  // LoadBalancer
  std::optional<size_t> pick(const LbContext& ctx) override;

  // The table size in use: config.maglev_table_size, or the next prime if it was not prime.
  uint64_t tableSize() const { return table_size_; }

private:
  // LoadBalancerBase
  void onUsableChanged() override;

  uint64_t table_size_;
  std::vector<uint64_t> offset_; // per endpoint
  std::vector<uint64_t> skip_;   // per endpoint, in [1, M-1], hence coprime with prime M
  std::vector<uint32_t> table_;  // endpoint index per slot; empty when nothing is usable
};

} // namespace trellis::proxy
