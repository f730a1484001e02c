// Unit tests of the proxy's fault-tolerance arithmetic: outlier ejection and the max-percent
// rule, retry backoff bounds and budget accounting, the token bucket, health-check
// thresholds, the shared cluster state and the health checker's schedule, all on a
// simulated clock.
#include <algorithm>
#include <deque>
#include <map>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "base/dispatcher.h"
#include "base/time.h"
#include "proxy/resilience/cluster_state.h"
#include "proxy/resilience/health_checker.h"
#include "proxy/resilience/health_tracker.h"
#include "proxy/resilience/outlier.h"
#include "proxy/resilience/retry.h"
#include "proxy/resilience/shared_state.h"
#include "proxy/resilience/token_bucket.h"

namespace trellis::proxy {
namespace {

using namespace std::chrono_literals;

MonotonicTime at(Duration d) {
  return MonotonicTime{} + d;
}

OutlierDetection outlierConfig() {
  OutlierDetection c;
  c.consecutive_5xx = 5;
  c.consecutive_gateway_failure = 3;
  c.interval = 1s;
  c.base_ejection_time = 10s;
  c.max_ejection_time = 25s;
  c.max_ejection_percent = 50;
  return c;
}

// ---- outlier detection --------------------------------------------------------------------

TEST(Outlier, ConsecutiveGatewayFailuresEjectAtOnce) {
  OutlierDetector d(outlierConfig(), 4);
  EXPECT_FALSE(d.onOutcome(0, Outcome::kLocalFailure, at(0s)));
  EXPECT_FALSE(d.onOutcome(0, Outcome::kGatewayError, at(0s)));
  auto r = d.onOutcome(0, Outcome::kLocalFailure, at(0s));
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, EjectReason::kConsecutiveGatewayFailure);
  EXPECT_TRUE(d.ejected(0));
  EXPECT_EQ(d.ejectedCount(), 1u);
  EXPECT_EQ(d.ejectedUntil(0), at(10s));
}

TEST(Outlier, SuccessResetsTheRun) {
  OutlierDetector d(outlierConfig(), 4);
  d.onOutcome(1, Outcome::kGatewayError, at(0s));
  d.onOutcome(1, Outcome::kGatewayError, at(0s));
  d.onOutcome(1, Outcome::kSuccess, at(0s));
  EXPECT_FALSE(d.onOutcome(1, Outcome::kGatewayError, at(0s)));
  EXPECT_FALSE(d.onOutcome(1, Outcome::kGatewayError, at(0s)));
  EXPECT_TRUE(d.onOutcome(1, Outcome::kGatewayError, at(0s)));
}

TEST(Outlier, Plain5xxCountsOnlyTowardsConsecutive5xx) {
  OutlierDetector d(outlierConfig(), 4);
  for (int i = 0; i < 4; ++i)
    EXPECT_FALSE(d.onOutcome(2, Outcome::k5xx, at(0s)));
  auto r = d.onOutcome(2, Outcome::k5xx, at(0s));
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, EjectReason::kConsecutive5xx);
  // A 500 between gateway errors breaks the gateway run but not the 5xx run.
  OutlierDetector e(outlierConfig(), 4);
  e.onOutcome(0, Outcome::kGatewayError, at(0s));
  e.onOutcome(0, Outcome::kGatewayError, at(0s));
  EXPECT_FALSE(e.onOutcome(0, Outcome::k5xx, at(0s)));
  EXPECT_FALSE(e.onOutcome(0, Outcome::kGatewayError, at(0s))); // gateway run: 1
  EXPECT_TRUE(e.onOutcome(0, Outcome::kGatewayError, at(0s)));  // 5xx run reached 5
}

TEST(Outlier, EjectionTimeGrowsWithEachEjectionAndIsCapped) {
  OutlierDetector d(outlierConfig(), 2);
  auto ejectAt = [&](Duration t) {
    for (int i = 0; i < 3; ++i)
      d.onOutcome(0, Outcome::kLocalFailure, at(t));
    EXPECT_TRUE(d.ejected(0));
  };
  ejectAt(0s);
  EXPECT_EQ(d.ejectedUntil(0), at(10s)); // base x 1
  EXPECT_EQ(d.tick(at(10s)), std::vector<size_t>{0});
  ejectAt(10s);
  EXPECT_EQ(d.ejectedUntil(0), at(30s)); // base x 2
  d.tick(at(30s));
  ejectAt(30s);
  EXPECT_EQ(d.ejectedUntil(0), at(55s)); // base x 3 = 30 s, capped at 25 s
  EXPECT_EQ(d.ejectionCount(0), 3u);
}

