#include <regex>

#include <gtest/gtest.h>

#include "manifest/helpers.h"
#include "manifest/kinds.h"
#include "manifest/manifest.h"

namespace trellis::manifest {
namespace {

using namespace std::chrono_literals;
using testing::expectRoundTrip;
using testing::loadError;
using testing::loadOne;

constexpr std::string_view kFull = R"(apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: checkout
  namespace: shop
  labels: {app.kubernetes.io/name: checkout, tier: web}
  annotations: {example.com/owner: "team a"}
spec:
  parentRefs:
    - {group: "", kind: Service, name: checkout, port: 8080}
    - {name: edge, namespace: infra}
  hostnames: [shop.example.com, "*.shop.example.com"]
  rules:
    - matches:
        - path: {type: PathPrefix, value: /api}
          headers:
            - {name: X-Canary, value: "1"}
            - {type: RegularExpression, name: user-agent, value: ".*Mobile.*"}
          queryParams:
            - {name: debug, value: "true"}
          method: GET
        - path: {type: Exact, value: /health}
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: X-Env, value: prod}]
            add: [{name: x-trace, value: "on"}]
            remove: [X-Internal]
      backendRefs:
        - {name: checkout-v1, port: 8080, weight: 90}
        - {name: checkout-v2, port: 8080, weight: 10}
        - {name: checkout-v3, port: 8080, weight: 0}
      timeouts: {request: 10s, backendRequest: 500ms}
    - matches:
        - path: {type: RegularExpression, value: "/users/[0-9]+"}
      backendRefs:
        - {name: users, port: 80}
    - matches:
        - path: {type: PathPrefix, value: /old}
      filters:
        - type: RequestRedirect
          requestRedirect:
            scheme: https
            hostname: new.example.com
            path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
            port: 8443
            statusCode: 301
)";

TEST(HttpRoute, ParsesEveryField) {
  const Resource r = loadOne(kFull);
  EXPECT_EQ(r.kind(), Kind::kHttpRoute);
  EXPECT_EQ(r.id().toString(), "HTTPRoute shop/checkout");
  EXPECT_EQ(r.metadata.labels.at("app.kubernetes.io/name"), "checkout");
  EXPECT_EQ(r.metadata.annotations.at("example.com/owner"), "team a");
  const auto& route = std::get<HttpRoute>(r.spec);

  ASSERT_EQ(route.parent_refs.size(), 2u);
  EXPECT_EQ(route.parent_refs[0].kind, ParentKind::kService);
  EXPECT_EQ(route.parent_refs[0].name, "checkout");
  EXPECT_EQ(route.parent_refs[0].namespace_name, "shop"); // the route's
  EXPECT_EQ(route.parent_refs[0].port, 8080);
  EXPECT_EQ(route.parent_refs[1].kind, ParentKind::kGateway); // the Gateway API default
  EXPECT_EQ(route.parent_refs[1].namespace_name, "infra");
  EXPECT_FALSE(route.parent_refs[1].port);
  EXPECT_EQ(route.hostnames, (std::vector<std::string>{"shop.example.com", "*.shop.example.com"}));

  ASSERT_EQ(route.rules.size(), 3u);
  const HttpRouteRule& r0 = route.rules[0];
  ASSERT_EQ(r0.matches.size(), 2u);
  const HttpRouteMatch& m = r0.matches[0];
  EXPECT_EQ(m.path.type, PathMatchType::kPathPrefix);
  EXPECT_EQ(m.path.value, "/api");
  ASSERT_EQ(m.headers.size(), 2u);
  EXPECT_EQ(m.headers[0].name, "x-canary"); // lowercased
  EXPECT_EQ(m.headers[0].type, ValueMatchType::kExact);
  EXPECT_EQ(m.headers[0].value, "1");
  EXPECT_EQ(m.headers[1].type, ValueMatchType::kRegularExpression);
  ASSERT_TRUE(m.headers[1].regex);
  EXPECT_TRUE(std::regex_match("Foo Mobile Bar", *m.headers[1].regex));
  EXPECT_FALSE(std::regex_match("Desktop", *m.headers[1].regex));
  ASSERT_EQ(m.query_params.size(), 1u);
  EXPECT_EQ(m.query_params[0].name, "debug");
  EXPECT_EQ(m.query_params[0].value, "true"); // quoted: a string
  EXPECT_EQ(m.method, "GET");
  EXPECT_EQ(r0.matches[1].path.type, PathMatchType::kExact);
  EXPECT_TRUE(r0.matches[1].method.empty());

  ASSERT_EQ(r0.filters.size(), 1u);
  const auto& mod = std::get<RequestHeaderModifier>(r0.filters[0]);
  EXPECT_EQ(mod.set, (std::vector<proxy::HeaderValue>{{"x-env", "prod"}}));
  EXPECT_EQ(mod.add, (std::vector<proxy::HeaderValue>{{"x-trace", "on"}}));
  EXPECT_EQ(mod.remove, (std::vector<std::string>{"x-internal"}));

  ASSERT_EQ(r0.backend_refs.size(), 3u);
  EXPECT_EQ(r0.backend_refs[0], (BackendRef{"checkout-v1", 8080, 90}));
  EXPECT_EQ(r0.backend_refs[2].weight, 0u);
  EXPECT_EQ(r0.timeouts.request, Duration(10s));
  EXPECT_EQ(r0.timeouts.backend_request, Duration(500ms));

  const PathMatch& re = route.rules[1].matches[0].path;
  ASSERT_TRUE(re.regex);
  EXPECT_TRUE(std::regex_match("/users/42", *re.regex));
  EXPECT_FALSE(std::regex_match("/users/42/orders", *re.regex)); // whole path
  EXPECT_EQ(route.rules[1].backend_refs[0].weight, 1u);          // default weight
  EXPECT_FALSE(route.rules[1].timeouts.request);

  const auto& redirect = std::get<RequestRedirect>(route.rules[2].filters[0]);
  EXPECT_EQ(redirect.scheme, "https");
  EXPECT_EQ(redirect.hostname, "new.example.com");
  ASSERT_TRUE(redirect.path);
  EXPECT_EQ(redirect.path->type, RedirectPathType::kReplacePrefixMatch);
  EXPECT_EQ(redirect.path->value, "/new");
  EXPECT_EQ(redirect.port, 8443);
  EXPECT_EQ(redirect.status_code, 301);

  expectRoundTrip(r);
}

