#include "proxy/lb/ring_hash.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "proxy/lb/hash.h"

namespace trellis::proxy {
namespace {

constexpr uint64_t kNodesPerWeightUnit = 128;

} // namespace

RingHashLoadBalancer::RingHashLoadBalancer(const LbConfig& config, const EndpointSet& endpoints,
                                           RandomGenerator& random)
    : LoadBalancerBase(config, endpoints, random) {
  const size_t n = endpoints.size();
  if (n == 0)
    return;
  // Weights only matter relative to each other: {100, 300} is {1, 3}.
  uint64_t unit = 0;
  for (size_t i = 0; i < n; ++i)
    unit = std::gcd(unit, uint64_t{endpoints.weight(i)});
  uint64_t total_units = 0;
  for (size_t i = 0; i < n; ++i)
    total_units += endpoints.weight(i) / unit;
  // Nodes per weight unit. A fixed count (not "ring size / endpoint count") keeps every other
  // endpoint's nodes where they were when one endpoint comes or goes, so only that endpoint's
  // keys move; small clusters get more per unit to reach min_ring_size, and the maximum size
  // caps it (the lightest endpoint still gets one node).
  double per_unit = static_cast<double>(kNodesPerWeightUnit);
  if (total_units * kNodesPerWeightUnit < config.min_ring_size)
    per_unit = std::ceil(static_cast<double>(config.min_ring_size) / total_units);
  const uint64_t max_ring = std::max<uint64_t>(config.max_ring_size, 1);
  if (static_cast<double>(total_units) * per_unit > static_cast<double>(max_ring))
    per_unit = static_cast<double>(max_ring) / total_units;
  ring_.reserve(static_cast<size_t>(total_units * per_unit) + n);
  for (size_t i = 0; i < n; ++i) {
    const double units = static_cast<double>(endpoints.weight(i) / unit);
    const auto count = std::max<uint64_t>(1, static_cast<uint64_t>(std::llround(units * per_unit)));
    const std::string& key = endpoints.key(i);
    for (uint64_t v = 0; v < count; ++v)
      ring_.push_back({hash64(key, v), static_cast<uint32_t>(i)});
  }
  std::sort(ring_.begin(), ring_.end(), [](const Entry& a, const Entry& b) {
    return a.hash != b.hash ? a.hash < b.hash : a.endpoint < b.endpoint;
  });
}

void RingHashLoadBalancer::onUsableChanged() {
  use_full_ring_ = usable_count_ == endpoints_.size();
  usable_ring_.clear();
  if (use_full_ring_)
    return;
  for (const Entry& e : ring_) {
    if (usable(e.endpoint))
      usable_ring_.push_back(e);
  }
}

std::optional<size_t> RingHashLoadBalancer::pick(const LbContext& ctx) {
  refresh();
  const std::vector<Entry>& ring = use_full_ring_ ? ring_ : usable_ring_;
  if (usable_count_ == 0 || ring.empty())
    return std::nullopt;
  const uint64_t h = ctx.hash ? *ctx.hash : random_.random();
  auto it = std::lower_bound(ring.begin(), ring.end(), h,
                             [](const Entry& e, uint64_t v) { return e.hash < v; });
  const size_t pos = it == ring.end() ? 0 : static_cast<size_t>(it - ring.begin());
  if (!honourExclude(ctx))
    return ring[pos].endpoint;
  // Retry: walk on to the next node of an endpoint not tried yet.
  for (size_t k = 0; k < ring.size(); ++k) {
    const uint32_t ep = ring[(pos + k) % ring.size()].endpoint;
    if (!isExcluded(ctx, ep))
      return ep;
  }
  return ring[pos].endpoint;
}

} // namespace trellis::proxy
