#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/units.h"
#include "proxy/config.h"
#include "proxy/lb/load_balancer.h"

// The mesh's resource documents as immutable plain data: what `trellis apply` reads, the server
// stores and compiles into proxy configuration. Parsing and validation live in manifest.h; the
// schema, defaults and limits are documented in docs/resources.md.

namespace trellis::manifest {

// The index of each kind is its index in Resource::spec.
enum class Kind { kHttpRoute, kTrafficPolicy, kService };
const char* kindName(Kind k);   // "HTTPRoute", "TrafficPolicy", "Service"
const char* apiVersion(Kind k); // "gateway.networking.k8s.io/v1", "trellis.dev/v1alpha1", "v1"
// A kind as a person types it on the command line (`trellis get routes`), as kubectl accepts
// it: the kind name in any case, its plural, or a short name (httproute, httproutes, route,
// routes; trafficpolicy, trafficpolicies, policy, policies, tp; service, services, svc).
std::optional<Kind> parseKind(std::string_view text);

struct ObjectMeta {
  std::string name;
  std::string namespace_name = "default";
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;

  bool operator==(const ObjectMeta&) const = default;
};

// What makes a resource unique: applying a resource with the same identity replaces it.
struct ResourceId {
  Kind kind = Kind::kHttpRoute;
  std::string namespace_name;
  std::string name;

  std::string toString() const; // `HTTPRoute default/checkout`
  auto operator<=>(const ResourceId&) const = default;
};

// Annotations of one resource, keys and values together (Kubernetes' limit).
constexpr size_t kMaxAnnotationBytes = 256 * 1024;

// ---- HTTPRoute (gateway.networking.k8s.io/v1) ----------------------------------------------

// The Gateway API's own limits (its CRD validation), named.
constexpr size_t kMaxParentRefs = 32;
constexpr size_t kMaxHostnames = 16;
constexpr size_t kMaxRules = 16;
constexpr size_t kMaxMatchesPerRule = 64;
constexpr size_t kMaxMatchesPerRoute = 128; // all rules together
constexpr size_t kMaxHeaderMatches = 16;    // per match
constexpr size_t kMaxQueryParamMatches = 16;
constexpr size_t kMaxFiltersPerRule = 16;
constexpr size_t kMaxHeaderModifications = 16; // each of set, add and remove
constexpr size_t kMaxBackendRefs = 16;
constexpr uint32_t kMaxBackendWeight = 1000000;
constexpr size_t kMaxPathLength = 1024; // path match values and redirect paths
constexpr size_t kMaxHostnameLength = 253;
constexpr size_t kMaxHeaderNameLength = 256; // also query parameter names
constexpr size_t kMaxHeaderValueLength = 4096;
constexpr size_t kMaxQueryParamValueLength = 1024;

enum class ParentKind { kService, kGateway };

// What a route attaches to: a Service (a mesh route: it applies to traffic sent to that
// service) or a trellis gateway (an edge route).
struct ParentRef {
  ParentKind kind = ParentKind::kGateway;
  std::string namespace_name; // the route's namespace when not given
  std::string name;
  std::optional<uint16_t> port; // only this port of the parent; none = all ports

  bool operator==(const ParentRef&) const = default;
};

enum class PathMatchType { kExact, kPathPrefix, kRegularExpression };
enum class ValueMatchType { kExact, kRegularExpression }; // headers and query parameters
const char* pathMatchTypeName(PathMatchType t);           // "Exact", "PathPrefix", ...
const char* valueMatchTypeName(ValueMatchType t);

// Compiled regexes match the whole value and use the proxy's grammar (ECMAScript, linear-time
// matcher); equality compares the sources only.
struct PathMatch {
  PathMatchType type = PathMatchType::kPathPrefix;
  std::string value = "/";
  std::shared_ptr<const std::regex> regex; // kRegularExpression only

  bool operator==(const PathMatch& o) const { return type == o.type && value == o.value; }
};

struct HeaderMatch {
  ValueMatchType type = ValueMatchType::kExact;
  std::string name; // lowercase: header names are case-insensitive
  std::string value;
  std::shared_ptr<const std::regex> regex;

  bool operator==(const HeaderMatch& o) const {
    return type == o.type && name == o.name && value == o.value;
  }
};

struct QueryParamMatch {
  ValueMatchType type = ValueMatchType::kExact;
  std::string name; // case-sensitive, as the Gateway API says
  std::string value;
  std::shared_ptr<const std::regex> regex;

  bool operator==(const QueryParamMatch& o) const {
    return type == o.type && name == o.name && value == o.value;
  }
};

// All given conditions must hold.
struct HttpRouteMatch {
  PathMatch path;
  std::vector<HeaderMatch> headers;
  std::vector<QueryParamMatch> query_params;
  std::string method; // empty = any method

