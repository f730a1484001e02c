#include <cstdlib>
#include <map>
#include <new>

#include <gtest/gtest.h>

#include "proxy/config.h"
#include "proxy/lb/hash.h"
#include "proxy/lb/random.h"
#include "proxy/router.h"

// Counts heap allocations on this thread while enabled, to check that matching allocates
// nothing. Replacing the global operators affects the whole test binary, harmlessly: they
// forward to malloc/free.
namespace {
thread_local bool g_counting = false;
thread_local size_t g_allocations = 0;
} // namespace

// operator new and delete below are a matched malloc/free pair; GCC cannot see that.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(size_t n) {
  if (g_counting)
    ++g_allocations;
  if (void* p = std::malloc(n ? n : 1))
    return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, size_t) noexcept {
  std::free(p);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace trellis::proxy {
namespace {

std::shared_ptr<const Snapshot> load(std::string_view routes) {
  std::string yaml = R"(clusters:
  - {name: a, endpoints: [127.0.0.1:8081]}
  - {name: b, endpoints: [127.0.0.1:8082]}
  - {name: c, endpoints: [127.0.0.1:8083]}
listeners:
  - name: web
    address: 127.0.0.1:0
    routes:
)";
  yaml += routes;
  auto r = loadConfigString(yaml, "router.yaml");
  EXPECT_TRUE(r.ok()) << r.error().message();
  return r.ok() ? *r : nullptr;
}

// A request with a header map; the lookup is case-insensitive like an HTTP/1.1 codec's.
struct Req {
  std::string method = "GET";
  std::string path = "/";
  std::map<std::string, std::string> headers; // lowercase names

  std::optional<std::string_view> get(std::string_view name) const {
    auto it = headers.find(std::string(name));
    if (it == headers.end())
      return std::nullopt;
    return std::string_view(it->second);
  }
};

// The name of the cluster the first matching route sends to, or "none".
std::string routeOf(const Snapshot& s, const Req& req) {
  RequestView view{req.method, req.path, [&req](std::string_view n) { return req.get(n); }};
  auto idx = matchRoute(s.listeners[0].routes, view);
  if (!idx)
    return "none";
  return s.listeners[0].routes[*idx].clusters[0].cluster;
}

TEST(Router, PrefixExactAndOrder) {
  auto s = load(R"y(      - {match: {path: /api/health}, cluster: c}
      - {match: {prefix: /api}, cluster: a}
      - {match: {prefix: /}, cluster: b}
)y");
  ASSERT_TRUE(s);
  EXPECT_EQ(routeOf(*s, {"GET", "/api/health", {}}), "c");
  EXPECT_EQ(routeOf(*s, {"GET", "/api/health/x", {}}), "a"); // exact means exact
  EXPECT_EQ(routeOf(*s, {"GET", "/api/users", {}}), "a");
  EXPECT_EQ(routeOf(*s, {"GET", "/apis", {}}), "a");      // a plain string prefix
  EXPECT_EQ(routeOf(*s, {"GET", "/API/users", {}}), "b"); // case-sensitive
  EXPECT_EQ(routeOf(*s, {"GET", "/other", {}}), "b");
  EXPECT_EQ(routeOf(*s, {"GET", "/api/health?verbose=1", {}}), "c"); // query ignored
}

TEST(Router, FirstMatchWinsEvenIfLaterIsMoreSpecific) {
  auto s = load(R"y(      - {match: {prefix: /}, cluster: b}
      - {match: {prefix: /api}, cluster: a}
)y");
  ASSERT_TRUE(s);
  EXPECT_EQ(routeOf(*s, {"GET", "/api", {}}), "b");
}

TEST(Router, NoMatch) {
  auto s = load("      - {match: {prefix: /api}, cluster: a}\n");
  ASSERT_TRUE(s);
  EXPECT_EQ(routeOf(*s, {"GET", "/", {}}), "none");
  EXPECT_EQ(routeOf(*s, {"GET", "", {}}), "none");
}

TEST(Router, RegexMatchesTheWholePath) {
  auto s = load(R"y(      - {match: {regex: "/users/[0-9]+"}, cluster: a}
      - {match: {regex: "/(img|css)/.*\\.(png|css)"}, cluster: c}
      - {match: {prefix: /}, cluster: b}
)y");
  ASSERT_TRUE(s);
  EXPECT_EQ(routeOf(*s, {"GET", "/users/42", {}}), "a");
  EXPECT_EQ(routeOf(*s, {"GET", "/users/42/orders", {}}), "b"); // must match entirely
  EXPECT_EQ(routeOf(*s, {"GET", "/users/abc", {}}), "b");
  EXPECT_EQ(routeOf(*s, {"GET", "/x/users/42", {}}), "b");
  EXPECT_EQ(routeOf(*s, {"GET", "/img/a/b.png", {}}), "c");
  EXPECT_EQ(routeOf(*s, {"GET", "/img/a/b.gif", {}}), "b");
  EXPECT_EQ(routeOf(*s, {"GET", "/users/7?x=1", {}}), "a");
}

TEST(Router, RegexOnHugePathsNeitherCrashesNorBacktracks) {
  // With a backtracking matcher these blow the stack or take exponential time.
  auto s = load(R"y(      - {match: {regex: "/(a|aa)*c"}, cluster: a}
      - {match: {regex: "/(a*)*b"}, cluster: c}
      - {match: {prefix: /}, cluster: b}
)y");
  ASSERT_TRUE(s);
  const std::string long_path = "/" + std::string(60 * 1024, 'a');
  EXPECT_EQ(routeOf(*s, {"GET", long_path, {}}), "b");
  EXPECT_EQ(routeOf(*s, {"GET", long_path + "c", {}}), "a");
  EXPECT_EQ(routeOf(*s, {"GET", "/" + std::string(40, 'a'), {}}), "b");
}

TEST(Router, Methods) {
  auto s = load(R"y(      - {match: {prefix: /, method: POST}, cluster: a}
      - {match: {prefix: /, method: [GET, HEAD]}, cluster: c}
      - {match: {prefix: /}, cluster: b}
)y");
  ASSERT_TRUE(s);
  EXPECT_EQ(routeOf(*s, {"POST", "/x", {}}), "a");
  EXPECT_EQ(routeOf(*s, {"GET", "/x", {}}), "c");
  EXPECT_EQ(routeOf(*s, {"HEAD", "/x", {}}), "c");
  EXPECT_EQ(routeOf(*s, {"get", "/x", {}}), "b"); // methods are case-sensitive
  EXPECT_EQ(routeOf(*s, {"DELETE", "/x", {}}), "b");
}

TEST(Router, Headers) {
  auto s = load(R"y(      - {match: {prefix: /, headers: {X-Canary: "1", x-team: pay}}, cluster: a}
      - {match: {prefix: /, headers: {x-debug: ""}}, cluster: c}
      - {match: {prefix: /, headers: {x-trace:}}, cluster: c}
      - {match: {prefix: /}, cluster: b}
)y");
  ASSERT_TRUE(s);
  EXPECT_EQ(routeOf(*s, {"GET", "/", {{"x-canary", "1"}, {"x-team", "pay"}}}), "a");
  EXPECT_EQ(routeOf(*s, {"GET", "/", {{"x-canary", "1"}}}), "b");                     // all needed
  EXPECT_EQ(routeOf(*s, {"GET", "/", {{"x-canary", "2"}, {"x-team", "pay"}}}), "b");  // exact
  EXPECT_EQ(routeOf(*s, {"GET", "/", {{"x-canary", "1 "}, {"x-team", "pay"}}}), "b"); // exact
  EXPECT_EQ(routeOf(*s, {"GET", "/", {{"x-debug", ""}}}), "c");    // presence only
  EXPECT_EQ(routeOf(*s, {"GET", "/", {{"x-debug", "yes"}}}), "c"); // any value
  EXPECT_EQ(routeOf(*s, {"GET", "/", {{"x-trace", "abc"}}}), "c"); // `name:` is presence too
  EXPECT_EQ(routeOf(*s, {"GET", "/", {}}), "b");
  // Without a header lookup at all, header conditions fail and others still match.
  RequestView bare{"GET", "/", nullptr};
  EXPECT_EQ(matchRoute(s->listeners[0].routes, bare), std::optional<size_t>(3));
}

TEST(Router, SelectClusterHonoursWeightsDeterministically) {
  auto s = load(R"y(      - match: {prefix: /}
        weighted_clusters: [{cluster: a, weight: 90}, {cluster: b, weight: 0}, {cluster: c, weight: 10}]
)y");
  ASSERT_TRUE(s);
  const Route& r = s->listeners[0].routes[0];
  // The random value maps onto [0, 100): below 90 is a, the rest c; b has no share.
  EXPECT_EQ(selectCluster(r, 0), 0u);
  EXPECT_EQ(selectCluster(r, UINT64_MAX / 100 * 89), 0u);
  EXPECT_EQ(selectCluster(r, UINT64_MAX / 100 * 91), 2u);
  EXPECT_EQ(selectCluster(r, UINT64_MAX), 2u);
  RandomGeneratorImpl random(17);
  size_t counts[3] = {0, 0, 0};
  for (int i = 0; i < 100000; ++i)
    ++counts[selectCluster(r, random.random())];
  EXPECT_EQ(counts[1], 0u);
  EXPECT_NEAR(counts[0], 90000, 600);
  EXPECT_NEAR(counts[2], 10000, 600);
  // A single cluster needs no random value.
  auto one = load("      - {match: {prefix: /}, cluster: b}\n");
  EXPECT_EQ(selectCluster(one->listeners[0].routes[0], 12345), 0u);
}

TEST(Router, MatchingDoesNotAllocate) {
  auto s = load(R"y(      - {match: {path: /exact}, cluster: c}
      - {match: {prefix: /api, method: [PUT, POST], headers: {x-canary: "1", x-any: ""}}, cluster: a}
      - match: {prefix: /}
        weighted_clusters: [{cluster: a, weight: 1}, {cluster: b, weight: 3}]
)y");
  ASSERT_TRUE(s);
  Req req{"POST", "/api/orders/17", {{"x-canary", "1"}, {"x-any", "v"}}};
  auto lookup = [&req](std::string_view n) { return req.get(n); };
  RequestView view{req.method, req.path, lookup};
  Req miss{"GET", "/api/orders/17", {{"x-canary", "0"}}};
  RequestView miss_view{miss.method, miss.path,
                        [&miss](std::string_view n) { return miss.get(n); }};
  g_allocations = 0;
  g_counting = true;
  auto hit = matchRoute(s->listeners[0].routes, view);
  auto fallback = matchRoute(s->listeners[0].routes, miss_view);
  size_t picked = selectCluster(s->listeners[0].routes[2], 0x123456789abcdefull);
  g_counting = false;
  EXPECT_EQ(g_allocations, 0u);
  EXPECT_EQ(hit, std::optional<size_t>(1));
  EXPECT_EQ(fallback, std::optional<size_t>(2));
  EXPECT_LT(picked, 2u);
}

TEST(Router, RequestHash) {
  Req req{"GET", "/", {{"x-user", "alice"}, {"cookie", "theme=dark; sid=\"s-42\" ;x=1"}}};
  HeaderLookup lookup = [&req](std::string_view n) { return req.get(n); };
  EXPECT_EQ(requestHash({HashSource::kHeader, "x-user"}, "10.0.0.1", lookup), hash64("alice"));
  EXPECT_EQ(requestHash({HashSource::kHeader, "x-missing"}, "10.0.0.1", lookup), std::nullopt);
  EXPECT_EQ(requestHash({HashSource::kCookie, "sid"}, "", lookup), hash64("s-42"));
  EXPECT_EQ(requestHash({HashSource::kCookie, "theme"}, "", lookup), hash64("dark"));
  EXPECT_EQ(requestHash({HashSource::kCookie, "x"}, "", lookup), hash64("1"));
  EXPECT_EQ(requestHash({HashSource::kCookie, "the"}, "", lookup), std::nullopt);
  EXPECT_EQ(requestHash({HashSource::kSourceIp, ""}, "10.0.0.1", lookup), hash64("10.0.0.1"));
  EXPECT_EQ(requestHash({HashSource::kSourceIp, ""}, "", lookup), std::nullopt);
  // tcp listeners have no headers.
  EXPECT_EQ(requestHash({HashSource::kHeader, "x-user"}, "10.0.0.1", nullptr), std::nullopt);
  EXPECT_EQ(requestHash({HashSource::kSourceIp, ""}, "10.0.0.1", nullptr), hash64("10.0.0.1"));
}

} // namespace
} // namespace trellis::proxy