TEST(Outlier, TickUnejectsOnlyWhenDueAndForgivesOneEjectionPerCleanInterval) {
  OutlierDetector d(outlierConfig(), 2);
  for (int i = 0; i < 3; ++i)
    d.onOutcome(0, Outcome::kLocalFailure, at(0s));
  EXPECT_TRUE(d.tick(at(9s)).empty());
  EXPECT_TRUE(d.ejected(0));
  EXPECT_EQ(d.tick(at(10s)), std::vector<size_t>{0});
  EXPECT_FALSE(d.ejected(0));
  EXPECT_EQ(d.ejectionCount(0), 1u); // not forgiven in the tick that brought it back
  d.tick(at(11s));
  EXPECT_EQ(d.ejectionCount(0), 0u);
}

TEST(Outlier, MaxEjectionPercentIsRespectedButOneMayAlwaysGo) {
  // 3 endpoints at 50 %: floor(1.5) = 1 at a time.
  OutlierDetector d(outlierConfig(), 3);
  EXPECT_EQ(d.maxEjected(), 1u);
  for (int i = 0; i < 3; ++i)
    d.onOutcome(0, Outcome::kLocalFailure, at(0s));
  for (int i = 0; i < 3; ++i)
    d.onOutcome(1, Outcome::kLocalFailure, at(0s));
  EXPECT_TRUE(d.ejected(0));
  EXPECT_FALSE(d.ejected(1));
  EXPECT_EQ(d.overflows(), 1u);
  // 1 endpoint at 10 %: floor(0.1) = 0, but one may always be ejected.
  auto c = outlierConfig();
  c.max_ejection_percent = 10;
  OutlierDetector one(c, 1);
  EXPECT_EQ(one.maxEjected(), 1u);
  for (int i = 0; i < 3; ++i)
    one.onOutcome(0, Outcome::kLocalFailure, at(0s));
  EXPECT_TRUE(one.ejected(0));
  // 0 %: never.
  c.max_ejection_percent = 0;
  OutlierDetector none(c, 4);
  for (int i = 0; i < 10; ++i)
    none.onOutcome(0, Outcome::kLocalFailure, at(0s));
  EXPECT_FALSE(none.ejected(0));
  // 10 endpoints at 50 %: 5.
  OutlierDetector ten(outlierConfig(), 10);
  for (size_t e = 0; e < 10; ++e)
    for (int i = 0; i < 3; ++i)
      ten.onOutcome(e, Outcome::kLocalFailure, at(0s));
  EXPECT_EQ(ten.ejectedCount(), 5u);
  EXPECT_EQ(ten.overflows(), 5u);
}

TEST(Outlier, FailuresOfAnEjectedEndpointDoNotExtendIt) {
  OutlierDetector d(outlierConfig(), 2);
  for (int i = 0; i < 3; ++i)
    d.onOutcome(0, Outcome::kLocalFailure, at(0s));
  for (int i = 0; i < 10; ++i)
    EXPECT_FALSE(d.onOutcome(0, Outcome::kLocalFailure, at(1s)));
  EXPECT_EQ(d.ejectedUntil(0), at(10s));
  EXPECT_EQ(d.ejectionCount(0), 1u);
}

// ---- retries ------------------------------------------------------------------------------

TEST(Retry, BackoffIsFullJitterWithinTheExponentialCeiling) {
  RetryPolicy p;
  p.backoff_base = 25ms;
  p.backoff_max = 250ms;
  const uint64_t kMax = ~uint64_t{0};
  EXPECT_EQ(retryBackoff(p, 1, 0), 0ns);
  EXPECT_EQ(retryBackoff(p, 1, kMax), 25ms);
  EXPECT_EQ(retryBackoff(p, 2, kMax), 50ms);
  EXPECT_EQ(retryBackoff(p, 3, kMax), 100ms);
  EXPECT_EQ(retryBackoff(p, 4, kMax), 200ms);
  EXPECT_EQ(retryBackoff(p, 5, kMax), 250ms);  // capped
  EXPECT_EQ(retryBackoff(p, 60, kMax), 250ms); // no overflow for large counts
  // Uniform: the middle of the random range gives about half the ceiling.
  auto mid = retryBackoff(p, 3, kMax / 2);
  EXPECT_GE(mid, 49ms);
  EXPECT_LE(mid, 51ms);
}

TEST(Retry, BudgetAllowsMinimumConcurrencyThenAPercentOfActiveRequests) {
  RetryPolicy p;
  p.budget_percent = 20;
  p.budget_min_concurrency = 3;
  EXPECT_TRUE(retryBudgetAllows(p, 1, 0));
  EXPECT_TRUE(retryBudgetAllows(p, 1, 2));
  EXPECT_FALSE(retryBudgetAllows(p, 1, 3));
  // 100 active: up to 20 retries.
  EXPECT_TRUE(retryBudgetAllows(p, 100, 19));
  EXPECT_FALSE(retryBudgetAllows(p, 100, 20));
  // 50 active: 10.
  EXPECT_TRUE(retryBudgetAllows(p, 50, 9));
  EXPECT_FALSE(retryBudgetAllows(p, 50, 10));
  // Retries waiting out a backoff count like those trying, for the floor too.
  EXPECT_TRUE(retryBudgetAllows(p, 1, 1, 1));
  EXPECT_FALSE(retryBudgetAllows(p, 1, 1, 2));
  EXPECT_FALSE(retryBudgetAllows(p, 100, 2, 50));
  EXPECT_TRUE(retryBudgetAllows(p, 100, 10, 9));
  EXPECT_FALSE(retryBudgetAllows(p, 100, 10, 10));
  p.budget_percent = 0;
  p.budget_min_concurrency = 0;
  EXPECT_FALSE(retryBudgetAllows(p, 1000, 0));
}

