#include <cstdio>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "proxy/config.h"

namespace trellis::proxy {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string loadError(std::string_view yaml) {
  auto r = loadConfigString(yaml, "proxy.yaml");
  if (r.ok()) {
    ADD_FAILURE() << "expected an error for:\n" << yaml;
    return "";
  }
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  return r.error().message();
}

std::shared_ptr<const Snapshot> loadOk(std::string_view yaml) {
  auto r = loadConfigString(yaml, "proxy.yaml");
  if (!r.ok()) {
    ADD_FAILURE() << r.error().message();
    return nullptr;
  }
  return *r;
}

// The schema example, every key used.
constexpr std::string_view kFull = R"(admin: {address: 127.0.0.1:9901}
access_log: {path: /dev/stdout}
concurrency: 4
listeners:
  - name: web
    address: 127.0.0.1:10000
    protocol: http
    max_header_bytes: 32KiB
    max_headers: 50
    header_read_timeout: 5s
    idle_timeout: 2m
    max_connections: 500
    buffer_limit: 256KiB
    request_buffer_limit: 128KiB
    max_requests_per_connection: 1000
    routes:
      - name: canary
        match: {prefix: /api, headers: {x-canary: "1", X-Debug: ""}, method: GET}
        cluster: api-canary
      - match: {path: /exact, method: [GET, HEAD]}
        cluster: api
      - match: {regex: "/users/[0-9]+"}
        cluster: api
      - match: {prefix: /}
        weighted_clusters: [{cluster: api, weight: 90}, {cluster: api-canary, weight: 10}]
        request_headers_to_add: {x-env: prod}
        timeout: 15s
        retries: {attempts: 2, per_try_timeout: 2s, on: [connect-failure, reset, 5xx, gateway-error, retriable-status-codes], retriable_status_codes: [503], backoff: {base: 25ms, max: 250ms}, budget_percent: 20, retry_non_idempotent: false}
        fault: {delay: {percent: 10, duration: 100ms}, abort: {percent: 5, status: 503}}
        rate_limit: {requests_per_second: 1000, burst: 200}
  - name: db
    address: "[::1]:15432"
    protocol: tcp
    cluster: api
    idle_timeout: 1h
clusters:
  - name: api
    lb: round_robin
    connect_timeout: 1s
    trust_proxy_errors: true
    endpoints:
      - {address: 127.0.0.1:8081, weight: 3}
      - 127.0.0.1:8082
    health_check: {path: /healthz, interval: 1s, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2}
    outlier_detection: {consecutive_5xx: 5, consecutive_gateway_failure: 3, interval: 1s, base_ejection_time: 10s, max_ejection_time: 300s, max_ejection_percent: 50}
    circuit_breakers: {max_connections: 1000, max_pending_requests: 100, max_requests: 2000, max_retries: 3}
    panic_threshold: 40
    pool: {idle_timeout: 60s, max_requests_per_connection: 0, max_idle_per_endpoint: 64}
  - name: api-canary
    lb: ring_hash
    hash_on: {header: X-User}
    ring_hash: {min_ring_size: 2048}
    endpoints: [127.0.0.1:9081]
    health_check: {tcp: true}
  - name: sessions
    lb: maglev
    hash_on: {cookie: sid}
    maglev: {table_size: 131071}
    endpoints: ["10.0.0.1:80", "10.0.0.2:80"]
  - name: lr
    lb: least_request
    least_request: {choice_count: 3}
    endpoints: ["10.0.0.3:80"]
  - name: by-ip
    lb: maglev
    hash_on: {source_ip: true}
    endpoints: ["10.0.0.4:80"]
)";

