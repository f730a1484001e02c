#include <gtest/gtest.h>

#include "manifest/helpers.h"
#include "manifest/manifest.h"

namespace trellis::manifest {
namespace {

using namespace std::chrono_literals;
using testing::expectRoundTrip;
using testing::loadError;
using testing::loadOne;

constexpr std::string_view kFull = R"(apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: orders, namespace: shop}
spec:
  targetRef: {kind: Service, name: orders}
  loadBalancer:
    policy: RingHash
    ringHash: {minRingSize: 2048, maxRingSize: 4096}
    hashOn: {header: X-User}
  panicThreshold: 30
  retries:
    attempts: 2
    perTryTimeout: 2s
    on: [connect-failure, retriable-status-codes]
    retriableStatusCodes: [503, 429]
    backoff: {base: 10ms, max: 1s}
    budgetPercent: 50
    budgetMinConcurrency: 5
    retryNonIdempotent: true
  timeout: 30s
  connectTimeout: 1s
  outlierDetection: {consecutive5xx: 3, consecutiveGatewayFailure: 2, interval: 5s,
                     baseEjectionTime: 10s, maxEjectionTime: 60s, maxEjectionPercent: 50}
  circuitBreakers: {maxConnections: 100, maxPendingRequests: 50, maxRequests: 200, maxRetries: 0}
  healthCheck: {path: /healthz, host: orders.local, interval: 2s, timeout: 500ms,
                healthyThreshold: 1, unhealthyThreshold: 5}
  rateLimit: {requestsPerSecond: 100, burst: 20, status: 503}
  fault:
    delay: {percent: 12.5, duration: 100ms}
    abort: {percent: 1, status: 500}
)";

TEST(TrafficPolicy, MapsEveryKnobOntoTheProxyStructs) {
  const Resource r = loadOne(kFull);
  EXPECT_EQ(r.id().toString(), "TrafficPolicy shop/orders");
  const auto& p = std::get<TrafficPolicy>(r.spec);
  EXPECT_EQ(p.target_service, "orders");

  ASSERT_TRUE(p.load_balancer);
  EXPECT_EQ(p.load_balancer->config.policy, proxy::LbPolicy::kRingHash);
  EXPECT_EQ(p.load_balancer->config.min_ring_size, 2048u);
  EXPECT_EQ(p.load_balancer->config.max_ring_size, 4096u);
  EXPECT_EQ(p.load_balancer->hash_on, (proxy::HashPolicy{proxy::HashSource::kHeader, "x-user"}));
  EXPECT_EQ(p.panic_threshold, 30u);

  ASSERT_TRUE(p.retries);
  proxy::RetryPolicy want_retries;
  want_retries.attempts = 2;
  want_retries.per_try_timeout = 2s;
  want_retries.on = proxy::RetryOn{true, false, false, false, false, true};
  want_retries.retriable_status_codes = {503, 429};
  want_retries.backoff_base = 10ms;
  want_retries.backoff_max = 1s;
  want_retries.budget_percent = 50;
  want_retries.budget_min_concurrency = 5;
  want_retries.retry_non_idempotent = true;
  EXPECT_EQ(*p.retries, want_retries);

  EXPECT_EQ(p.timeout, Duration(30s));
  EXPECT_EQ(p.connect_timeout, Duration(1s));
  EXPECT_EQ(*p.outlier_detection, (proxy::OutlierDetection{3, 2, 5s, 10s, 60s, 50}));
  EXPECT_EQ(*p.circuit_breakers, (proxy::CircuitBreakers{100, 50, 200, 0}));
  EXPECT_EQ(*p.health_check, (proxy::HealthCheck{proxy::HealthCheckKind::kHttp, "/healthz",
                                                 "orders.local", 2s, 500ms, 1, 5}));
  EXPECT_EQ(*p.rate_limit, (proxy::RateLimit{100, 20, 503}));
  ASSERT_TRUE(p.fault && p.fault->delay && p.fault->abort);
  EXPECT_DOUBLE_EQ(p.fault->delay->percent, 12.5);
  EXPECT_EQ(p.fault->delay->duration, Duration(100ms));
  EXPECT_EQ(*p.fault->abort, (proxy::FaultAbort{1, 500}));
  expectRoundTrip(r);
}

TEST(TrafficPolicy, AbsentKnobsStayAbsentAndPresentOnesTakeProxyDefaults) {
  const Resource r = loadOne(R"(apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: p}
spec:
  targetRef: {group: "", kind: Service, name: api}
  retries: {attempts: 1}
  outlierDetection: {}
  circuitBreakers: {}
  healthCheck: {tcp: true}
  rateLimit: {requestsPerSecond: 50}
  fault: {abort: {status: 503}}
  loadBalancer: {}
)");
  const auto& p = std::get<TrafficPolicy>(r.spec);
  EXPECT_FALSE(p.timeout);
  EXPECT_FALSE(p.connect_timeout);
  EXPECT_FALSE(p.panic_threshold);
  ASSERT_TRUE(p.load_balancer);
  EXPECT_EQ(p.load_balancer->config, proxy::LbConfig{}); // RoundRobin
  EXPECT_FALSE(p.load_balancer->hash_on);
  proxy::RetryPolicy want;
  want.attempts = 1;
  EXPECT_EQ(*p.retries, want); // every other retry default is the proxy's
  EXPECT_EQ(*p.outlier_detection, proxy::OutlierDetection{});
  EXPECT_EQ(*p.circuit_breakers, proxy::CircuitBreakers{});
  EXPECT_EQ(p.health_check->kind, proxy::HealthCheckKind::kTcp);
  EXPECT_EQ(p.health_check->interval, Duration(5s));
  EXPECT_EQ(*p.rate_limit, (proxy::RateLimit{50, 50, 429})); // burst defaults to the rate
  EXPECT_FALSE(p.fault->delay);
  EXPECT_EQ(p.fault->abort->percent, 100);
  expectRoundTrip(r);

  // Only the target: a policy that changes nothing yet (the server's defaults apply).
  const Resource bare = loadOne(R"(apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: p}
spec: {targetRef: {kind: Service, name: api}}
)");
  TrafficPolicy want_bare;
  want_bare.target_service = "api";
  EXPECT_EQ(std::get<TrafficPolicy>(bare.spec), want_bare);
  expectRoundTrip(bare);
}

TEST(TrafficPolicy, LoadBalancerPolicies) {
  auto lb = [](std::string_view body) {
    const Resource r = loadOne(fmt::format(R"(apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: p}}
spec: {{targetRef: {{kind: Service, name: api}}, loadBalancer: {}}}
)",
                                           body));
    expectRoundTrip(r);
    const auto& p = std::get<TrafficPolicy>(r.spec);
    return p.load_balancer.value_or(LoadBalancer{});
  };
  EXPECT_EQ(lb("{policy: LeastRequest, leastRequest: {choiceCount: 3}}").config.choice_count, 3u);
  EXPECT_EQ(lb("{policy: Random}").config.policy, proxy::LbPolicy::kRandom);
  const LoadBalancer m = lb("{policy: Maglev, maglev: {tableSize: 131071}, hashOn: {cookie: sid}}");
  EXPECT_EQ(m.config.maglev_table_size, 131071u);
  EXPECT_EQ(m.hash_on, (proxy::HashPolicy{proxy::HashSource::kCookie, "sid"}));
  EXPECT_EQ(lb("{policy: RingHash, hashOn: {sourceIp: true}}").hash_on->source,
            proxy::HashSource::kSourceIp);
}