TEST(Retry, OnConditions) {
  RetryPolicy p;
  p.on = RetryOn{};
  p.on.connect_failure = true;
  p.on.reset = false;
  p.on.gateway_error = false;
  p.on.status_5xx = false;
  p.on.refused_stream = false;
  EXPECT_TRUE(retryOnCovers(p, TryFailure::kConnectFailure, 0));
  EXPECT_FALSE(retryOnCovers(p, TryFailure::kReset, 0));
  EXPECT_FALSE(retryOnCovers(p, TryFailure::kStatus, 503));
  p.on.gateway_error = true;
  EXPECT_TRUE(retryOnCovers(p, TryFailure::kReset, 0));
  EXPECT_TRUE(retryOnCovers(p, TryFailure::kTimeout, 0));
  EXPECT_TRUE(retryOnCovers(p, TryFailure::kStatus, 503));
  EXPECT_FALSE(retryOnCovers(p, TryFailure::kStatus, 500));
  p.on.status_5xx = true;
  EXPECT_TRUE(retryOnCovers(p, TryFailure::kStatus, 500));
  EXPECT_FALSE(retryOnCovers(p, TryFailure::kStatus, 429));
  p.on.retriable_status_codes = true;
  p.retriable_status_codes = {429};
  EXPECT_TRUE(retryOnCovers(p, TryFailure::kStatus, 429));
  EXPECT_FALSE(retryOnCovers(p, TryFailure::kStatus, 404));
}

TEST(Retry, NonIdempotentMethodsOnlyOnConnectFailureUnlessAllowed) {
  RetryPolicy p;
  EXPECT_TRUE(methodAllowsRetry(p, "GET", TryFailure::kReset));
  EXPECT_TRUE(methodAllowsRetry(p, "PUT", TryFailure::kStatus));
  EXPECT_FALSE(methodAllowsRetry(p, "POST", TryFailure::kReset));
  EXPECT_FALSE(methodAllowsRetry(p, "PATCH", TryFailure::kStatus));
  EXPECT_TRUE(methodAllowsRetry(p, "POST", TryFailure::kConnectFailure));
  p.retry_non_idempotent = true;
  EXPECT_TRUE(methodAllowsRetry(p, "POST", TryFailure::kReset));
}

TEST(Retry, MeshDefaultRetriesOnceOnConnectFailureAndOnResetOfIdempotentRequests) {
  const RetryPolicy p = meshDefaultRetries();
  EXPECT_EQ(p.attempts, 1u);
  EXPECT_TRUE(retryOnCovers(p, TryFailure::kConnectFailure, 0));
  EXPECT_TRUE(retryOnCovers(p, TryFailure::kReset, 0));
  EXPECT_FALSE(retryOnCovers(p, TryFailure::kTimeout, 0));
  EXPECT_FALSE(retryOnCovers(p, TryFailure::kStatus, 503));
  EXPECT_FALSE(p.retry_non_idempotent);
  EXPECT_TRUE(methodAllowsRetry(p, "GET", TryFailure::kReset));
  EXPECT_FALSE(methodAllowsRetry(p, "POST", TryFailure::kReset));
  EXPECT_TRUE(methodAllowsRetry(p, "POST", TryFailure::kConnectFailure));
}

// ---- token bucket -------------------------------------------------------------------------

TEST(TokenBucket, StartsFullAndRefillsAtTheRate) {
  TokenBucket b(10, 5, at(0s));
  for (int i = 0; i < 5; ++i)
    EXPECT_TRUE(b.tryTake(at(0s))) << i;
  EXPECT_FALSE(b.tryTake(at(0s)));
  EXPECT_EQ(b.timeToNext(at(0s)), 100ms);
  EXPECT_FALSE(b.tryTake(at(99ms)));
  EXPECT_TRUE(b.tryTake(at(100ms)));
  EXPECT_FALSE(b.tryTake(at(100ms)));
  // A long quiet period refills to the burst and no further.
  EXPECT_EQ(b.available(at(1h)), 5u);
}