TEST(Config, FullFileLoadsIntoSnapshot) {
  auto snap = loadOk(kFull);
  ASSERT_TRUE(snap);
  const Snapshot& s = *snap;
  EXPECT_EQ(s.source, "proxy.yaml");
  EXPECT_EQ(s.admin.address.toString(), "127.0.0.1:9901");
  ASSERT_TRUE(s.access_log);
  EXPECT_EQ(s.access_log->path, "/dev/stdout");
  EXPECT_EQ(s.concurrency, 4u);

  ASSERT_EQ(s.listeners.size(), 2u);
  const Listener& web = s.listeners[0];
  EXPECT_EQ(web.name, "web");
  EXPECT_EQ(web.address.toString(), "127.0.0.1:10000");
  EXPECT_EQ(web.protocol, Protocol::kHttp);
  EXPECT_EQ(web.max_header_bytes, 32u * 1024);
  EXPECT_EQ(web.max_headers, 50u);
  EXPECT_EQ(web.header_read_timeout, seconds(5));
  EXPECT_EQ(web.idle_timeout, seconds(120));
  EXPECT_EQ(web.max_connections, 500u);
  EXPECT_EQ(web.buffer_limit, 256u * 1024);
  EXPECT_EQ(web.request_buffer_limit, 128u * 1024);
  EXPECT_EQ(web.max_requests_per_connection, 1000u);
  ASSERT_EQ(web.routes.size(), 4u);

  const Route& r0 = web.routes[0];
  EXPECT_EQ(r0.name, "canary");
  EXPECT_EQ(r0.match.kind, PathMatchKind::kPrefix);
  EXPECT_EQ(r0.match.path, "/api");
  EXPECT_EQ(r0.match.methods, std::vector<std::string>{"GET"});
  ASSERT_EQ(r0.match.headers.size(), 2u);
  EXPECT_EQ(r0.match.headers[0], (HeaderMatcher{"x-canary", "1"}));
  EXPECT_EQ(r0.match.headers[1], (HeaderMatcher{"x-debug", ""})); // lowercased, presence only
  ASSERT_EQ(r0.clusters.size(), 1u);
  EXPECT_FALSE(r0.weighted);
  EXPECT_EQ(r0.clusters[0].cluster, "api-canary");
  EXPECT_EQ(r0.clusters[0].cluster_index, 1u);
  EXPECT_EQ(r0.total_weight, 1u);
  // Defaults where the route says nothing.
  EXPECT_EQ(r0.timeout, seconds(15));
  EXPECT_EQ(r0.retries.attempts, 0u);
  EXPECT_FALSE(r0.fault.delay || r0.fault.abort);
  EXPECT_FALSE(r0.rate_limit);

  EXPECT_EQ(web.routes[1].match.kind, PathMatchKind::kExact);
  EXPECT_EQ(web.routes[1].match.methods, (std::vector<std::string>{"GET", "HEAD"}));
  EXPECT_EQ(web.routes[2].match.kind, PathMatchKind::kRegex);
  ASSERT_TRUE(web.routes[2].match.regex);

  const Route& r3 = web.routes[3];
  EXPECT_TRUE(r3.weighted);
  ASSERT_EQ(r3.clusters.size(), 2u);
  EXPECT_EQ(r3.clusters[0], (WeightedCluster{"api", 90, 0}));
  EXPECT_EQ(r3.clusters[1], (WeightedCluster{"api-canary", 10, 1}));
  EXPECT_EQ(r3.total_weight, 100u);
  EXPECT_EQ(r3.request_headers_to_add, (std::vector<HeaderValue>{{"x-env", "prod"}}));
  EXPECT_EQ(r3.timeout, seconds(15));
  const RetryPolicy& rp = r3.retries;
  EXPECT_EQ(rp.attempts, 2u);
  EXPECT_EQ(rp.per_try_timeout, seconds(2));
  EXPECT_TRUE(rp.on.connect_failure && rp.on.reset && rp.on.status_5xx && rp.on.gateway_error &&
              rp.on.retriable_status_codes);
  EXPECT_FALSE(rp.on.refused_stream);
  EXPECT_EQ(rp.retriable_status_codes, std::vector<uint16_t>{503});
  EXPECT_EQ(rp.backoff_base, milliseconds(25));
  EXPECT_EQ(rp.backoff_max, milliseconds(250));
  EXPECT_EQ(rp.budget_percent, 20u);
  EXPECT_EQ(rp.budget_min_concurrency, 3u);
  EXPECT_FALSE(rp.retry_non_idempotent);
  ASSERT_TRUE(r3.fault.delay && r3.fault.abort);
  EXPECT_EQ(r3.fault.delay->percent, 10.0);
  EXPECT_EQ(r3.fault.delay->duration, milliseconds(100));
  EXPECT_EQ(r3.fault.abort->percent, 5.0);
  EXPECT_EQ(r3.fault.abort->status, 503);
  ASSERT_TRUE(r3.rate_limit);
  EXPECT_EQ(*r3.rate_limit, (RateLimit{1000, 200, 429}));

  const Listener& db = s.listeners[1];
  EXPECT_EQ(db.protocol, Protocol::kTcp);
  EXPECT_EQ(db.address.toString(), "[::1]:15432");
  EXPECT_EQ(db.cluster, "api");
  EXPECT_EQ(db.cluster_index, 0u);
  EXPECT_EQ(db.idle_timeout, seconds(3600));
  EXPECT_TRUE(db.routes.empty());

  ASSERT_EQ(s.clusters.size(), 5u);
  const Cluster& api = s.clusters[0];
  EXPECT_EQ(api.name, "api");
  EXPECT_EQ(api.lb.policy, LbPolicy::kRoundRobin);
  EXPECT_EQ(api.lb.panic_threshold, 40u);
  EXPECT_FALSE(api.hash_on);
  EXPECT_EQ(api.connect_timeout, seconds(1));
  EXPECT_TRUE(api.trust_proxy_errors);
  ASSERT_EQ(api.endpoints.size(), 2u);
  EXPECT_EQ(api.endpoints[0].address.toString(), "127.0.0.1:8081");
  EXPECT_EQ(api.endpoints[0].weight, 3u);
  EXPECT_EQ(api.endpoints[1].address.toString(), "127.0.0.1:8082");
  EXPECT_EQ(api.endpoints[1].weight, 1u);
  ASSERT_TRUE(api.health_check);
  EXPECT_EQ(api.health_check->kind, HealthCheckKind::kHttp);
  EXPECT_EQ(api.health_check->path, "/healthz");
  EXPECT_EQ(api.health_check->interval, seconds(1));
  EXPECT_EQ(api.health_check->timeout, milliseconds(500));
  EXPECT_EQ(api.health_check->healthy_threshold, 2u);
  EXPECT_EQ(api.health_check->unhealthy_threshold, 2u);
  ASSERT_TRUE(api.outlier_detection);
  EXPECT_EQ(*api.outlier_detection,
            (OutlierDetection{5, 3, seconds(1), seconds(10), seconds(300), 50}));
  EXPECT_EQ(api.circuit_breakers, (CircuitBreakers{1000, 100, 2000, 3}));
  EXPECT_EQ(api.pool, (PoolConfig{seconds(60), 0, 64}));

  const Cluster& canary = s.clusters[1];
  EXPECT_EQ(canary.lb.policy, LbPolicy::kRingHash);
  ASSERT_TRUE(canary.hash_on);
  EXPECT_EQ(*canary.hash_on, (HashPolicy{HashSource::kHeader, "x-user"}));
  EXPECT_EQ(canary.lb.min_ring_size, 2048u);
  EXPECT_EQ(canary.lb.max_ring_size, 8u * 1024 * 1024);
  EXPECT_EQ(canary.lb.panic_threshold, 50u); // default
  EXPECT_EQ(canary.connect_timeout, seconds(5));
  ASSERT_TRUE(canary.health_check);
  EXPECT_EQ(canary.health_check->kind, HealthCheckKind::kTcp);
  EXPECT_EQ(canary.health_check->interval, seconds(5));
  EXPECT_FALSE(canary.outlier_detection);
  EXPECT_EQ(canary.circuit_breakers, CircuitBreakers{});

  EXPECT_EQ(*s.clusters[2].hash_on, (HashPolicy{HashSource::kCookie, "sid"}));
  EXPECT_EQ(s.clusters[2].lb.maglev_table_size, 131071u);
  EXPECT_EQ(s.clusters[3].lb.policy, LbPolicy::kLeastRequest);
  EXPECT_EQ(s.clusters[3].lb.choice_count, 3u);
  EXPECT_EQ(*s.clusters[4].hash_on, (HashPolicy{HashSource::kSourceIp, ""}));
  EXPECT_EQ(s.clusters[4].lb.maglev_table_size, 65537u);

  EXPECT_EQ(s.findCluster("sessions"), &s.clusters[2]);
  EXPECT_EQ(s.findCluster("nope"), nullptr);
  EXPECT_EQ(s.findListener("db"), &s.listeners[1]);
  EndpointSet lbeps = endpointSetOf(api);
  ASSERT_EQ(lbeps.size(), 2u);
  EXPECT_EQ(lbeps.key(0), ""); // round robin never reads keys
  EXPECT_EQ(lbeps.weight(0), 3u);
  EndpointSet hashed = endpointSetOf(s.clusters[2]); // maglev places endpoints by their address
  ASSERT_GT(hashed.size(), 0u);
  EXPECT_EQ(hashed.key(0), s.clusters[2].endpoints[0].address.toString());
}