std::string policyWith(std::string_view spec_tail) {
  return std::string(R"(apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: p}
spec:
  targetRef: {kind: Service, name: api}
)") + std::string(spec_tail);
}

TEST(TrafficPolicy, RejectsInvalidKnobs) {
  struct Case {
    const char* yaml;
    const char* expected;
  };
  const Case cases[] = {
      {"  loadBalancer: {policy: round_robin}\n",
       "spec.loadBalancer.policy: unknown policy \"round_robin\" (did you mean \"RoundRobin\"?)"},
      {"  loadBalancer: {policy: Fastest}\n",
       "spec.loadBalancer.policy: unknown policy \"Fastest\" (expected RoundRobin, LeastRequest, "
       "Random, RingHash or Maglev)"},
      {"  loadBalancer: {policy: RingHash}\n",
       "spec.loadBalancer.hashOn: required with policy RingHash"},
      {"  loadBalancer: {hashOn: {sourceIp: true}}\n",
       "spec.loadBalancer.hashOn: only RingHash and Maglev hash requests (policy is RoundRobin)"},
      {"  loadBalancer: {policy: Random, leastRequest: {choiceCount: 2}}\n",
       "spec.loadBalancer.leastRequest: options for policy LeastRequest but policy is Random"},
      {"  loadBalancer: {policy: Maglev, maglev: {tableSize: 65536}, hashOn: {sourceIp: true}}\n",
       "spec.loadBalancer.maglev.tableSize: 65536 is not prime"},
      {"  loadBalancer: {policy: Maglev, hashOn: {header: a, cookie: b}}\n",
       "spec.loadBalancer.hashOn: set exactly one of header, cookie or sourceIp"},
      {"  loadBalancer: {policy: Maglev, hashOn: {sourceIp: false}}\n",
       "spec.loadBalancer.hashOn.sourceIp: must be true"},
      {"  loadBalancer: {policy: RingHash, ringHash: {minRingSize: 10, maxRingSize: 5}, hashOn: "
       "{sourceIp: true}}\n",
       "spec.loadBalancer.ringHash: maxRingSize 5 is below minRingSize 10"},
      {"  panicThreshold: 101\n", "spec.panicThreshold: must be 0..100, got 101"},
      {"  retries: {perTryTimeout: 1s}\n", "spec.retries.attempts: required field is missing"},
      {"  retries: {attempts: 11}\n", "spec.retries.attempts: must be 0..10, got 11"},
      {"  retries: {attempts: 1, per_try_timeout: 1s}\n",
       "spec.retries.per_try_timeout: unknown field (did you mean \"perTryTimeout\"?)"},
      {"  retries: {attempts: 1, on: [timeout]}\n",
       "spec.retries.on[0]: unknown retry condition \"timeout\""},
      {"  retries: {attempts: 1, on: [reset, reset]}\n",
       "spec.retries.on[1]: \"reset\" is listed twice"},
      {"  retries: {attempts: 1, on: [retriable-status-codes]}\n",
       "spec.retries.on: retriable-status-codes needs a non-empty retriableStatusCodes"},
      {"  retries: {attempts: 1, on: [reset], retriableStatusCodes: [503]}\n",
       "spec.retries.retriableStatusCodes: listed codes are never retried"},
      {"  retries: {attempts: 1, retriableStatusCodes: [600]}\n",
       "spec.retries.retriableStatusCodes[0]: must be 100..599, got 600"},
      {"  retries: {attempts: 1, backoff: {base: 1s, max: 10ms}}\n",
       "spec.retries.backoff.max: 10ms is below base 1s"},
      {"  retries: {attempts: 1, perTryTimeout: 10}\n",
       "spec.retries.perTryTimeout: expected a duration such as \"250ms\" or \"10s\", got an "
       "integer"},
      {"  timeout: 10x\n", "spec.timeout: invalid duration \"10x\""},
      {"  connectTimeout: 0s\n", "spec.connectTimeout: must be greater than 0"},
      {"  outlierDetection: {consecutive5xx: 0}\n",
       "spec.outlierDetection: consecutive5xx and consecutiveGatewayFailure are both 0"},
      {"  outlierDetection: {baseEjectionTime: 10m, maxEjectionTime: 1m}\n",
       "spec.outlierDetection.maxEjectionTime: maxEjectionTime 1m is below baseEjectionTime 10m"},
      {"  outlierDetection: {maxEjectionPercent: 101}\n",
       "spec.outlierDetection.maxEjectionPercent: must be 0..100, got 101"},
      {"  circuitBreakers: {maxConnections: 0}\n",
       "spec.circuitBreakers.maxConnections: must be 1..1000000, got 0"},
      {"  healthCheck: {interval: 1s}\n",
       "spec.healthCheck: set path (an HTTP check) or tcp: true"},
      {"  healthCheck: {path: /h, tcp: true}\n", "spec.healthCheck: set either path"},
      {"  healthCheck: {path: healthz}\n",
       "spec.healthCheck.path: must be a path starting with '/'"},
      {"  healthCheck: {tcp: true, host: x}\n",
       "spec.healthCheck.host: only HTTP checks send a Host header"},
      {"  healthCheck: {tcp: yes}\n", "spec.healthCheck.tcp: expected true or false, got a "
                                      "string"},
      {"  rateLimit: {burst: 10}\n", "spec.rateLimit.requestsPerSecond: required field is missing"},
      {"  rateLimit: {requestsPerSecond: 10, status: 200}\n",
       "spec.rateLimit.status: must be 400..599, got 200"},
      {"  fault: {}\n", "spec.fault: set delay, abort or both"},
      {"  fault: {delay: {percent: 10}}\n", "spec.fault.delay.duration: required field is missing"},
      {"  fault: {abort: {status: 503, percent: 100.5}}\n",
       "spec.fault.abort.percent: must be 0..100, got 100.5"},
      {"  fault: {abort: {status: 503, percent: \"5\"}}\n",
       "spec.fault.abort.percent: expected a number, got a string"},
      {"  retrys: {attempts: 1}\n", "spec.retrys: unknown field (did you mean \"retries\"?)"},
  };
  for (const Case& c : cases) {
    const std::string msg = loadError(policyWith(c.yaml));
    EXPECT_NE(msg.find(c.expected), std::string::npos)
        << "got:      " << msg << "\nexpected: " << c.expected;
    EXPECT_EQ(msg.rfind("test.yaml: document 1 (TrafficPolicy \"p\"): spec.", 0), 0u) << msg;
  }
}

TEST(TrafficPolicy, RejectsBadTargets) {
  auto withTarget = [](std::string_view target) {
    return fmt::format(R"(apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: p}}
spec: {}
)",
                       target);
  };
  EXPECT_NE(loadError(withTarget("{}")).find("spec.targetRef: required field is missing"),
            std::string::npos);
  EXPECT_NE(loadError(withTarget("{targetRef: {name: api}}"))
                .find("spec.targetRef.kind: required field is missing"),
            std::string::npos);
  EXPECT_NE(loadError(withTarget("{targetRef: {kind: Deployment, name: api}}"))
                .find("spec.targetRef: unsupported target Deployment"),
            std::string::npos);
  EXPECT_NE(loadError(withTarget("{targetRef: {kind: Service, group: apps, name: api}}"))
                .find("spec.targetRef: unsupported target Service (group \"apps\")"),
            std::string::npos);
  EXPECT_NE(loadError(withTarget("{targetRef: {kind: Service, name: API}}"))
                .find("spec.targetRef.name: invalid Service name \"API\""),
            std::string::npos);
}

} // namespace
} // namespace trellis::manifest