TEST(TokenBucket, FractionsAccumulateWithoutDrift) {
  // (The burst is large enough that the bucket never fills up and discards refill.)
  TokenBucket b(3, 5, at(0s));
  for (int i = 0; i < 5; ++i)
    EXPECT_TRUE(b.tryTake(at(0s)));
  int taken = 0;
  // 3 per second for 10 s in 1 ms steps: exactly 30 more.
  for (int ms = 1; ms <= 10000; ++ms)
    taken += b.tryTake(at(std::chrono::milliseconds(ms))) ? 1 : 0;
  EXPECT_EQ(taken, 30);
}

TEST(TokenBucket, StaleTimeAddsNothing) {
  TokenBucket b(1, 1, at(10s));
  EXPECT_TRUE(b.tryTake(at(10s)));
  EXPECT_FALSE(b.tryTake(at(5s)));
  EXPECT_TRUE(b.tryTake(at(11s)));
}

// ---- health thresholds --------------------------------------------------------------------

TEST(HealthTracker, Thresholds) {
  HealthCheck c;
  c.healthy_threshold = 2;
  c.unhealthy_threshold = 3;
  HealthTracker t(c);
  EXPECT_TRUE(t.healthy());
  EXPECT_FALSE(t.onResult(false));
  EXPECT_FALSE(t.onResult(false));
  EXPECT_FALSE(t.onResult(true)); // breaks the run
  EXPECT_FALSE(t.onResult(false));
  EXPECT_FALSE(t.onResult(false));
  EXPECT_TRUE(t.onResult(false));
  EXPECT_FALSE(t.healthy());
  EXPECT_FALSE(t.onResult(true));
  EXPECT_FALSE(t.onResult(false));
  EXPECT_FALSE(t.onResult(true));
  EXPECT_TRUE(t.onResult(true));
  EXPECT_TRUE(t.healthy());
  c.start_healthy = false;
  HealthTracker cold(c);
  EXPECT_FALSE(cold.healthy());
}

// ---- shared cluster state -----------------------------------------------------------------

Cluster makeCluster(size_t n) {
  Cluster c;
  c.name = "api";
  for (size_t i = 0; i < n; ++i)
    c.endpoints.push_back(
        Endpoint{*net::parseSocketAddress("127.0.0.1:" + std::to_string(9000 + i)), 1});
  return c;
}

TEST(ClusterState, WithoutDetectionEverythingStaysHealthy) {
  Cluster c = makeCluster(3);
  ClusterState s(c);
  auto g = s.generation();
  s.reportOutcome(0, Outcome::kLocalFailure, at(0s));
  EXPECT_EQ(s.state(0), EndpointState::kHealthy);
  EXPECT_EQ(s.generation(), g);
}

TEST(ClusterState, EjectionAndHealthAreVisibleThroughTheGeneration) {
  Cluster c = makeCluster(3);
  c.outlier_detection = outlierConfig();
  c.health_check = HealthCheck{};
  c.health_check->unhealthy_threshold = 1;
  c.health_check->healthy_threshold = 1;
  ClusterState s(c);
  auto g0 = s.generation();
  for (int i = 0; i < 3; ++i)
    s.reportOutcome(1, Outcome::kLocalFailure, at(0s));
  EXPECT_EQ(s.state(1), EndpointState::kEjected);
  EXPECT_NE(s.generation(), g0);
  EXPECT_EQ(s.ejections(EjectReason::kConsecutiveGatewayFailure), 1u);
  EXPECT_EQ(s.activeEjections(), 1u);
  auto g1 = s.generation();
  s.reportHealthCheck(2, false);
  EXPECT_EQ(s.state(2), EndpointState::kUnhealthy);
  EXPECT_NE(s.generation(), g1);
  EXPECT_EQ(s.stateCounts(), (std::array<size_t, 3>{1, 1, 1}));
  s.tick(at(10s));
  EXPECT_EQ(s.state(1), EndpointState::kHealthy);
  s.reportHealthCheck(2, true);
  EXPECT_EQ(s.state(2), EndpointState::kHealthy);
  EXPECT_EQ(s.healthChecks(true), 1u);
  EXPECT_EQ(s.healthChecks(false), 1u);
}

TEST(ClusterState, CircuitBreakerLimitsAreIndependent) {
  Cluster c = makeCluster(1);
  c.circuit_breakers.max_requests = 2;
  c.circuit_breakers.max_retries = 1;
  ClusterState s(c);
  EXPECT_TRUE(s.limit(LimitKind::kRequests).tryAcquire());
  EXPECT_TRUE(s.limit(LimitKind::kRequests).tryAcquire());
  EXPECT_FALSE(s.limit(LimitKind::kRequests).tryAcquire());
  EXPECT_EQ(s.limit(LimitKind::kRequests).remaining(), 0u);
  EXPECT_TRUE(s.limit(LimitKind::kRetries).tryAcquire());
  EXPECT_FALSE(s.limit(LimitKind::kRetries).tryAcquire());
  s.limit(LimitKind::kRequests).release();
  EXPECT_EQ(s.limit(LimitKind::kRequests).remaining(), 1u);
  EXPECT_EQ(s.limit(LimitKind::kConnections).remaining(), 1024u);
}