TEST(Config, MinimalFileGetsDefaults) {
  auto snap = loadOk(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
listeners:
  - name: web
    address: 127.0.0.1:0
    routes:
      - match: {prefix: /}
        cluster: api
)");
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->admin.address.toString(), "127.0.0.1:9901");
  EXPECT_FALSE(snap->access_log);
  EXPECT_EQ(snap->concurrency, 0u);
  const Listener& l = snap->listeners[0];
  EXPECT_EQ(l.protocol, Protocol::kHttp);
  EXPECT_EQ(l.max_header_bytes, 60u * 1024);
  EXPECT_EQ(l.max_headers, 100u);
  EXPECT_EQ(l.header_read_timeout, seconds(10));
  EXPECT_EQ(l.idle_timeout, seconds(300));
  EXPECT_EQ(l.max_connections, 16384u);
  EXPECT_EQ(l.buffer_limit, 1024u * 1024);
  EXPECT_EQ(l.request_buffer_limit, 64u * 1024);
  EXPECT_EQ(l.max_requests_per_connection, 0u);
  const Cluster& c = snap->clusters[0];
  EXPECT_EQ(c.lb, LbConfig{});
  EXPECT_EQ(c.connect_timeout, seconds(5));
  EXPECT_FALSE(c.trust_proxy_errors);
  EXPECT_FALSE(c.health_check);
  EXPECT_FALSE(c.outlier_detection);
  EXPECT_EQ(c.pool, PoolConfig{});
}

