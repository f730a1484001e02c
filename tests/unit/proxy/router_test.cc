#include <cstdlib>
#include <map>
#include <new>

#include <gtest/gtest.h>

#include "proxy/config.h"
#include "proxy/lb/hash.h"
#include "proxy/lb/random.h"
#include "proxy/router.h"

#include <nlohmann/json.hpp>

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

// routeOf with a query string: the view's path stops at '?', the query follows it.
std::string routeOfQuery(const Snapshot& s, const Req& req) {
  std::string_view full = req.path;
  const size_t q = full.find('?');
  RequestView view{req.method, full.substr(0, q), [&req](std::string_view n) { return req.get(n); },
                   q == std::string_view::npos ? std::string_view() : full.substr(q + 1)};
  auto idx = matchRoute(s.listeners[0].routes, view);
  if (!idx)
    return "none";
  const Route& r = s.listeners[0].routes[*idx];
  return r.redirect ? "redirect" : r.clusters[0].cluster;
}

TEST(Router, HeaderRegexMatchesTheWholeValue) {
  auto s =
      load(R"y(      - {match: {prefix: /, headers: {x-user: {regex: "[a-z]+-[0-9]+"}}}, cluster: a}
      - {match: {prefix: /}, cluster: b}
)y");
  ASSERT_TRUE(s);
  EXPECT_EQ(routeOf(*s, {"GET", "/", {{"x-user", "bob-42"}}}), "a");
  EXPECT_EQ(routeOf(*s, {"GET", "/", {{"x-user", "bob-42x"}}}), "b"); // whole value
  EXPECT_EQ(routeOf(*s, {"GET", "/", {{"x-user", "Bob-42"}}}), "b");  // case-sensitive
  EXPECT_EQ(routeOf(*s, {"GET", "/", {}}), "b");                      // absent
}

TEST(Router, HostMatcherIgnoresThePort) {
  auto s = load(R"y(      - {match: {prefix: /, headers: {host: orders}}, cluster: a}
      - {match: {prefix: /, headers: {host: "users:8080"}}, cluster: c}
      - {match: {prefix: /}, cluster: b}
)y");
  ASSERT_TRUE(s);
  EXPECT_EQ(routeOf(*s, {"GET", "/", {{"host", "orders"}}}), "a");
  EXPECT_EQ(routeOf(*s, {"GET", "/", {{"host", "orders:9191"}}}), "a");
  EXPECT_EQ(routeOf(*s, {"GET", "/", {{"host", "ordersx:9191"}}}), "b");
  // A configured port must be asked for.
  EXPECT_EQ(routeOf(*s, {"GET", "/", {{"host", "users:8080"}}}), "c");
  EXPECT_EQ(routeOf(*s, {"GET", "/", {{"host", "users"}}}), "b");
  EXPECT_EQ(hostWithoutPort("[::1]:80"), "[::1]");
  EXPECT_EQ(hostWithoutPort("[::1]"), "[::1]");
  EXPECT_EQ(hostWithoutPort("a.b"), "a.b");
}

TEST(Router, QueryParametersExactAndRegex) {
  auto s = load(R"y(      - {match: {prefix: /, query: {v: "2", q: {regex: "a b.*"}}}, cluster: a}
      - {match: {prefix: /, query: {v: "2"}}, cluster: c}
      - {match: {prefix: /}, cluster: b}
)y");
  ASSERT_TRUE(s);
  EXPECT_EQ(routeOfQuery(*s, {"GET", "/x?v=2&q=a%20bc", {}}), "a"); // decoded before matching
  EXPECT_EQ(routeOfQuery(*s, {"GET", "/x?q=a%20b&v=2", {}}), "a");  // any order
  EXPECT_EQ(routeOfQuery(*s, {"GET", "/x?v=2&q=ab", {}}), "c");
  EXPECT_EQ(routeOfQuery(*s, {"GET", "/x?v=2", {}}), "c");
  EXPECT_EQ(routeOfQuery(*s, {"GET", "/x?v=3&v=2", {}}), "b"); // the first occurrence counts
  EXPECT_EQ(routeOfQuery(*s, {"GET", "/x?vv=2", {}}), "b");
  EXPECT_EQ(routeOfQuery(*s, {"GET", "/x", {}}), "b");
  EXPECT_EQ(queryParam("a=1&b&c=", "b"), "");
  EXPECT_EQ(queryParam("a=1&b&c=", "c"), "");
  EXPECT_EQ(queryParam("a=1&b&c=", "d"), std::nullopt);
  EXPECT_EQ(percentDecode("%41%zz%4"), "A%zz%4"); // malformed escapes stay as they are
}