TEST(ClusterState, AReloadKeepsTheStateOfEndpointsThatStay) {
  Cluster a = makeCluster(3);
  a.outlier_detection = outlierConfig();
  ClusterState old(a);
  for (int i = 0; i < 3; ++i)
    old.reportOutcome(2, Outcome::kLocalFailure, at(0s));
  ASSERT_EQ(old.state(2), EndpointState::kEjected);
  // The new list drops endpoint 0 and keeps 2 (now at index 1).
  Cluster b = a;
  b.endpoints.erase(b.endpoints.begin());
  ClusterState fresh(b);
  fresh.inheritFrom(old);
  EXPECT_EQ(fresh.state(0), EndpointState::kHealthy);
  EXPECT_EQ(fresh.state(1), EndpointState::kEjected);
  EXPECT_EQ(fresh.activeEjections(), 1u);
  EXPECT_EQ(fresh.ejections(EjectReason::kConsecutiveGatewayFailure), 1u);
  fresh.tick(at(10s));
  EXPECT_EQ(fresh.state(1), EndpointState::kHealthy);
}

// A state nothing happened to hands over nothing (its successor starts as it did); one that
// took a failure hands its counts on, through successors that took none themselves.
TEST(ClusterState, FailureCountsSurviveAChainOfReloads) {
  Cluster a = makeCluster(3);
  a.outlier_detection = outlierConfig();
  ClusterState untouched(a);
  ClusterState first(a);
  first.inheritFrom(untouched);
  EXPECT_EQ(first.stateCounts(), (std::array<size_t, 3>{3, 0, 0}));
  first.reportOutcome(1, Outcome::kLocalFailure, at(0s));
  first.reportOutcome(1, Outcome::kLocalFailure, at(0s));
  ASSERT_EQ(first.state(1), EndpointState::kHealthy); // 2 of 3
  ClusterState second(a);
  second.inheritFrom(first);
  ClusterState third(a);
  third.inheritFrom(second);
  third.reportOutcome(1, Outcome::kLocalFailure, at(1s));
  EXPECT_EQ(third.state(1), EndpointState::kEjected);
  // Other settings: even an untouched state is walked (its endpoints' state may differ).
  Cluster checked = a;
  checked.health_check = HealthCheck{};
  checked.health_check->start_healthy = false;
  ClusterState unchecked_old(a);
  ClusterState now_checked(checked);
  now_checked.inheritFrom(unchecked_old);
  EXPECT_EQ(now_checked.stateCounts(), (std::array<size_t, 3>{0, 3, 0}));
}

// Endpoint state follows the address whatever happens to the list: a few endpoints added or
// removed in order (the walk in step), or the list reordered (the index).
TEST(ClusterState, InheritedStateFollowsTheAddressInAnyOrder) {
  std::mt19937 rng(11);
  for (int round = 0; round < 200; ++round) {
    Cluster a = makeCluster(2 + rng() % 30);
    a.outlier_detection = outlierConfig();
    a.outlier_detection->max_ejection_percent = 100;
    ClusterState old(a);
    std::set<uint16_t> ejected;
    for (size_t i = 0; i < a.endpoints.size(); ++i) {
      if (rng() % 3 != 0)
        continue;
      for (int k = 0; k < 3; ++k)
        old.reportOutcome(i, Outcome::kLocalFailure, at(0s));
      ASSERT_EQ(old.state(i), EndpointState::kEjected);
      ejected.insert(a.endpoints[i].address.port);
    }
    Cluster b = a;
    for (int k = 0, n = static_cast<int>(rng() % 4); k < n && !b.endpoints.empty(); ++k)
      b.endpoints.erase(b.endpoints.begin() + rng() % b.endpoints.size());
    for (int k = 0, n = static_cast<int>(rng() % 4); k < n; ++k) {
      const uint16_t port = static_cast<uint16_t>(9100 + rng() % 50);
      if (std::none_of(b.endpoints.begin(), b.endpoints.end(),
                       [&](const Endpoint& e) { return e.address.port == port; }))
        b.endpoints.insert(
            b.endpoints.begin() + rng() % (b.endpoints.size() + 1),
            Endpoint{*net::parseSocketAddress("127.0.0.1:" + std::to_string(port)), 1});
    }
    if (round % 3 == 0)
      std::shuffle(b.endpoints.begin(), b.endpoints.end(), rng);
    ClusterState fresh(b);
    fresh.inheritFrom(old);
    for (size_t i = 0; i < b.endpoints.size(); ++i)
      EXPECT_EQ(fresh.state(i), ejected.count(b.endpoints[i].address.port) != 0
                                    ? EndpointState::kEjected
                                    : EndpointState::kHealthy)
          << "round " << round << " endpoint " << b.endpoints[i].address.toString();
    EXPECT_EQ(fresh.activeEjections(),
              static_cast<size_t>(
                  std::count_if(b.endpoints.begin(), b.endpoints.end(), [&](const Endpoint& e) {
                    return ejected.count(e.address.port) != 0;
                  })));
  }
}