TEST(Config, SectionDefaultsWhenPresent) {
  auto snap = loadOk(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
    health_check: {path: /h}
    outlier_detection: {}
listeners:
  - name: web
    address: 127.0.0.1:0
    routes:
      - match: {prefix: /}
        cluster: api
        retries: {attempts: 1}
        fault: {abort: {status: 500}}
        rate_limit: {requests_per_second: 50}
)");
  ASSERT_TRUE(snap);
  const Cluster& c = snap->clusters[0];
  EXPECT_EQ(*c.health_check,
            (HealthCheck{HealthCheckKind::kHttp, "/h", "", seconds(5), seconds(1), 2, 3}));
  EXPECT_EQ(*c.outlier_detection, OutlierDetection{});
  const Route& r = snap->listeners[0].routes[0];
  EXPECT_EQ(r.retries.attempts, 1u);
  EXPECT_TRUE(r.retries.on.connect_failure && r.retries.on.refused_stream && r.retries.on.reset &&
              r.retries.on.gateway_error);
  EXPECT_FALSE(r.retries.on.status_5xx || r.retries.on.retriable_status_codes);
  EXPECT_FALSE(r.fault.delay);
  EXPECT_EQ(*r.fault.abort, (FaultAbort{100, 500}));
  EXPECT_EQ(*r.rate_limit, (RateLimit{50, 50, 429}));
}

TEST(Config, JsonRoundTripsToAnEqualSnapshot) {
  auto snap = loadOk(kFull);
  ASSERT_TRUE(snap);
  const nlohmann::json j = toJson(*snap);
  EXPECT_EQ(j["clusters"][0]["lb"], "round_robin");
  EXPECT_EQ(j["clusters"][0]["trust_proxy_errors"], true);
  EXPECT_EQ(j["listeners"][0]["routes"][3]["retries"]["backoff"]["max"], "250ms");
  EXPECT_EQ(j["listeners"][0]["max_header_bytes"], 32 * 1024);
  EXPECT_EQ(j["listeners"][1]["address"], "[::1]:15432");
  // JSON is YAML: loading the dump gives the same snapshot, defaults included.
  auto again = loadConfigString(j.dump(2), "proxy.yaml");
  ASSERT_TRUE(again.ok()) << again.error().message() << "\n" << j.dump(2);
  EXPECT_EQ(**again, *snap);
  EXPECT_EQ(toJson(**again), j);
}

TEST(Config, LoadsFromFile) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("proxycfg_test_" + std::to_string(getpid()) + ".yaml"))
                               .string();
  {
    std::ofstream out(path);
    out << kFull;
  }
  auto r = loadConfigFile(path);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ((*r)->source, path);
  EXPECT_EQ((*r)->listeners.size(), 2u);
  {
    std::ofstream out(path);
    out << "listeners:\n  - name: web\n    adress: 127.0.0.1:80\n";
  }
  r = loadConfigFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(),
            path + ":3: listeners[0].adress: unknown key (did you mean \"address\"?)");
  std::remove(path.c_str());
  r = loadConfigFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kIo);
  EXPECT_EQ(r.error().message(), path + ": cannot open: No such file or directory");
}

// ---- errors: the full message, file:line: path: what ----

TEST(ConfigErrors, UnknownLbPolicy) {
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    lb: round-robbin
    endpoints: [127.0.0.1:8081]
)"),
            "proxy.yaml:3: clusters[0].lb: unknown policy \"round-robbin\" (expected "
            "round_robin, least_request, random, ring_hash or maglev)");
}

TEST(ConfigErrors, UnknownKeysAreNeverSilent) {
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoint: [127.0.0.1:8081]
)"),
            "proxy.yaml:3: clusters[0].endpoint: unknown key (did you mean \"endpoints\"?)");
  EXPECT_EQ(loadError(R"(listeners: []
clusterz: []
)"),
            "proxy.yaml:2: clusterz: unknown key (did you mean \"clusters\"?)");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
    pool: {idle_timeout: 1s, color: blue}
)"),
            "proxy.yaml:4: clusters[0].pool.color: unknown key (expected one of: idle_timeout, "
            "max_requests_per_connection, max_idle_per_endpoint)");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
    name: again
)"),
            "proxy.yaml:4: clusters[0].name: duplicate key");
}