TEST(HttpRoute, GatewayApiDefaults) {
  const Resource r = loadOne(R"(apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: minimal}
spec:
  parentRefs: [{name: edge}]
)");
  EXPECT_EQ(r.metadata.namespace_name, "default");
  const auto& route = std::get<HttpRoute>(r.spec);
  // No rules: one rule matching PathPrefix "/" (and, without backends, answering 500).
  ASSERT_EQ(route.rules.size(), 1u);
  ASSERT_EQ(route.rules[0].matches.size(), 1u);
  EXPECT_EQ(route.rules[0].matches[0].path.type, PathMatchType::kPathPrefix);
  EXPECT_EQ(route.rules[0].matches[0].path.value, "/");
  EXPECT_TRUE(route.rules[0].backend_refs.empty());
  EXPECT_EQ(route.parent_refs[0].kind, ParentKind::kGateway);
  EXPECT_EQ(route.parent_refs[0].namespace_name, "default");
  expectRoundTrip(r);

  const Resource r2 = loadOne(R"(apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: defaults}
spec:
  parentRefs: [{group: core, kind: Service, name: api}]
  rules:
    - backendRefs: [{name: api, port: 80}]
    - matches: [{path: {type: Exact}}, {headers: [{name: x, value: y}]}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: example.com}}]
)");
  const auto& route2 = std::get<HttpRoute>(r2.spec);
  EXPECT_EQ(route2.parent_refs[0].kind, ParentKind::kService); // "core" is the core group
  EXPECT_EQ(route2.rules[0].matches.size(), 1u);               // a rule without matches
  EXPECT_EQ(route2.rules[0].matches[0].path.value, "/");
  EXPECT_EQ(route2.rules[1].matches[0].path.type, PathMatchType::kExact);
  EXPECT_EQ(route2.rules[1].matches[0].path.value, "/"); // value defaults to "/"
  EXPECT_EQ(route2.rules[1].matches[1].path.type, PathMatchType::kPathPrefix);
  const auto& redirect = std::get<RequestRedirect>(route2.rules[1].filters[0]);
  EXPECT_EQ(redirect.status_code, 302);
  EXPECT_TRUE(redirect.scheme.empty());
  EXPECT_FALSE(redirect.path);
  expectRoundTrip(r2);
}