// A list a mesh delta edited says where each endpoint was: state follows that, not a search
// by address. An endpoint removed and added back since (a new registration) starts afresh;
// a lineage from another list is ignored (the address walk then pairs it).
TEST(ClusterState, AnEditedListCarriesStateByItsLineage) {
  Cluster a = makeCluster(4);
  a.outlier_detection = outlierConfig();
  a.outlier_detection->max_ejection_percent = 100;
  a.lineage.ptr =
      std::make_shared<EndpointLineage>(EndpointLineage{nextEndpointLineageId(), 0, {}, {}, {}});
  ClusterState old(a);
  for (size_t ep : {1, 3})
    for (int k = 0; k < 3; ++k)
      old.reportOutcome(ep, Outcome::kLocalFailure, at(0s));
  ASSERT_EQ(old.activeEjections(), 2u);
  Cluster b = a;
  b.endpoints = {a.endpoints[0], Endpoint{*net::parseSocketAddress("127.0.0.1:9999"), 1},
                 a.endpoints[1], a.endpoints[3]};
  constexpr uint32_t kNew = EndpointLineage::kNew;
  auto edited = [&](uint64_t base) {
    Cluster c = b;
    c.lineage.ptr = std::make_shared<EndpointLineage>(
        EndpointLineage{nextEndpointLineageId(), base, {0, kNew, kNew, 3}, {}, {}});
    return c;
  };
  const Cluster by_lineage = edited(a.lineage.ptr->id);
  ClusterState fresh(by_lineage);
  fresh.inheritFrom(old);
  EXPECT_EQ(fresh.state(0), EndpointState::kHealthy);
  EXPECT_EQ(fresh.state(1), EndpointState::kHealthy);
  EXPECT_EQ(fresh.state(2), EndpointState::kHealthy); // added back: new
  EXPECT_EQ(fresh.state(3), EndpointState::kEjected);
  EXPECT_EQ(fresh.activeEjections(), 1u);

  const Cluster other = edited(a.lineage.ptr->id + 1000);
  ClusterState by_address(other);
  by_address.inheritFrom(old);
  EXPECT_EQ(by_address.state(2), EndpointState::kEjected);
  EXPECT_EQ(by_address.state(3), EndpointState::kEjected);

  // The same list (a new definition of the same endpoints) pairs each with itself.
  Cluster same = a;
  same.connect_timeout = 2s;
  ClusterState kept(same);
  kept.inheritFrom(old);
  EXPECT_EQ(kept.state(1), EndpointState::kEjected);
  EXPECT_EQ(kept.state(3), EndpointState::kEjected);
  EXPECT_EQ(kept.activeEjections(), 2u);
}

TEST(SharedState, RateLimitedRoutesGetABucketEach) {
  Snapshot snap;
  snap.clusters.push_back(makeCluster(1));
  Listener l;
  l.name = "web";
  Route plain, limited;
  limited.rate_limit = RateLimit{5, 2, 429};
  l.routes = {plain, limited};
  snap.listeners.push_back(l);
  auto s = SharedState::build(snap, nullptr, at(0s));
  EXPECT_EQ(s->rateLimit("web", 0), nullptr);
  ASSERT_NE(s->rateLimit("web", 1), nullptr);
  EXPECT_EQ(s->rateLimit("other", 1), nullptr);
  EXPECT_TRUE(s->rateLimit("web", 1)->tryTake(at(0s)));
  EXPECT_TRUE(s->rateLimit("web", 1)->tryTake(at(0s)));
  EXPECT_FALSE(s->rateLimit("web", 1)->tryTake(at(0s)));
}

