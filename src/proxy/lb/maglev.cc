#include "proxy/lb/maglev.h"

#include <algorithm>

#include "proxy/lb/hash.h"

namespace trellis::proxy {
namespace {

constexpr uint64_t kDefaultTableSize = 65537;
// Seeds giving the two independent hashes the paper calls h1 (offset) and h2 (skip).
constexpr uint64_t kOffsetSeed = 0x6d61676c65763031ull;
constexpr uint64_t kSkipSeed = 0x6d61676c65763032ull;
constexpr uint32_t kEmpty = UINT32_MAX;

} // namespace

bool isPrime(uint64_t n) {
  if (n < 2)
    return false;
  if (n % 2 == 0)
    return n == 2;
  for (uint64_t d = 3; d * d <= n; d += 2) {
    if (n % d == 0)
      return false;
  }
  return true;
}

MaglevLoadBalancer::MaglevLoadBalancer(const LbConfig& config, const EndpointSet& endpoints,
                                       RandomGenerator& random)
    : LoadBalancerBase(config, endpoints, random) {
  // A non-prime size would leave permutations that do not cover the table; configuration
  // rejects it, and here (pushed configuration) the next prime is used instead.
  uint64_t m = config.maglev_table_size < 3 ? kDefaultTableSize : config.maglev_table_size;
  while (!isPrime(m))
    ++m;
  table_size_ = m;
  offset_.reserve(endpoints.size());
  skip_.reserve(endpoints.size());
  for (size_t i = 0; i < endpoints.size(); ++i) {
    const std::string& key = endpoints.key(i);
    offset_.push_back(hash64(key, kOffsetSeed) % m);
    skip_.push_back(hash64(key, kSkipSeed) % (m - 1) + 1);
  }
}

void MaglevLoadBalancer::onUsableChanged() {
  table_.clear();
  std::vector<uint32_t> members;
  uint64_t max_weight = 0;
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    if (usable(i)) {
      members.push_back(static_cast<uint32_t>(i));
      max_weight = std::max<uint64_t>(max_weight, endpoints_.weight(i));
    }
  }
  if (members.empty())
    return;
  const uint64_t m = table_size_;
  table_.assign(m, kEmpty);
  std::vector<uint64_t> next(members.size(), 0);  // position in each member's permutation
  std::vector<uint64_t> taken(members.size(), 0); // slots each member holds
  uint64_t filled = 0;
  // Weighted turns: in round r a member may take a slot while taken < r * weight / max_weight,
  // so the heaviest takes one per round and the others in proportion.
  for (uint64_t round = 1; filled < m; ++round) {
    for (size_t k = 0; k < members.size() && filled < m; ++k) {
      const uint32_t ep = members[k];
      if (round * endpoints_.weight(ep) < (taken[k] + 1) * max_weight)
        continue;
      uint64_t slot;
      do {
        slot = (offset_[ep] + next[k] * skip_[ep]) % m;
        ++next[k];
      } while (table_[slot] != kEmpty);
      table_[slot] = ep;
      ++taken[k];
      ++filled;
    }
  }
}

std::optional<size_t> MaglevLoadBalancer::pick(const LbContext& ctx) {
  refresh();
  if (table_.empty())
    return std::nullopt;
  const uint64_t h = ctx.hash ? *ctx.hash : random_.random();
  const size_t slot = h % table_size_;
  if (!honourExclude(ctx))
    return table_[slot];
  // Retry: the following slots belong to other endpoints in weighted proportion.
  for (size_t k = 0; k < table_.size(); ++k) {
    const uint32_t ep = table_[(slot + k) % table_.size()];
    if (!isExcluded(ctx, ep))
      return ep;
  }
  return table_[slot];
}

} // namespace trellis::proxy