// The brief's example, word for word: file, document index, kind and name, field path.
TEST(HttpRoute, ErrorNamesFileDocumentAndField) {
  auto r = loadString(R"(apiVersion: v1
kind: Service
metadata: {name: checkout}
spec: {ports: [{port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: checkout}
spec:
  parentRefs: [{kind: Service, group: "", name: checkout}]
  rules:
    - backendRefs:
        - {name: checkout, port: 80}
        - {name: checkout-v2, port: 80, weight: -3}
)",
                      "routes.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "routes.yaml: document 2 (HTTPRoute \"checkout\"): "
                                 "spec.rules[0].backendRefs[1].weight: must be 0..1000000, "
                                 "got -3");
}

std::string routeWith(std::string_view spec_tail) {
  return std::string(R"(apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{kind: Service, group: "", name: api}]
)") + std::string(spec_tail);
}

struct ErrorCase {
  const char* yaml; // appended to a route's spec
  const char* expected;
};

TEST(HttpRoute, RejectsInvalidSpecs) {
  const ErrorCase cases[] = {
      {"  rules: [{backendRef: [{name: a, port: 1}]}]\n",
       "spec.rules[0].backendRef: unknown field (did you mean \"backendRefs\"?)"},
      {"  rules: [{backendRefs: [{name: a, port: 1, weight: 1000001}]}]\n",
       "spec.rules[0].backendRefs[0].weight: must be 0..1000000, got 1000001"},
      {"  rules: [{backendRefs: [{name: a, port: \"80\"}]}]\n",
       "spec.rules[0].backendRefs[0].port: expected an integer, got a string \"80\""},
      {"  rules: [{backendRefs: [{name: a}]}]\n",
       "spec.rules[0].backendRefs[0].port: required for a Service backend"},
      {"  rules: [{backendRefs: [{name: a, port: 1}, {name: a, port: 1}]}]\n",
       "spec.rules[0].backendRefs[1]: backend a:1 is listed twice"},
      {"  rules: [{backendRefs: [{name: a, port: 1, namespace: other}]}]\n",
       "spec.rules[0].backendRefs[0].namespace: backends must be in the route's namespace"},
      {"  rules: [{backendRefs: [{kind: Pod, name: a, port: 1}]}]\n",
       "spec.rules[0].backendRefs[0]: unsupported backend Pod"},
      {"  rules: [{backendRefs: [{name: Api, port: 1}]}]\n",
       "spec.rules[0].backendRefs[0].name: invalid Service name \"Api\""},
      {"  rules: [{matches: [{path: {type: Prefix, value: /}}]}]\n",
       "spec.rules[0].matches[0].path.type: unknown type \"Prefix\" (expected Exact, PathPrefix "
       "or RegularExpression)"},
      {"  rules: [{matches: [{path: {value: api}}]}]\n",
       "spec.rules[0].matches[0].path.value: must be an absolute path starting with '/'"},
      {"  rules: [{matches: [{path: {value: /a//b}}]}]\n",
       "spec.rules[0].matches[0].path.value: must not contain \"//\""},
      {"  rules: [{matches: [{path: {type: Exact, value: /a/..}}]}]\n",
       "must not end with \"/.\" or \"/..\""},
      {"  rules: [{matches: [{path: {value: /a%2Fb}}]}]\n", "must not contain \"%2F\""},
      {"  rules: [{matches: [{path: {value: \"/a b\"}}]}]\n", "invalid character ' '"},
      {"  rules: [{matches: [{path: {type: RegularExpression, value: \"/(a\"}}]}]\n",
       "spec.rules[0].matches[0].path.value: invalid regular expression \"/(a\""},
      {"  rules: [{matches: [{path: {type: RegularExpression, value: \"/(a)\\\\1\"}}]}]\n",
       "spec.rules[0].matches[0].path.value: invalid regular expression"}, // back-reference
      {"  rules: [{matches: [{method: get}]}]\n",
       "spec.rules[0].matches[0].method: unknown method \"get\""},
      {"  rules: [{matches: [{headers: [{name: X-A, value: 1}, {name: x-a, value: 2}]}]}]\n",
       "spec.rules[0].matches[0].headers[0].value: expected a string, got an integer 1 (quote it"},
      {"  rules: [{matches: [{headers: [{name: X-A, value: a}, {name: x-a, value: b}]}]}]\n",
       "spec.rules[0].matches[0].headers[1].name: header \"x-a\" is matched twice"},
      {"  rules: [{matches: [{headers: [{name: \"x a\", value: a}]}]}]\n",
       "spec.rules[0].matches[0].headers[0].name: invalid header name \"x a\""},
      {"  rules: [{matches: [{headers: [{name: x, value: \"a\\r\\nb\"}]}]}]\n",
       "headers[0].value: contains a control character"},
      {"  rules: [{matches: [{headers: [{name: x}]}]}]\n",
       "spec.rules[0].matches[0].headers[0].value: required field is missing"},
      {"  rules: [{matches: [{queryParams: [{type: Prefix, name: a, value: b}]}]}]\n",
       "spec.rules[0].matches[0].queryParams[0].type: unknown type \"Prefix\""},
      {"  rules: [{matches: [{queryParams: [{name: a, value: b}, {name: a, value: c}]}]}]\n",
       "queryParams[1].name: query parameter \"a\" is matched twice"},
      {"  rules: [{filters: [{type: URLRewrite, urlRewrite: {}}]}]\n",
       "spec.rules[0].filters[0].type: filter type URLRewrite is not supported by trellis"},
      {"  rules: [{filters: [{type: Rewrite}]}]\n",
       "spec.rules[0].filters[0].type: unknown filter type \"Rewrite\""},
      {"  rules: [{filters: [{type: RequestHeaderModifier}]}]\n",
       "spec.rules[0].filters[0].requestHeaderModifier: required when type is "
       "RequestHeaderModifier"},
      {"  rules: [{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {}, "
       "requestRedirect: {}}]}]\n",
       "spec.rules[0].filters[0].requestRedirect: must not be set when type is "
       "RequestHeaderModifier"},
      {"  rules: [{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: "
       "Host, value: x}]}}]}]\n",
       "requestHeaderModifier.set[0].name: header \"host\" is managed by the proxy"},
      {"  rules: [{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: "
       "a, value: x}, {name: A, value: y}]}}]}]\n",
       "requestHeaderModifier.add[1].name: header \"a\" is listed twice"},
      {"  rules: [{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {}}, {type: "
       "RequestHeaderModifier, requestHeaderModifier: {}}]}]\n",
       "spec.rules[0].filters[1]: a RequestHeaderModifier filter is already given"},
      {"  rules: [{filters: [{type: RequestRedirect, requestRedirect: {statusCode: 307}}]}]\n",
       "spec.rules[0].filters[0].requestRedirect.statusCode: must be 301 or 302, got 307"},
      {"  rules: [{filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp}}]}]\n",
       "requestRedirect.scheme: unknown scheme \"ftp\""},
      {"  rules: [{filters: [{type: RequestRedirect, requestRedirect: {hostname: "
       "\"*.example.com\"}}]}]\n",
       "requestRedirect.hostname: invalid hostname \"*.example.com\""},
      {"  rules: [{filters: [{type: RequestRedirect, requestRedirect: {path: {type: "
       "ReplaceFullPath, replacePrefixMatch: /x}}}]}]\n",
       "requestRedirect.path.replacePrefixMatch: must not be set when type is ReplaceFullPath"},
      {"  rules: [{filters: [{type: RequestRedirect, requestRedirect: {path: {type: "
       "ReplaceFullPath}}}]}]\n",
       "requestRedirect.path.replaceFullPath: required when type is ReplaceFullPath"},
      {"  rules: [{filters: [{type: RequestRedirect, requestRedirect: {}}], backendRefs: [{name: "
       "a, port: 1}]}]\n",
       "spec.rules[0].filters[0]: a RequestRedirect filter must not be used together with "
       "backendRefs"},
      {"  rules: [{matches: [{path: {type: Exact, value: /a}}], filters: [{type: RequestRedirect, "
       "requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]}]\n",
       "spec.rules[0].filters[0].requestRedirect.path: ReplacePrefixMatch needs exactly one "
       "match, of type PathPrefix"},
      {"  rules: [{timeouts: {request: 1.5s}}]\n",
       "spec.rules[0].timeouts.request: invalid duration \"1.5s\""},
      {"  rules: [{timeouts: {request: 10}}]\n",
       "spec.rules[0].timeouts.request: expected a duration such as \"10s\" or \"500ms\", got "
       "an integer"},
      {"  rules: [{timeouts: {request: 1s, backendRequest: 2s}}]\n",
       "spec.rules[0].timeouts.backendRequest: 2s is longer than the request timeout 1s"},
      {"  rules: [{timeouts: {request: 1s, backendRequest: 0s}}]\n",
       "spec.rules[0].timeouts.backendRequest: 0s (no timeout) is longer than the request "
       "timeout 1s"},
      {"  rules: [{timeouts: {requests: 1s}}]\n",
       "spec.rules[0].timeouts.requests: unknown field (did you mean \"request\"?)"},
      {"  hostnames: [Shop.example.com]\n",
       "spec.hostnames[0]: invalid hostname \"Shop.example.com\""},
      {"  hostnames: [10.0.0.1]\n", "spec.hostnames[0]: invalid hostname \"10.0.0.1\": IP "
                                    "addresses are not allowed"},
      {"  hostnames: [\"*\"]\n", "spec.hostnames[0]: invalid hostname \"*\""},
      {"  rules: {}\n", "spec.rules: expected a list, got a mapping"},
      {"  hostname: [a]\n", "spec.hostname: unknown field (did you mean \"hostnames\"?)"},
  };
  for (const ErrorCase& c : cases) {
    const std::string msg = loadError(routeWith(c.yaml));
    EXPECT_NE(msg.find(c.expected), std::string::npos)
        << "got:      " << msg << "\nexpected: " << c.expected;
    EXPECT_EQ(msg.rfind("test.yaml: document 1 (HTTPRoute \"r\"): spec", 0), 0u) << msg;
  }
}

TEST(HttpRoute, RejectsBadParentRefs) {
  auto route = [](std::string_view parents) {
    return fmt::format(R"(apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r}}
spec:
  parentRefs: {}
)",
                       parents);
  };
  const ErrorCase cases[] = {
      {"[]", "spec.parentRefs: must not be empty"},
      {"[{kind: Service, name: api}]",
       "spec.parentRefs[0]: unsupported parent Service (group \"gateway.networking.k8s.io\")"},
      {"[{kind: Mesh, group: \"\", name: api}]", "spec.parentRefs[0]: unsupported parent Mesh"},
      {"[{name: edge, sectionName: http}]", "spec.parentRefs[0].sectionName: not supported"},
      {"[{name: edge, port: 0}]", "spec.parentRefs[0].port: must be 1..65535, got 0"},
      {"[{name: edge}, {name: edge}]", "spec.parentRefs[1]: the same parent as parentRefs[0]"},
      {"[{kind: Service, group: \"\", name: 9api}]",
       "spec.parentRefs[0].name: invalid Service name \"9api\""},
      {"[{namespace: Infra, name: edge}]", "spec.parentRefs[0].namespace: invalid namespace"},
      {"[{}]", "spec.parentRefs[0].name: required field is missing"},
  };
  for (const ErrorCase& c : cases) {
    const std::string msg = loadError(route(c.yaml));
    EXPECT_NE(msg.find(c.expected), std::string::npos)
        << "got:      " << msg << "\nexpected: " << c.expected;
  }
  EXPECT_NE(loadError(R"(apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec: {}
)")
                .find("spec.parentRefs: required"),
            std::string::npos);
  // The same parent on two ports is two attachments, which is allowed.
  loadOne(route("[{name: edge, port: 80}, {name: edge, port: 443}]"));
}

TEST(HttpRoute, EnforcesGatewayApiLimits) {
  auto repeat = [](std::string_view item, size_t n) {
    std::string out = "[";
    for (size_t i = 0; i < n; ++i)
      out += fmt::format("{}{}", i ? ", " : "", fmt::format(fmt::runtime(item), i + 1));
    return out + "]";
  };
  // Exactly at each limit loads; one past fails.
  loadOne(routeWith(fmt::format("  rules: {}\n", repeat("{{backendRefs: [{{name: a, port: "
                                                        "{}}}]}}",
                                                        kMaxRules))));
  EXPECT_NE(loadError(routeWith(fmt::format("  rules: {}\n", repeat("{{}}", kMaxRules + 1))))
                .find("spec.rules: has 17 entries, at most 16 allowed"),
            std::string::npos);
  EXPECT_NE(loadError(routeWith(fmt::format("  rules: [{{matches: {}}}]\n",
                                            repeat("{{}}", kMaxMatchesPerRule + 1))))
                .find("spec.rules[0].matches: has 65 entries, at most 64 allowed"),
            std::string::npos);
  // 3 rules of 64 matches: each rule within its limit, the route over 128 in all.
  const std::string rule = fmt::format("{{matches: {}}}", repeat("{{}}", kMaxMatchesPerRule));
  loadOne(routeWith(fmt::format("  rules: [{}, {}]\n", rule, rule)));
  EXPECT_NE(loadError(routeWith(fmt::format("  rules: [{}, {}, {}]\n", rule, rule, rule)))
                .find("spec.rules: 192 matches in all, at most 128 allowed per route"),
            std::string::npos);
  EXPECT_NE(loadError(routeWith(fmt::format("  rules: [{{backendRefs: {}}}]\n",
                                            repeat("{{name: a, port: {}}}", kMaxBackendRefs + 1))))
                .find("backendRefs: has 17 entries, at most 16 allowed"),
            std::string::npos);
  EXPECT_NE(loadError(routeWith(fmt::format("  hostnames: {}\n",
                                            repeat("h{}.example.com", kMaxHostnames + 1))))
                .find("spec.hostnames: has 17 entries, at most 16 allowed"),
            std::string::npos);
  EXPECT_NE(
      loadError(routeWith(fmt::format("  rules: [{{matches: [{{headers: {}}}]}}]\n",
                                      repeat("{{name: h{}, value: v}}", kMaxHeaderMatches + 1))))
          .find("headers: has 17 entries, at most 16 allowed"),
      std::string::npos);
  const std::string long_path = "/" + std::string(kMaxPathLength, 'a');
  EXPECT_NE(loadError(routeWith(fmt::format("  rules: [{{matches: [{{path: {{value: {}}}}}]}}]\n",
                                            long_path)))
                .find("path.value: is 1025 characters long, at most 1024 allowed"),
            std::string::npos);
}

TEST(HttpRoute, GatewayDurations) {
  using detail::formatGatewayDuration;
  using detail::parseGatewayDuration;
  EXPECT_EQ(*parseGatewayDuration("10s"), Duration(10s));
  EXPECT_EQ(*parseGatewayDuration("500ms"), Duration(500ms));
  EXPECT_EQ(*parseGatewayDuration("1h30m"), Duration(90min));
  EXPECT_EQ(*parseGatewayDuration("1h1m1s1ms"), Duration(1h + 1min + 1s + 1ms));
  EXPECT_EQ(*parseGatewayDuration("0s"), Duration(0));
  EXPECT_EQ(*parseGatewayDuration("99999ms"), Duration(99999ms));
  for (const char* bad :
       {"", "0", "10", "1.5s", "1d", "100000s", "1h1m1s1ms1s", "s", "-1s", "1us", "10 s"}) {
    EXPECT_FALSE(parseGatewayDuration(bad).ok()) << bad;
  }
  EXPECT_EQ(formatGatewayDuration(0s), "0s");
  EXPECT_EQ(formatGatewayDuration(90min), "1h30m");
  EXPECT_EQ(formatGatewayDuration(1500ms), "1s500ms");
  EXPECT_EQ(formatGatewayDuration(Duration(99999h)), "99999h");
  // Every formatted value parses back to itself.
  for (Duration d : {Duration(1ms), Duration(61s), Duration(25h + 59min + 59s + 999ms)})
    EXPECT_EQ(*parseGatewayDuration(formatGatewayDuration(d)), d);
}

} // namespace
} // namespace trellis::manifest