// An update that leaves a listener as it is (the same object, as mesh deltas share unchanged
// listeners) keeps its routes' buckets: updates every few milliseconds must not refill them.
// A listener that changed starts with full buckets.
TEST(SharedState, UnchangedListenerKeepsItsBuckets) {
  Listener l;
  l.name = "web";
  Route limited;
  limited.rate_limit = RateLimit{1, 2, 429};
  l.routes = {limited};
  Snapshot s1;
  s1.clusters.push_back(makeCluster(1));
  s1.listeners.push_back(l);
  auto st1 = SharedState::build(s1, nullptr, at(0s));
  EXPECT_TRUE(st1->rateLimit("web", 0)->tryTake(at(0s)));
  EXPECT_TRUE(st1->rateLimit("web", 0)->tryTake(at(0s)));
  EXPECT_FALSE(st1->rateLimit("web", 0)->tryTake(at(0s)));

  Snapshot s2; // another cluster changed; the listener is shared
  s2.clusters.push_back(makeCluster(2));
  s2.listeners.push_back(s1.listeners.shared(0));
  SharedState st2;
  st2.addRateLimits(s2, &s1, st1.get(), at(100ms));
  EXPECT_EQ(st2.rateLimit("web", 0), st1->rateLimit("web", 0));
  EXPECT_FALSE(st2.rateLimit("web", 0)->tryTake(at(100ms)));

  Snapshot s3; // the listener itself changed (an equal copy is a new object)
  s3.clusters.push_back(makeCluster(2));
  s3.listeners.push_back(l);
  SharedState st3;
  st3.addRateLimits(s3, &s2, &st2, at(200ms));
  ASSERT_NE(st3.rateLimit("web", 0), nullptr);
  EXPECT_NE(st3.rateLimit("web", 0), st2.rateLimit("web", 0));
  EXPECT_TRUE(st3.rateLimit("web", 0)->tryTake(at(200ms)));
  EXPECT_TRUE(st3.rateLimit("web", 0)->tryTake(at(200ms)));
}

// ---- health checker schedule --------------------------------------------------------------

// Answers each probe as told per address, synchronously through the dispatcher.
class FakeProber : public HealthProber {
public:
  explicit FakeProber(Dispatcher& d) : d_(d) {}
  void probe(const HealthCheck&, const std::string&, const net::SocketAddress& address,
             std::function<void(bool)> done) override {
    const std::string key = address.toString();
    ++probes[key];
    bool ok = !failing.count(key);
    d_.post([done = std::move(done), ok] { done(ok); });
  }
  std::map<std::string, int> probes;
  std::set<std::string> failing;

private:
  Dispatcher& d_;
};

class HealthCheckerTest : public ::testing::Test {
protected:
  void advance(Duration d) {
    // In steps, so timers re-armed by callbacks fire in order.
    for (Duration done{0}; done < d; done += 10ms) {
      time_.advance(10ms);
      d_.runReady();
    }
  }
  SimulatedTimeSource time_;
  Dispatcher d_{"main", time_};
  RandomGeneratorImpl random_{42};
  FakeProber prober_{d_};
};

TEST_F(HealthCheckerTest, ChecksEveryEndpointEveryIntervalAndAppliesThresholds) {
  Cluster c = makeCluster(2);
  c.health_check = HealthCheck{};
  c.health_check->interval = 1s;
  c.health_check->unhealthy_threshold = 2;
  c.health_check->healthy_threshold = 2;
  auto state = std::make_shared<ClusterState>(c);
  HealthChecker hc(d_, prober_, random_);
  hc.setClusters({state});
  const std::string bad = c.endpoints[1].address.toString();
  prober_.failing.insert(bad);
  advance(150ms); // first checks within interval/10
  EXPECT_EQ(prober_.probes[bad], 1);
  EXPECT_EQ(state->state(1), EndpointState::kHealthy); // one failure is not enough
  advance(1s);
  EXPECT_EQ(prober_.probes[bad], 2);
  EXPECT_EQ(state->state(1), EndpointState::kUnhealthy);
  EXPECT_EQ(state->state(0), EndpointState::kHealthy);
  prober_.failing.clear();
  advance(2s);
  EXPECT_EQ(state->state(1), EndpointState::kHealthy);
  EXPECT_EQ(prober_.probes[c.endpoints[0].address.toString()], 4);
}

TEST_F(HealthCheckerTest, OutlierTicksBringEjectedEndpointsBack) {
  Cluster c = makeCluster(2);
  c.outlier_detection = outlierConfig();
  auto state = std::make_shared<ClusterState>(c);
  HealthChecker hc(d_, prober_, random_);
  hc.setClusters({state});
  for (int i = 0; i < 3; ++i)
    state->reportOutcome(0, Outcome::kLocalFailure, d_.now());
  ASSERT_EQ(state->state(0), EndpointState::kEjected);
  advance(9s);
  EXPECT_EQ(state->state(0), EndpointState::kEjected);
  advance(1100ms);
  EXPECT_EQ(state->state(0), EndpointState::kHealthy);
}

TEST_F(HealthCheckerTest, ReplacedClustersAreNoLongerChecked) {
  Cluster c = makeCluster(1);
  c.health_check = HealthCheck{};
  c.health_check->interval = 1s;
  auto state = std::make_shared<ClusterState>(c);
  HealthChecker hc(d_, prober_, random_);
  hc.setClusters({state});
  advance(150ms);
  hc.setClusters({});
  const int before = prober_.probes[c.endpoints[0].address.toString()];
  advance(5s);
  EXPECT_EQ(prober_.probes[c.endpoints[0].address.toString()], before);
}