TEST(ConfigErrors, WrongTypes) {
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
listeners:
  - name: web
    address: 127.0.0.1:80
    routes: {prefix: /}
)"),
            "proxy.yaml:7: listeners[0].routes: expected a list, got a mapping");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
    circuit_breakers: {max_requests: lots}
)"),
            "proxy.yaml:4: clusters[0].circuit_breakers.max_requests: expected an integer from 1 "
            "to 1000000, got \"lots\"");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
    connect_timeout: 10
)"),
            "proxy.yaml:4: clusters[0].connect_timeout: invalid duration \"10\": missing unit "
            "after \"10\" (use ns, us, ms, s, m or h)");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
    connect_timeout: [1s]
)"),
            "proxy.yaml:4: clusters[0].connect_timeout: expected a duration such as 250ms or "
            "10s, got a list");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
    health_check: {tcp: yes please}
)"),
            "proxy.yaml:4: clusters[0].health_check.tcp: expected true or false, got \"yes "
            "please\"");
  // An empty value is reported on its key's line.
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
    connect_timeout:
    lb: random
)"),
            "proxy.yaml:4: clusters[0].connect_timeout: expected a duration such as 250ms or "
            "10s, got an empty value");
  EXPECT_EQ(loadError("listeners:\nclusters: []\n"),
            "proxy.yaml:1: listeners: expected a list, got an empty value");
  EXPECT_EQ(loadError("? [a, b]\n: c\n"), "proxy.yaml:1: keys must be strings, got a list");
  EXPECT_EQ(loadError("- just\n- a list\n"),
            "proxy.yaml:1: expected a mapping at the top level, got a list");
  EXPECT_EQ(loadError(""), "proxy.yaml: the configuration is empty (expected listeners and "
                           "clusters)");
}

TEST(ConfigErrors, MissingRequiredKeys) {
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
listeners:
  - name: web
    routes: []
)"),
            "proxy.yaml:5: listeners[0]: missing required key \"address\"");
  EXPECT_EQ(loadError(R"(clusters:
  - endpoints: [127.0.0.1:8081]
)"),
            "proxy.yaml:2: clusters[0]: missing required key \"name\"");
  EXPECT_EQ(loadError("clusters: []\n"), "proxy.yaml:1: missing required key \"listeners\"");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
listeners:
  - name: web
    address: 127.0.0.1:80
    routes:
      - cluster: api
)"),
            "proxy.yaml:8: listeners[0].routes[0]: missing required key \"match\"");
}

TEST(ConfigErrors, DuplicateNamesAndAddresses) {
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
  - name: api
    endpoints: [127.0.0.1:8082]
)"),
            "proxy.yaml:4: clusters[1].name: duplicate cluster name \"api\" (first defined at "
            "line 2)");
  constexpr std::string_view base = R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
listeners:
  - name: a
    address: 127.0.0.1:7000
    protocol: tcp
    cluster: api
)";
  EXPECT_EQ(loadError(std::string(base) + R"(  - name: a
    address: 127.0.0.1:7001
    protocol: tcp
    cluster: api
)"),
            "proxy.yaml:9: listeners[1].name: duplicate listener name \"a\" (first defined at "
            "line 5)");
  EXPECT_EQ(loadError(std::string(base) + R"(  - name: b
    address: 127.0.0.1:7000
    protocol: tcp
    cluster: api
)"),
            "proxy.yaml:10: listeners[1].address: address 127.0.0.1:7000 conflicts with "
            "listeners[0].address (127.0.0.1:7000)");
  EXPECT_EQ(loadError(std::string(base) + R"(  - name: b
    address: 0.0.0.0:7000
    protocol: tcp
    cluster: api
)"),
            "proxy.yaml:10: listeners[1].address: address 0.0.0.0:7000 conflicts with "
            "listeners[0].address (127.0.0.1:7000)");
  // Port 0 never conflicts; another port or family is fine.
  EXPECT_TRUE(loadOk(std::string(base) + R"(  - name: b
    address: 127.0.0.1:0
    protocol: tcp
    cluster: api
  - name: c
    address: 127.0.0.1:0
    protocol: tcp
    cluster: api
  - name: d
    address: "[::1]:7000"
    protocol: tcp
    cluster: api
)"));
  EXPECT_EQ(loadError(std::string(base) + "admin: {address: 127.0.0.1:7000}\n"),
            "proxy.yaml:9: admin.address: address 127.0.0.1:7000 is also used by listeners[0]");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081, 127.0.0.1:8082, 127.0.0.1:8081]
)"),
            "proxy.yaml:3: clusters[0].endpoints[2]: duplicate endpoint 127.0.0.1:8081 (also "
            "endpoints[0])");
}