TEST(Router, RedirectLocation) {
  auto s = load(R"y(      - {match: {path: /old}, redirect: {path: /new, status: 301}}
      - {match: {prefix: /api/}, redirect: {prefix_rewrite: /v2/}}
      - {match: {prefix: /secure}, redirect: {scheme: https}}
      - {match: {prefix: /moved}, redirect: {host: other.example, port: 8443, status: 308}}
      - {match: {prefix: /}, cluster: b}
)y");
  ASSERT_TRUE(s);
  const auto& routes = s->listeners[0].routes;
  EXPECT_EQ(routes[0].redirect->status, 301);
  EXPECT_EQ(routes[1].redirect->status, 302); // the default
  EXPECT_EQ(redirectLocation(routes[0], "shop.example:8080", "/old", "a=1"),
            "http://shop.example:8080/new?a=1");
  EXPECT_EQ(redirectLocation(routes[1], "shop.example", "/api/users/1", ""),
            "http://shop.example/v2/users/1");
  // A changed scheme drops the request's port (the scheme's default applies).
  EXPECT_EQ(redirectLocation(routes[2], "shop.example:8080", "/secure/x", ""),
            "https://shop.example/secure/x");
  EXPECT_EQ(redirectLocation(routes[3], "shop.example:8080", "/moved", ""),
            "http://other.example:8443/moved");
  EXPECT_EQ(routeOfQuery(*s, {"GET", "/old", {}}), "redirect");
}

TEST(Router, RedirectAndHeaderEditErrors) {
  auto err = [](std::string_view routes) {
    std::string yaml = "clusters:\n  - {name: a, endpoints: [127.0.0.1:8081]}\n"
                       "listeners:\n  - name: web\n    address: 127.0.0.1:0\n    routes:\n";
    yaml += routes;
    auto r = loadConfigString(yaml, "r.yaml");
    return r.ok() ? std::string("ok") : r.error().message();
  };
  auto expectErr = [&](std::string_view routes, std::string_view want) {
    const std::string got = err(routes);
    EXPECT_NE(got.find(want), std::string::npos) << got;
  };
  expectErr("      - {match: {prefix: /}, redirect: {path: /x}, cluster: a}\n",
            "listeners[0].routes[0].cluster: not allowed with redirect");
  expectErr("      - {match: {prefix: /}, redirect: {status: 200}}\n",
            "redirect.status: expected an integer from 300 to 399, got \"200\"");
  expectErr("      - {match: {prefix: /}, redirect: {status: 304}}\n",
            "must be 301, 302, 303, 307 or 308, got 304");
  expectErr("      - {match: {prefix: /}, redirect: {path: /a, prefix_rewrite: /b}}\n",
            "set either path or prefix_rewrite, not both");
  expectErr("      - {match: {regex: /a.*}, redirect: {prefix_rewrite: /b}}\n",
            "a regex match has no prefix to replace");
  expectErr("      - {match: {prefix: /}, redirect: {scheme: ftp}}\n",
            "redirect.scheme: must be http or https, got \"ftp\"");
  expectErr("      - {match: {prefix: /, headers: {x: {regex: \"(\"}}}, cluster: a}\n",
            "match.headers.x.regex: invalid regex");
  expectErr("      - {match: {prefix: /, query: {\"a&b\": x}}, cluster: a}\n",
            "a query parameter name has 1 to 256 characters");
  expectErr("      - {match: {prefix: /}, cluster: a, request_headers_to_add: {x-a: 1},\n"
            "         request_headers_to_remove: [X-A]}\n",
            "header \"x-a\" is also added by this route");
  EXPECT_EQ(err("      - {match: {prefix: /}, cluster: a, request_headers_to_append: {x-a: 1},\n"
                "         request_headers_to_remove: [x-b]}\n"),
            "ok");
}

TEST(Router, NewRouteKeysRoundTripThroughJson) {
  auto s = load(
      R"y(      - match: {prefix: /, headers: {x-u: {regex: "a.*"}, x-v: "1"}, query: {p: "1", q: {regex: "z+"}}}
        cluster: a
        request_headers_to_add: {x-set: "1"}
        request_headers_to_append: {x-add: "2"}
        request_headers_to_remove: [x-gone]
      - {match: {path: /old}, redirect: {scheme: https, host: h.example, port: 444, path: /n, status: 307}}
)y");
  ASSERT_TRUE(s);
  // (The JSON form lists matchers by name: the YAML above does too, so the vectors compare.)
  auto again = loadConfigString(toJson(*s).dump(), "router.yaml");
  ASSERT_TRUE(again.ok()) << again.error().message();
  const auto& a = (*again)->listeners[0].routes;
  const auto& b = s->listeners[0].routes;
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].match, b[i].match) << i;
    EXPECT_EQ(a[i].redirect, b[i].redirect) << i;
    EXPECT_EQ(a[i].request_headers_to_add, b[i].request_headers_to_add) << i;
    EXPECT_EQ(a[i].request_headers_to_append, b[i].request_headers_to_append) << i;
    EXPECT_EQ(a[i].request_headers_to_remove, b[i].request_headers_to_remove) << i;
    EXPECT_EQ(a[i], b[i]) << i;
  }
  EXPECT_EQ(toJson(**again), toJson(*s));
}

} // namespace
} // namespace trellis::proxy
