#include <bit>
#include <cmath>
#include <map>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "proxy/lb/endpoint_set.h"
#include "proxy/lb/hash.h"
#include "proxy/lb/load_balancer.h"
#include "proxy/lb/maglev.h"
#include "proxy/lb/random.h"
#include "proxy/lb/ring_hash.h"

namespace trellis::proxy {
namespace {

EndpointSet makeSet(const std::vector<uint32_t>& weights) {
  std::vector<LbEndpoint> eps;
  for (size_t i = 0; i < weights.size(); ++i)
    eps.push_back({fmt::format("10.0.{}.{}:8080", i / 250, i % 250 + 1), weights[i]});
  return EndpointSet(std::move(eps));
}

LbConfig configFor(LbPolicy p, uint32_t panic = 0) {
  LbConfig c;
  c.policy = p;
  c.panic_threshold = panic;
  return c;
}

// Counts picks per endpoint; hash policies get a distinct key hash per pick.
std::vector<uint64_t> countPicks(LoadBalancer& lb, size_t n, int picks) {
  std::vector<uint64_t> counts(n, 0);
  for (int i = 0; i < picks; ++i) {
    LbContext ctx;
    ctx.hash = hash64(fmt::format("user-{}", i));
    auto ep = lb.pick(ctx);
    EXPECT_TRUE(ep.has_value());
    if (ep)
      ++counts[*ep];
  }
  return counts;
}

const LbPolicy kAllPolicies[] = {LbPolicy::kRoundRobin, LbPolicy::kLeastRequest, LbPolicy::kRandom,
                                 LbPolicy::kRingHash, LbPolicy::kMaglev};

// Relative tolerance of each policy's share versus its weight over 100k picks. Round robin is
// exact; random-based ones carry sampling noise (~1% relative); Maglev tables are balanced to
// within a slot. A default ring gives a weight-1 endpoint 128 nodes, whose arcs add up to its
// share only within ~9% (one standard deviation); RingHash.LargerRingBalancesTightly checks
// the tight case.
double toleranceFor(LbPolicy p) {
  switch (p) {
  case LbPolicy::kRoundRobin:
    return 0.001;
  case LbPolicy::kLeastRequest:
  case LbPolicy::kRandom:
  case LbPolicy::kMaglev:
    return 0.04;
  case LbPolicy::kRingHash:
    return 0.2;
  }
  return 0;
}

class PolicyTest : public ::testing::TestWithParam<LbPolicy> {};

TEST_P(PolicyTest, WeightsHonouredOver100kPicks) {
  const std::vector<uint32_t> weights = {1, 2, 3, 4};
  EndpointSet set = makeSet(weights);
  RandomGeneratorImpl random(42);
  auto lb = createLoadBalancer(configFor(GetParam()), set, random);
  const int picks = 100000;
  auto counts = countPicks(*lb, weights.size(), picks);
  for (size_t i = 0; i < weights.size(); ++i) {
    const double expected = picks * weights[i] / 10.0;
    EXPECT_NEAR(counts[i], expected, expected * toleranceFor(GetParam()))
        << lbPolicyName(GetParam()) << " endpoint " << i;
  }
}

TEST_P(PolicyTest, UnavailableEndpointsAreSkipped) {
  EndpointSet set = makeSet({1, 1, 1, 1});
  RandomGeneratorImpl random(7);
  auto lb = createLoadBalancer(configFor(GetParam()), set, random);
  countPicks(*lb, 4, 100); // state built before the change, so the change must be noticed
  set.setState(1, EndpointState::kUnhealthy);
  set.setState(3, EndpointState::kEjected);
  auto counts = countPicks(*lb, 4, 20000);
  EXPECT_EQ(counts[1], 0u);
  EXPECT_EQ(counts[3], 0u);
  EXPECT_NEAR(counts[0], 10000, 10000 * toleranceFor(GetParam()) + 500);
  EXPECT_NEAR(counts[2], 10000, 10000 * toleranceFor(GetParam()) + 500);
  // Back to healthy: used again.
  set.setState(3, EndpointState::kHealthy);
  counts = countPicks(*lb, 4, 20000);
  EXPECT_EQ(counts[1], 0u);
  EXPECT_GT(counts[3], 4000u);
}

TEST_P(PolicyTest, AllUnavailableGivesNone) {
  EndpointSet set = makeSet({1, 2, 3});
  RandomGeneratorImpl random(1);
  auto lb = createLoadBalancer(configFor(GetParam(), /*panic=*/0), set, random);
  set.setState(0, EndpointState::kUnhealthy);
  set.setState(1, EndpointState::kEjected);
  set.setState(2, EndpointState::kUnhealthy);
  EXPECT_EQ(lb->pick({}), std::nullopt);
  LbContext ctx;
  ctx.hash = 12345;
  EXPECT_EQ(lb->pick(ctx), std::nullopt);
  set.setState(2, EndpointState::kHealthy);
  EXPECT_EQ(lb->pick(ctx), std::optional<size_t>(2));
}

TEST_P(PolicyTest, EmptySetGivesNone) {
  EndpointSet set = makeSet({});
  RandomGeneratorImpl random(1);
  auto lb = createLoadBalancer(configFor(GetParam(), 50), set, random);
  EXPECT_EQ(lb->pick({}), std::nullopt);
}

TEST_P(PolicyTest, PanicUsesEveryEndpoint) {
  EndpointSet set = makeSet({1, 1, 1, 1});
  RandomGeneratorImpl random(3);
  auto lb = createLoadBalancer(configFor(GetParam(), /*panic=*/50), set, random);
  // 2 of 4 available = 50%: not below the threshold, unavailable ones stay unused.
  set.setState(0, EndpointState::kUnhealthy);
  set.setState(1, EndpointState::kEjected);
  auto counts = countPicks(*lb, 4, 8000);
  EXPECT_EQ(counts[0] + counts[1], 0u);
  // 1 of 4 available = 25% < 50%: panic, traffic spreads over all four.
  set.setState(2, EndpointState::kUnhealthy);
  counts = countPicks(*lb, 4, 8000);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_GT(counts[i], 1200u) << "endpoint " << i;
  // All unavailable in panic still gives an endpoint.
  set.setState(3, EndpointState::kUnhealthy);
  EXPECT_TRUE(lb->pick({}).has_value());
}

TEST_P(PolicyTest, ExcludeAvoidsPreviousAttempt) {
  EndpointSet set = makeSet({1, 1, 1});
  RandomGeneratorImpl random(9);
  auto lb = createLoadBalancer(configFor(GetParam()), set, random);
  for (int i = 0; i < 2000; ++i) {
    LbContext ctx;
    ctx.hash = hash64(fmt::format("k{}", i));
    auto first = lb->pick(ctx);
    ASSERT_TRUE(first);
    const size_t tried[] = {*first};
    ctx.exclude = tried;
    auto second = lb->pick(ctx);
    ASSERT_TRUE(second);
    EXPECT_NE(*second, *first);
    const size_t tried2[] = {*first, *second};
    ctx.exclude = tried2;
    auto third = lb->pick(ctx);
    ASSERT_TRUE(third);
    EXPECT_NE(*third, *first);
    EXPECT_NE(*third, *second);
  }
}

TEST_P(PolicyTest, ExcludeIgnoredWhenNothingElseIsUsable) {
  EndpointSet set = makeSet({1, 1, 1});
  RandomGeneratorImpl random(9);
  auto lb = createLoadBalancer(configFor(GetParam()), set, random);
  set.setState(0, EndpointState::kUnhealthy);
  set.setState(2, EndpointState::kUnhealthy);
  const size_t tried[] = {1, 0};
  LbContext ctx;
  ctx.hash = 99;
  ctx.exclude = tried;
  EXPECT_EQ(lb->pick(ctx), std::optional<size_t>(1));
}

INSTANTIATE_TEST_SUITE_P(AllPolicies, PolicyTest, ::testing::ValuesIn(kAllPolicies),
                         [](const auto& info) { return std::string(lbPolicyName(info.param)); });

TEST(RoundRobin, SmoothSequenceMatchesNginx) {
  EndpointSet set = makeSet({5, 1, 1});
  RandomGeneratorImpl random(0);
  auto lb = createLoadBalancer(configFor(LbPolicy::kRoundRobin), set, random);
  // nginx's documented interleaving for weights a=5, b=1, c=1: a a b a c a a, repeating.
  const std::vector<size_t> expected = {0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0};
  std::vector<size_t> got;
  for (size_t i = 0; i < expected.size(); ++i)
    got.push_back(*lb->pick({}));
  EXPECT_EQ(got, expected);
}

TEST(RoundRobin, EqualWeightsCycle) {
  EndpointSet set = makeSet({1, 1, 1});
  RandomGeneratorImpl random(0);
  auto lb = createLoadBalancer(configFor(LbPolicy::kRoundRobin), set, random);
  std::vector<size_t> got;
  for (int i = 0; i < 6; ++i)
    got.push_back(*lb->pick({}));
  EXPECT_EQ(got, (std::vector<size_t>{0, 1, 2, 0, 1, 2}));
}

TEST(LeastRequest, PrefersLessLoadedEndpoints) {
  EndpointSet set = makeSet({1, 1, 1});
  RandomGeneratorImpl random(5);
  auto lb = createLoadBalancer(configFor(LbPolicy::kLeastRequest), set, random);
  for (int i = 0; i < 10; ++i)
    set.onRequestStart(0);
  auto counts = countPicks(*lb, 3, 30000);
  // Endpoint 0 wins only when both draws land on it: (1/3)^2 = 11% instead of 33%.
  EXPECT_NEAR(counts[0] / 30000.0, 1.0 / 9, 0.015);
  EXPECT_EQ(set.activeRequests(0), 10u);
  for (int i = 0; i < 10; ++i)
    set.onRequestEnd(0);
  set.onRequestEnd(0); // unmatched end: ignored
  EXPECT_EQ(set.activeRequests(0), 0u);
  counts = countPicks(*lb, 3, 30000);
  EXPECT_NEAR(counts[0] / 30000.0, 1.0 / 3, 0.015);
}

TEST(LeastRequest, MoreChoicesAvoidLoadAlmostEntirely) {
  EndpointSet set = makeSet({1, 1, 1, 1});
  RandomGeneratorImpl random(5);
  LbConfig cfg = configFor(LbPolicy::kLeastRequest);
  cfg.choice_count = 6;
  auto lb = createLoadBalancer(cfg, set, random);
  set.onRequestStart(2);
  auto counts = countPicks(*lb, 4, 20000);
  // Picked only if all six draws are endpoint 2: (1/4)^6 = 0.02%.
  EXPECT_LT(counts[2], 20u);
}

TEST(LeastRequest, LoadIsComparedPerUnitOfWeight) {
  // Endpoint 1 has four times the capacity: 4 active on it is as busy as 1 on endpoint 0.
  EndpointSet set = makeSet({1, 4});
  RandomGeneratorImpl random(5);
  auto lb = createLoadBalancer(configFor(LbPolicy::kLeastRequest), set, random);
  set.onRequestStart(0);
  for (int i = 0; i < 3; ++i)
    set.onRequestStart(1);
  // 3/4 < 1/1: endpoint 1 is less loaded, so mixed draws go to it; only 0,0 draws pick 0.
  auto counts = countPicks(*lb, 2, 50000);
  EXPECT_NEAR(counts[0] / 50000.0, 0.2 * 0.2, 0.01);
}

TEST(LeastRequest, SimulatedSlowEndpointGetsLessTraffic) {
  // Endpoint 0 takes 10 ticks per request, the others 1: with requests arriving each tick,
  // a load-aware balancer must send it far less than a third.
  EndpointSet set = makeSet({1, 1, 1});
  RandomGeneratorImpl random(11);
  auto lb = createLoadBalancer(configFor(LbPolicy::kLeastRequest), set, random);
  std::multimap<int, size_t> finishing;
  std::vector<uint64_t> counts(3, 0);
  for (int tick = 0; tick < 30000; ++tick) {
    while (!finishing.empty() && finishing.begin()->first <= tick) {
      set.onRequestEnd(finishing.begin()->second);
      finishing.erase(finishing.begin());
    }
    for (int r = 0; r < 2; ++r) {
      size_t ep = *lb->pick({});
      ++counts[ep];
      set.onRequestStart(ep);
      finishing.emplace(tick + (ep == 0 ? 10 : 1), ep);
    }
  }
  const double share0 = counts[0] / 60000.0;
  EXPECT_LT(share0, 0.25);
  EXPECT_GT(share0, 0.01);
}

// Fraction of keys whose endpoint differs between two balancers (by endpoint key, since
// indices shift when the endpoint list changes).
double movedFraction(LoadBalancer& a, const EndpointSet& sa, LoadBalancer& b, const EndpointSet& sb,
                     int keys) {
  int moved = 0;
  for (int i = 0; i < keys; ++i) {
    LbContext ctx;
    ctx.hash = hash64(fmt::format("session-{}", i));
    if (sa.key(*a.pick(ctx)) != sb.key(*b.pick(ctx)))
      ++moved;
  }
  return static_cast<double>(moved) / keys;
}

class ConsistentHashTest : public ::testing::TestWithParam<LbPolicy> {};

TEST_P(ConsistentHashTest, SameKeySameEndpointAcrossInstances) {
  EndpointSet set = makeSet({1, 2, 1, 3, 1});
  RandomGeneratorImpl r1(1), r2(2);
  auto a = createLoadBalancer(configFor(GetParam()), set, r1);
  auto b = createLoadBalancer(configFor(GetParam()), set, r2);
  for (int i = 0; i < 5000; ++i) {
    LbContext ctx;
    ctx.hash = hash64(fmt::format("user-{}", i));
    auto first = a->pick(ctx);
    EXPECT_EQ(a->pick(ctx), first);
    EXPECT_EQ(b->pick(ctx), first);
  }
}

TEST_P(ConsistentHashTest, NoHashFallsBackToRandomSpread) {
  EndpointSet set = makeSet({1, 1, 1, 1});
  RandomGeneratorImpl random(4);
  auto lb = createLoadBalancer(configFor(GetParam()), set, random);
  std::vector<uint64_t> counts(4, 0);
  for (int i = 0; i < 40000; ++i)
    ++counts[*lb->pick({})];
  for (uint64_t c : counts)
    EXPECT_NEAR(c, 10000, 10000 * toleranceFor(GetParam()) + 300);
}

TEST_P(ConsistentHashTest, RemovingOneOfNMovesAboutOneNth) {
  const size_t n = 10;
  const int keys = 100000;
  EndpointSet all = makeSet(std::vector<uint32_t>(n, 1));
  RandomGeneratorImpl random(1);
  auto before = createLoadBalancer(configFor(GetParam()), all, random);

  // Removal as a new endpoint list without the last endpoint.
  std::vector<LbEndpoint> fewer_eps;
  for (size_t i = 0; i + 1 < n; ++i)
    fewer_eps.push_back({all.key(i), all.weight(i)});
  EndpointSet fewer(fewer_eps);
  auto after = createLoadBalancer(configFor(GetParam()), fewer, random);
  double moved = movedFraction(*before, all, *after, fewer, keys);
  EXPECT_GT(moved, 0.5 / n);
  EXPECT_LT(moved, 1.5 / n);

  // Removal by health: the same balancer, one endpoint marked unhealthy.
  EndpointSet live = makeSet(std::vector<uint32_t>(n, 1));
  auto lb = createLoadBalancer(configFor(GetParam()), live, random);
  std::vector<size_t> owner(keys);
  for (int i = 0; i < keys; ++i) {
    LbContext ctx;
    ctx.hash = hash64(fmt::format("session-{}", i));
    owner[i] = *lb->pick(ctx);
  }
  live.setState(4, EndpointState::kUnhealthy);
  int changed = 0, changed_elsewhere = 0;
  for (int i = 0; i < keys; ++i) {
    LbContext ctx;
    ctx.hash = hash64(fmt::format("session-{}", i));
    size_t now = *lb->pick(ctx);
    EXPECT_NE(now, 4u);
    if (now != owner[i]) {
      ++changed;
      if (owner[i] != 4)
        ++changed_elsewhere;
    }
  }
  EXPECT_GT(changed, keys * 0.5 / n);
  EXPECT_LT(changed, keys * 1.5 / n);
  // Keys that were not on the removed endpoint stay put (Maglev allows a little churn).
  EXPECT_LT(changed_elsewhere, keys * 0.02);
}

TEST_P(ConsistentHashTest, AddingOneToNMovesAboutOneNth) {
  const size_t n = 10;
  EndpointSet before_set = makeSet(std::vector<uint32_t>(n, 1));
  EndpointSet after_set = makeSet(std::vector<uint32_t>(n + 1, 1));
  RandomGeneratorImpl random(1);
  auto before = createLoadBalancer(configFor(GetParam()), before_set, random);
  auto after = createLoadBalancer(configFor(GetParam()), after_set, random);
  double moved = movedFraction(*before, before_set, *after, after_set, 100000);
  EXPECT_GT(moved, 0.5 / (n + 1));
  EXPECT_LT(moved, 1.5 / (n + 1));
}

INSTANTIATE_TEST_SUITE_P(HashPolicies, ConsistentHashTest,
                         ::testing::Values(LbPolicy::kRingHash, LbPolicy::kMaglev),
                         [](const auto& info) { return std::string(lbPolicyName(info.param)); });

TEST(RingHash, RingSizeBoundsAndProportions) {
  RandomGeneratorImpl random(1);
  LbConfig cfg = configFor(LbPolicy::kRingHash);
  // 4 weight units * 128 nodes = 512 < min_ring_size: more nodes per unit to reach 1024.
  EndpointSet small = makeSet({1, 3});
  EXPECT_EQ(RingHashLoadBalancer(cfg, small, random).ringSize(), 1024u);
  // Only weight ratios count.
  EndpointSet scaled = makeSet({100, 300});
  EXPECT_EQ(RingHashLoadBalancer(cfg, scaled, random).ringSize(), 1024u);
  // Past min_ring_size: a fixed 128 nodes per unit.
  EndpointSet twenty = makeSet(std::vector<uint32_t>(20, 1));
  EXPECT_EQ(RingHashLoadBalancer(cfg, twenty, random).ringSize(), 20u * 128);
  // Extreme weights are capped by max_ring_size; the light endpoint keeps one node.
  EndpointSet skewed = makeSet({1, 5000});
  EXPECT_EQ(RingHashLoadBalancer(cfg, skewed, random).ringSize(), 5001u * 128);
  cfg.max_ring_size = 2048;
  EXPECT_EQ(RingHashLoadBalancer(cfg, skewed, random).ringSize(), 2048u + 1);
}

TEST(RingHash, LargerRingBalancesTightly) {
  const std::vector<uint32_t> weights = {1, 2, 3, 4};
  EndpointSet set = makeSet(weights);
  RandomGeneratorImpl random(1);
  LbConfig cfg = configFor(LbPolicy::kRingHash);
  cfg.min_ring_size = 64 * 1024;
  auto lb = createLoadBalancer(cfg, set, random);
  auto counts = countPicks(*lb, 4, 100000);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_NEAR(counts[i], 10000.0 * weights[i], 10000.0 * weights[i] * 0.05);
}

TEST(Maglev, TableSizeIsPrime) {
  EXPECT_TRUE(isPrime(65537));
  EXPECT_TRUE(isPrime(2));
  EXPECT_FALSE(isPrime(1));
  EXPECT_FALSE(isPrime(65535));
  EXPECT_FALSE(isPrime(65537ull * 3));
  RandomGeneratorImpl random(1);
  EndpointSet set = makeSet({1, 1});
  LbConfig cfg = configFor(LbPolicy::kMaglev);
  cfg.maglev_table_size = 1000; // not prime: the next prime, 1009, is used
  MaglevLoadBalancer lb(cfg, set, random);
  EXPECT_EQ(lb.tableSize(), 1009u);
  LbContext ctx;
  ctx.hash = 1008; // the last slot is filled
  EXPECT_TRUE(lb.pick(ctx).has_value());
}

TEST(Maglev, SmallTableStillHonoursWeights) {
  RandomGeneratorImpl random(1);
  EndpointSet set = makeSet({1, 9});
  LbConfig cfg = configFor(LbPolicy::kMaglev);
  cfg.maglev_table_size = 101;
  MaglevLoadBalancer lb(cfg, set, random);
  int slots0 = 0;
  for (uint64_t slot = 0; slot < 101; ++slot) {
    LbContext ctx;
    ctx.hash = slot;
    slots0 += *lb.pick(ctx) == 0;
  }
  EXPECT_NEAR(slots0, 10, 1);
}

TEST(EndpointSet, GenerationChangesOnlyWithAvailability) {
  EndpointSet set = makeSet({1, 0, 1});
  EXPECT_EQ(set.weight(1), 1u); // zero weights become 1
  EXPECT_EQ(set.availableCount(), 3u);
  const uint64_t g0 = set.generation();
  set.setState(0, EndpointState::kHealthy);
  EXPECT_EQ(set.generation(), g0);
  set.setState(0, EndpointState::kUnhealthy);
  EXPECT_NE(set.generation(), g0);
  const uint64_t g1 = set.generation();
  set.setState(0, EndpointState::kEjected); // still unavailable
  EXPECT_EQ(set.generation(), g1);
  EXPECT_EQ(set.availableCount(), 2u);
  EXPECT_EQ(set.state(0), EndpointState::kEjected);
  EXPECT_STREQ(endpointStateName(set.state(0)), "ejected");
}

TEST(Hash, DeterministicAndAvalanching) {
  EXPECT_EQ(hash64("10.0.0.1:80"), hash64("10.0.0.1:80"));
  EXPECT_NE(hash64("10.0.0.1:80"), hash64("10.0.0.1:81"));
  EXPECT_NE(hash64("a"), hash64(std::string_view("a\0", 2)));
  EXPECT_NE(hash64("key", 1), hash64("key", 2));
  // Flipping any one input bit flips about half of the output bits.
  RandomGeneratorImpl random(3);
  double total_flipped = 0;
  int trials = 0;
  for (int len : {1, 7, 8, 13, 32, 100}) {
    for (int t = 0; t < 50; ++t) {
      std::string s(len, '\0');
      for (auto& c : s)
        c = static_cast<char>(random.random());
      const uint64_t h = hash64(s);
      const size_t bit = scaleRandom(random.random(), len * 8);
      s[bit / 8] ^= static_cast<char>(1 << (bit % 8));
      const int flipped = std::popcount(h ^ hash64(s));
      EXPECT_GT(flipped, 10);
      EXPECT_LT(flipped, 54);
      total_flipped += flipped;
      ++trials;
    }
  }
  EXPECT_NEAR(total_flipped / trials, 32.0, 1.5);
}

TEST(Random, SeededAndUniform) {
  RandomGeneratorImpl a(123), b(123), c(124);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    uint64_t va = a.random();
    EXPECT_EQ(va, b.random());
    differs |= va != c.random();
  }
  EXPECT_TRUE(differs);
  std::vector<int> buckets(10, 0);
  for (int i = 0; i < 100000; ++i)
    ++buckets[scaleRandom(a.random(), 10)];
  for (int n : buckets)
    EXPECT_NEAR(n, 10000, 400);
}

TEST(LbPolicyNames, RoundTrip) {
  for (LbPolicy p : kAllPolicies)
    EXPECT_EQ(parseLbPolicy(lbPolicyName(p)), p);
  EXPECT_EQ(parseLbPolicy("round-robin"), std::nullopt);
}

} // namespace
} // namespace trellis::proxy