TEST(ConfigErrors, RoutesMustNameDefinedClusters) {
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
listeners:
  - name: web
    address: 127.0.0.1:80
    routes:
      - match: {prefix: /}
        cluster: apii
)"),
            "proxy.yaml:9: listeners[0].routes[0].cluster: unknown cluster \"apii\"");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
listeners:
  - name: web
    address: 127.0.0.1:80
    routes:
      - match: {prefix: /}
        weighted_clusters:
          - {cluster: api, weight: 1}
          - {cluster: canary, weight: 1}
)"),
            "proxy.yaml:11: listeners[0].routes[0].weighted_clusters[1].cluster: unknown "
            "cluster \"canary\"");
  EXPECT_EQ(loadError(R"(listeners:
  - name: db
    address: 127.0.0.1:80
    protocol: tcp
    cluster: pg
)"),
            "proxy.yaml:5: listeners[0].cluster: unknown cluster \"pg\"");
}

TEST(ConfigErrors, Weights) {
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints:
      - {address: 127.0.0.1:8081, weight: 0}
)"),
            "proxy.yaml:4: clusters[0].endpoints[0].weight: expected an integer from 1 to "
            "1000000, got \"0\"");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints:
      - {address: 127.0.0.1:8081, weight: -2}
)"),
            "proxy.yaml:4: clusters[0].endpoints[0].weight: expected an integer from 1 to "
            "1000000, got \"-2\"");
  constexpr std::string_view head = R"(clusters:
  - name: a
    endpoints: [127.0.0.1:8081]
  - name: b
    endpoints: [127.0.0.1:8082]
listeners:
  - name: web
    address: 127.0.0.1:80
    routes:
      - match: {prefix: /}
)";
  EXPECT_EQ(loadError(std::string(head) +
                      "        weighted_clusters: [{cluster: a, weight: 0}, {cluster: b, "
                      "weight: 0}]\n"),
            "proxy.yaml:11: listeners[0].routes[0].weighted_clusters: weights add up to 0; at "
            "least one must be positive");
  EXPECT_EQ(
      loadError(std::string(head) + "        weighted_clusters: [{cluster: a, weight: -1}]\n"),
      "proxy.yaml:11: listeners[0].routes[0].weighted_clusters[0].weight: expected an "
      "integer from 0 to 1000000, got \"-1\"");
  EXPECT_EQ(loadError(std::string(head) + "        weighted_clusters: []\n"),
            "proxy.yaml:11: listeners[0].routes[0].weighted_clusters: must list at least one "
            "cluster");
  EXPECT_EQ(loadError(std::string(head) +
                      "        weighted_clusters: [{cluster: a, weight: 1}, {cluster: a, "
                      "weight: 2}]\n"),
            "proxy.yaml:11: listeners[0].routes[0].weighted_clusters[1].cluster: cluster \"a\" "
            "is listed twice");
  // A zero weight next to a positive one is how traffic is shifted away: allowed.
  auto snap = loadOk(std::string(head) +
                     "        weighted_clusters: [{cluster: a, weight: 0}, {cluster: b, "
                     "weight: 5}]\n");
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->listeners[0].routes[0].total_weight, 5u);
  EXPECT_EQ(loadError(std::string(head) +
                      "        cluster: a\n        weighted_clusters: [{cluster: b, weight: "
                      "1}]\n"),
            "proxy.yaml:10: listeners[0].routes[0]: set either cluster or weighted_clusters, "
            "not both");
}

TEST(ConfigErrors, MatchRules) {
  constexpr std::string_view head = R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
listeners:
  - name: web
    address: 127.0.0.1:80
    routes:
      - cluster: api
)";
  EXPECT_EQ(loadError(std::string(head) + "        match: {regex: \"/users/([0-9]+\"}\n"),
            "proxy.yaml:9: listeners[0].routes[0].match.regex: invalid regex \"/users/([0-9]+\": "
            "Mismatched '(' and ')' in regular expression");
  EXPECT_EQ(loadError(std::string(head) + "        match: {regex: \"/(a)\\\\1\"}\n"),
            "proxy.yaml:9: listeners[0].routes[0].match.regex: invalid regex \"/(a)\\1\": "
            "Unexpected back-reference in polynomial mode.");
  EXPECT_EQ(loadError(std::string(head) + "        match: {prefix: api}\n"),
            "proxy.yaml:9: listeners[0].routes[0].match.prefix: must start with '/', got \"api\"");
  EXPECT_EQ(loadError(std::string(head) + "        match: {prefix: /a, path: /b}\n"),
            "proxy.yaml:9: listeners[0].routes[0].match: set only one of prefix, path or regex");
  EXPECT_EQ(loadError(std::string(head) + "        match: {method: GET}\n"),
            "proxy.yaml:9: listeners[0].routes[0].match: set one of prefix, path or regex");
  EXPECT_EQ(loadError(std::string(head) + "        match: {prefix: /, method: \"GE T\"}\n"),
            "proxy.yaml:9: listeners[0].routes[0].match.method: invalid method \"GE T\"");
  EXPECT_EQ(loadError(std::string(head) + "        match: {prefix: /, headers: {\"x y\": a}}\n"),
            "proxy.yaml:9: listeners[0].routes[0].match.headers.x y: invalid header name \"x y\"");
  EXPECT_EQ(
      loadError(std::string(head) + "        match: {prefix: /, headers: {a: 1, A: 2}}\n"),
      "proxy.yaml:9: listeners[0].routes[0].match.headers.A: header is listed twice (names are "
      "case-insensitive)");
}