TEST_F(HealthCheckerTest, FrequentUpdatesKeepSchedulesSoEjectionsEndAndChecksRun) {
  // A mesh may replace a cluster's state (same endpoints, new ClusterState inheriting the old
  // one) far more often than the outlier interval or the check interval.
  Cluster c = makeCluster(2);
  c.outlier_detection = outlierConfig();
  c.health_check = HealthCheck{};
  c.health_check->interval = 1s;
  auto state = std::make_shared<ClusterState>(c);
  HealthChecker hc(d_, prober_, random_);
  hc.setClusters({state});
  for (int i = 0; i < 3; ++i)
    state->reportOutcome(0, Outcome::kLocalFailure, d_.now());
  ASSERT_EQ(state->state(0), EndpointState::kEjected);
  const std::string ep1 = c.endpoints[1].address.toString();
  for (int i = 0; i < 24; ++i) { // 12 s of an update every 500 ms
    auto next = std::make_shared<ClusterState>(c);
    next->inheritFrom(*state);
    state = next;
    hc.setClusters({state});
    advance(500ms);
  }
  EXPECT_EQ(state->state(0), EndpointState::kHealthy); // base ejection 10 s, ticks went on
  EXPECT_GE(prober_.probes[ep1], 11);                  // one check per second throughout
  EXPECT_LE(prober_.probes[ep1], 13); // and not restarted (spread anew) by every update
}

// Clusters whose order changes between updates (a service added in front, two swapped):
// each outlier ticker follows its cluster by name, whatever the order, and keeps its
// schedule; no ticker is lost or duplicated.
TEST_F(HealthCheckerTest, TickersFollowTheirClustersWhenTheOrderChanges) {
  std::deque<Cluster> configs; // a ClusterState refers to its configuration: keep them
  auto named = [&](const std::string& name) {
    Cluster& c = configs.emplace_back(makeCluster(1));
    c.name = name;
    c.outlier_detection = outlierConfig();
    return std::make_shared<ClusterState>(c);
  };
  auto a = named("a"), b = named("b"), c = named("c"), x = named("x");
  HealthChecker hc(d_, prober_, random_);
  hc.setClusters({a, b, c});
  for (int i = 0; i < 3; ++i)
    c->reportOutcome(0, Outcome::kLocalFailure, d_.now());
  ASSERT_EQ(c->state(0), EndpointState::kEjected);
  // b first (found through the index), then a (at the cursor), then c after a taken entry.
  hc.setClusters({b, a, c});
  advance(3s);
  hc.setClusters({x, c, b, a});
  advance(3s);
  hc.setClusters({c, a});
  EXPECT_EQ(c->state(0), EndpointState::kEjected);
  advance(4100ms); // 10 s after the ejection: c's ticker kept its schedule through it all
  EXPECT_EQ(c->state(0), EndpointState::kHealthy);
}

// A mesh delta: clusters replaced in place. Their ticks move to the new states on the old
// schedule (an ejection made in the old state ends on time in the new one); what the in-place
// switch cannot take (health checks, a new outlier interval, a different length) is refused,
// unchanged, for setClusters().
TEST_F(HealthCheckerTest, ReplacedInPlaceClustersKeepTheirTicksAndTheRestIsRefused) {
  std::deque<Cluster> configs;
  auto make = [&](const std::string& name, Duration interval, bool checked) {
    Cluster& c = configs.emplace_back(makeCluster(1));
    c.name = name;
    c.outlier_detection = outlierConfig();
    c.outlier_detection->interval = interval;
    if (checked)
      c.health_check = HealthCheck{};
    return std::make_shared<ClusterState>(c);
  };
  auto a = make("a", 1s, false), b = make("b", 1s, false), c = make("c", 1s, true);
  HealthChecker hc(d_, prober_, random_);
  hc.setClusters({a, b, c});
  for (int i = 0; i < 3; ++i)
    a->reportOutcome(0, Outcome::kLocalFailure, d_.now());
  ASSERT_EQ(a->state(0), EndpointState::kEjected);
  advance(3s);
  auto a2 = make("a", 1s, false);
  a2->inheritFrom(*a);
  ASSERT_EQ(a2->state(0), EndpointState::kEjected);
  EXPECT_TRUE(hc.replaceClusters({0}, {a2, b, c}));
  // Refused: a cluster with checks, a new interval, a name that is not the slot's, a length.
  EXPECT_FALSE(hc.replaceClusters({2}, {a2, b, make("c", 1s, true)}));
  EXPECT_FALSE(hc.replaceClusters({1}, {a2, make("b", 2s, false), c}));
  EXPECT_FALSE(hc.replaceClusters({1}, {a2, make("z", 1s, false), c}));
  EXPECT_FALSE(hc.replaceClusters({0}, {a2, b}));
  advance(7100ms); // 10 s after the ejection, with ticks every second
  EXPECT_EQ(a2->state(0), EndpointState::kHealthy); // the tick moved to the new state
  EXPECT_EQ(a->state(0), EndpointState::kEjected);  // and no longer ticks the old one
}

} // namespace
} // namespace trellis::proxy