  bool operator==(const HttpRouteMatch&) const = default;
};

struct RequestHeaderModifier {
  std::vector<proxy::HeaderValue> set; // replace the header's value(s)
  std::vector<proxy::HeaderValue> add; // append a value
  std::vector<std::string> remove;     // lowercase names

  bool operator==(const RequestHeaderModifier&) const = default;
};

enum class RedirectPathType { kReplaceFullPath, kReplacePrefixMatch };

struct RedirectPath {
  RedirectPathType type = RedirectPathType::kReplaceFullPath;
  std::string value;

  bool operator==(const RedirectPath&) const = default;
};

// Fields left empty keep the request's own value (scheme, host, path, port).
struct RequestRedirect {
  std::string scheme; // "", "http" or "https"
  std::string hostname;
  std::optional<RedirectPath> path;
  std::optional<uint16_t> port;
  uint16_t status_code = 302;

  bool operator==(const RequestRedirect&) const = default;
};

using HttpRouteFilter = std::variant<RequestHeaderModifier, RequestRedirect>;

// A backend Service in the route's own namespace.
struct BackendRef {
  std::string name;
  uint16_t port = 0;
  uint32_t weight = 1; // 0..kMaxBackendWeight; relative to the rule's other backends

  bool operator==(const BackendRef&) const = default;
};

// 0 means no timeout (the Gateway API's "0s").
struct RouteTimeouts {
  std::optional<Duration> request;         // the whole request, retries included
  std::optional<Duration> backend_request; // one try to a backend

  bool operator==(const RouteTimeouts&) const = default;
};

struct HttpRouteRule {
  std::vector<HttpRouteMatch> matches; // any of them; never empty (default PathPrefix "/")
  std::vector<HttpRouteFilter> filters;
  std::vector<BackendRef> backend_refs;
  RouteTimeouts timeouts;

  bool operator==(const HttpRouteRule&) const = default;
};

struct HttpRoute {
  std::vector<ParentRef> parent_refs; // at least one
  std::vector<std::string> hostnames; // lowercase; "*.example.com" wildcards; empty = any
  std::vector<HttpRouteRule> rules;   // never empty

  bool operator==(const HttpRoute&) const = default;
};

// ---- TrafficPolicy (trellis.dev/v1alpha1) ----------------------------------------------------

// The load balancer for a destination service. `config.panic_threshold` is not used here:
// TrafficPolicy::panic_threshold carries it.
struct LoadBalancer {
  proxy::LbConfig config;
  std::optional<proxy::HashPolicy> hash_on; // set exactly when the policy hashes

  bool operator==(const LoadBalancer&) const = default;
};

// Per destination service: how callers reach it. Every knob is optional: an absent one means
// the mesh's default (chosen by the server); a present one is complete, with the proxy's
// defaults (docs/proxy.md) filled in for keys not given.
struct TrafficPolicy {
  std::string target_service; // a Service in the policy's namespace
  std::optional<LoadBalancer> load_balancer;
  std::optional<uint32_t> panic_threshold; // percent 0..100
  std::optional<proxy::RetryPolicy> retries;
  std::optional<Duration> timeout; // whole request; 0 = none
  std::optional<Duration> connect_timeout;
  std::optional<proxy::OutlierDetection> outlier_detection;
  std::optional<proxy::CircuitBreakers> circuit_breakers;
  std::optional<proxy::HealthCheck> health_check;
  std::optional<proxy::RateLimit> rate_limit;
  std::optional<proxy::FaultConfig> fault;

  bool operator==(const TrafficPolicy&) const = default;
};

// ---- Service (v1) ------------------------------------------------------------------------------

constexpr size_t kMaxServicePorts = 100;

struct ServicePort {
  std::string name; // may be empty when the service has one port
  uint16_t port = 0;
  // Where the instances listen: a number, or the name of a workload port. Defaults to `port`.
  uint16_t target_port = 0; // 0 when target_port_name is set
  std::string target_port_name;
  std::string app_protocol;                         // as written (may be empty)
  proxy::Protocol protocol = proxy::Protocol::kTcp; // the mesh protocol, see selectProtocol

  bool operator==(const ServicePort&) const = default;
};

struct Service {
  std::map<std::string, std::string> selector; // label key -> value; may be empty
  std::vector<ServicePort> ports;              // at least one

  bool operator==(const Service&) const = default;
};

// ---- any resource --------------------------------------------------------------------------

struct Resource {
  ObjectMeta metadata;
  std::variant<HttpRoute, TrafficPolicy, Service> spec;

  Kind kind() const { return static_cast<Kind>(spec.index()); }
  ResourceId id() const { return {kind(), metadata.namespace_name, metadata.name}; }

  bool operator==(const Resource&) const = default;
};

} // namespace trellis::manifest