TEST(ConfigErrors, ListenerShapes) {
  constexpr std::string_view clusters = R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
)";
  EXPECT_EQ(loadError(std::string(clusters) + R"(listeners:
  - name: db
    address: 127.0.0.1:80
    protocol: tcp
)"),
            "proxy.yaml:5: listeners[0]: missing required key \"cluster\" (a tcp listener "
            "forwards to a cluster)");
  EXPECT_EQ(loadError(std::string(clusters) + R"(listeners:
  - name: web
    address: 127.0.0.1:80
)"),
            "proxy.yaml:5: listeners[0]: missing required key \"routes\" (an http listener needs "
            "at least one route)");
  EXPECT_EQ(loadError(std::string(clusters) + R"(listeners:
  - name: web
    address: 127.0.0.1:80
    routes: []
)"),
            "proxy.yaml:7: listeners[0].routes: must list at least one route");
  EXPECT_EQ(loadError(std::string(clusters) + R"(listeners:
  - name: db
    address: 127.0.0.1:80
    protocol: tcp
    cluster: api
    max_headers: 10
)"),
            "proxy.yaml:9: listeners[0].max_headers: only valid for http listeners");
  EXPECT_EQ(loadError(std::string(clusters) + R"(listeners:
  - name: web
    address: 127.0.0.1:80
    protocol: udp
)"),
            "proxy.yaml:7: listeners[0].protocol: unknown protocol \"udp\" (expected http or "
            "tcp)");
  EXPECT_EQ(loadError(std::string(clusters) + R"(listeners:
  - name: web
    address: 127.0.0.1:80
    max_header_bytes: 10GiB
)"),
            "proxy.yaml:7: listeners[0].max_header_bytes: 10GiB is out of range (1024 to "
            "8388608 bytes)");
  EXPECT_EQ(loadError(std::string(clusters) + R"(listeners:
  - name: web
    address: 127.0.0.1
)"),
            "proxy.yaml:6: listeners[0].address: invalid address \"127.0.0.1\": expected "
            "host:port");
  EXPECT_EQ(loadError(std::string(clusters) + R"(listeners:
  - name: "web server"
)"),
            "proxy.yaml:5: listeners[0].name: invalid name \"web server\" (use 1 to 128 letters, "
            "digits, '-', '_' or '.')");
  EXPECT_EQ(loadError(std::string(clusters) + "listeners: []\n"),
            "proxy.yaml:4: listeners: must list at least one listener");
}

TEST(ConfigErrors, HashPolicies) {
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    lb: least_request
    hash_on: {header: x-user}
    endpoints: [127.0.0.1:8081]
)"),
            "proxy.yaml:4: clusters[0].hash_on: only ring_hash and maglev hash requests (lb is "
            "least_request)");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    lb: maglev
    endpoints: [127.0.0.1:8081]
)"),
            "proxy.yaml:2: clusters[0]: missing required key \"hash_on\" (lb maglev needs it)");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    lb: ring_hash
    hash_on: {header: x-user, cookie: sid}
    endpoints: [127.0.0.1:8081]
)"),
            "proxy.yaml:4: clusters[0].hash_on: set exactly one of header, cookie or source_ip");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    lb: random
    maglev: {table_size: 65537}
    endpoints: [127.0.0.1:8081]
)"),
            "proxy.yaml:4: clusters[0].maglev: options for lb maglev but lb is random");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    lb: maglev
    hash_on: {source_ip: true}
    maglev: {table_size: 65536}
    endpoints: [127.0.0.1:8081]
)"),
            "proxy.yaml:5: clusters[0].maglev.table_size: 65536 is not prime (e.g. 65537, "
            "131071, 655373)");
}

TEST(ConfigErrors, Percentages) {
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
    panic_threshold: 101
)"),
            "proxy.yaml:4: clusters[0].panic_threshold: expected an integer from 0 to 100, got "
            "\"101\"");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
listeners:
  - name: web
    address: 127.0.0.1:80
    routes:
      - match: {prefix: /}
        cluster: api
        fault: {delay: {percent: 100.5, duration: 1s}}
)"),
            "proxy.yaml:10: listeners[0].routes[0].fault.delay.percent: expected a percentage "
            "from 0 to 100, got \"100.5\"");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
    outlier_detection: {max_ejection_percent: -1}
)"),
            "proxy.yaml:4: clusters[0].outlier_detection.max_ejection_percent: expected an "
            "integer from 0 to 100, got \"-1\"");
}

TEST(ConfigErrors, RetriesAndHeaders) {
  constexpr std::string_view head = R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
listeners:
  - name: web
    address: 127.0.0.1:80
    routes:
      - match: {prefix: /}
        cluster: api
)";
  EXPECT_EQ(loadError(std::string(head) + "        retries: {attempts: 2, on: [5xxx]}\n"),
            "proxy.yaml:10: listeners[0].routes[0].retries.on[0]: unknown retry condition "
            "\"5xxx\" (expected connect-failure, refused-stream, reset, 5xx, gateway-error or "
            "retriable-status-codes)");
  EXPECT_EQ(loadError(std::string(head) +
                      "        retries: {attempts: 2, on: [5xx], retriable_status_codes: [429]}\n"),
            "proxy.yaml:10: listeners[0].routes[0].retries.retriable_status_codes: listed codes "
            "are never retried: add retriable-status-codes to on");
  EXPECT_EQ(loadError(std::string(head) +
                      "        retries: {attempts: 2, backoff: {base: 1s, max: 10ms}}\n"),
            "proxy.yaml:10: listeners[0].routes[0].retries.backoff.max: 10ms is below base 1s");
  EXPECT_EQ(loadError(std::string(head) + "        retries: {attempts: 11}\n"),
            "proxy.yaml:10: listeners[0].routes[0].retries.attempts: expected an integer from 0 "
            "to 10, got \"11\"");
  EXPECT_EQ(
      loadError(std::string(head) +
                "        request_headers_to_add: {x-a: \"a\\r\\nx-evil: 1\"}\n"),
      "proxy.yaml:10: listeners[0].routes[0].request_headers_to_add.x-a: header value contains "
      "a control character (CR, LF, NUL ...)");
  EXPECT_EQ(loadError(std::string(head) +
                      "        request_headers_to_add: {Transfer-Encoding: chunked}\n"),
            "proxy.yaml:10: listeners[0].routes[0].request_headers_to_add.Transfer-Encoding: "
            "header \"transfer-encoding\" is managed by the proxy");
  EXPECT_EQ(loadError(std::string(head) + "        fault: {}\n"),
            "proxy.yaml:10: listeners[0].routes[0].fault: set delay, abort or both");
}

TEST(ConfigErrors, ClusterSections) {
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
    health_check: {interval: 1s}
)"),
            "proxy.yaml:4: clusters[0].health_check: set path (an HTTP check) or tcp: true (a "
            "connect check)");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
    outlier_detection: {base_ejection_time: 1m, max_ejection_time: 30s}
)"),
            "proxy.yaml:4: clusters[0].outlier_detection.max_ejection_time: max_ejection_time "
            "30s is below base_ejection_time 1m");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: []
)"),
            "proxy.yaml:3: clusters[0].endpoints: must list at least one endpoint");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:0]
)"),
            "proxy.yaml:3: clusters[0].endpoints[0]: invalid address \"127.0.0.1:0\": port 0");
  EXPECT_EQ(loadError(R"(clusters:
  - name: api
    endpoints: [127.0.0.1:8081]
    connect_timeout: 0
)"),
            "proxy.yaml:4: clusters[0].connect_timeout: must be greater than 0");
}

TEST(ConfigErrors, YamlSyntaxErrorsCarryTheLine) {
  EXPECT_EQ(loadError("clusters:\n  - name: api\n    endpoints: [127.0.0.1:8081\n"),
            "proxy.yaml:4: invalid YAML: end of sequence flow not found (column 1)");
  // Nesting far beyond any real configuration is refused, not a stack overflow.
  std::string deep = "listeners: " + std::string(100000, '[');
  const std::string msg = loadError(deep);
  EXPECT_TRUE(msg.starts_with("proxy.yaml:1: invalid YAML: ")) << msg;
  std::string big(kMaxConfigBytes + 1, '#');
  EXPECT_EQ(loadError(big), "proxy.yaml: larger than the 16777216 byte limit");
}

} // namespace
} // namespace trellis::proxy
