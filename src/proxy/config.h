#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/chunked_vector.h"
#include "base/result.h"
#include "base/units.h"
#include "net/address.h"
#include "proxy/lb/load_balancer.h"

// The proxy's configuration as immutable plain data. A Snapshot is built once (from a file by
// loadConfigFile, later from the control plane's push), handed to workers as
// std::shared_ptr<const Snapshot> and never mutated; a reload builds a new one. The schema
// and every default are documented in docs/proxy.md.

namespace trellis::proxy {

enum class Protocol { kHttp, kTcp };
const char* protocolName(Protocol p); // "http", "tcp"

// ---- routes ------------------------------------------------------------------------------

// One request header a route requires. Names are lowercase; an empty value means the header
// must be present with any value, otherwise its value must equal `value` exactly. With
// `regex` set, `value` is the regular expression's source and must match the whole value.
struct HeaderMatcher {
  std::string name;
  std::string value;
  std::shared_ptr<const std::regex> regex = nullptr; // compiled once at load time

  bool operator==(const HeaderMatcher& o) const {
    return name == o.name && value == o.value && (regex == nullptr) == (o.regex == nullptr);
  }
};

// One query parameter a route requires: the first parameter of that name (case-sensitive),
// percent-decoded, equals `value` (or, with `regex`, matches it whole).
struct QueryMatcher {
  std::string name;
  std::string value;
  std::shared_ptr<const std::regex> regex;

  bool operator==(const QueryMatcher& o) const {
    return name == o.name && value == o.value && (regex == nullptr) == (o.regex == nullptr);
  }
};

enum class PathMatchKind { kPrefix, kExact, kRegex };
const char* pathMatchKindName(PathMatchKind k); // "prefix", "path", "regex" (the YAML keys)

// What a request must look like for a route to apply. All given conditions must hold.
struct RouteMatch {
  PathMatchKind kind = PathMatchKind::kPrefix;
  // The prefix, the exact path, or the regular expression's source (which must match the
  // whole path), according to `kind`.
  std::string path;
  // kRegex: compiled once at load time (ECMAScript grammar, linear-time matching).
  std::shared_ptr<const std::regex> regex;
  std::vector<std::string> methods;   // any of these (case-sensitive); empty = any method
  std::vector<HeaderMatcher> headers; // all of these
  std::vector<QueryMatcher> query;    // all of these

  // Compares everything but the compiled regex (its source is compared through `path`).
  bool operator==(const RouteMatch& o) const {
    return kind == o.kind && path == o.path && methods == o.methods && headers == o.headers &&
           query == o.query;
  }
};

struct WeightedCluster {
  std::string cluster;
  uint32_t weight = 1;      // 0 allowed (no traffic) as long as the route's total is > 0
  size_t cluster_index = 0; // into Snapshot::clusters, resolved at load time

  bool operator==(const WeightedCluster&) const = default;
};

// Which failures a retry policy retries. The defaults are what `on` means when omitted.
struct RetryOn {
  bool connect_failure = true;         // connecting to the endpoint failed or timed out
  bool refused_stream = true;          // HTTP/2 REFUSED_STREAM: the request was not processed
  bool reset = true;                   // the connection closed or reset before a response
  bool status_5xx = false;             // any 5xx response (includes the above)
  bool gateway_error = true;           // 502, 503 or 504 (includes connect failure and reset)
  bool retriable_status_codes = false; // a status listed in retriable_status_codes

  bool operator==(const RetryOn&) const = default;
};

struct RetryPolicy {
  uint32_t attempts = 0;       // retries after the first try (Istio's meaning); 0 = never retry
  Duration per_try_timeout{0}; // 0 = each try is bounded only by the route timeout
  RetryOn on;
  std::vector<uint16_t> retriable_status_codes;
  Duration backoff_base = std::chrono::milliseconds(25);
  Duration backoff_max = std::chrono::milliseconds(250);
  // Retries in flight may be at most this percent of active requests to the cluster, but
  // budget_min_concurrency retries are always allowed.
  uint32_t budget_percent = 20;
  uint32_t budget_min_concurrency = 3;
  bool retry_non_idempotent = false; // retry POST, PATCH, ... too

  bool operator==(const RetryPolicy&) const = default;
};

struct FaultDelay {
  double percent = 100; // of requests, 0..100
  Duration duration{0};

  bool operator==(const FaultDelay&) const = default;
};

struct FaultAbort {
  double percent = 100; // of requests, 0..100
  uint16_t status = 503;

  bool operator==(const FaultAbort&) const = default;
};

struct FaultConfig {
  std::optional<FaultDelay> delay;
  std::optional<FaultAbort> abort;

  bool operator==(const FaultConfig&) const = default;
};

// Token bucket: refilled at requests_per_second, holding at most burst tokens.
struct RateLimit {
  uint32_t requests_per_second = 0;
  uint32_t burst = 0;
  uint16_t status = 429; // answered when the bucket is empty

  bool operator==(const RateLimit&) const = default;
};

struct HeaderValue {
  std::string name; // lowercase
  std::string value;

  bool operator==(const HeaderValue&) const = default;
};

// A route that answers with a redirect instead of forwarding (the Gateway API's
// RequestRedirect). Location = scheme://host[:port]path[?query]; what is not set comes from
// the request: its scheme (http), its Host's name, and its port unless the scheme was changed
// (then the scheme's default port, left out).
struct Redirect {
  std::string scheme;                        // "" = the request's; "http" or "https"
  std::string host;                          // "" = the request's Host without its port
  std::optional<uint16_t> port;              // none = as above
  std::optional<std::string> path;           // the whole path replaced
  std::optional<std::string> prefix_rewrite; // the route's prefix (or exact path) replaced
  uint16_t status = 302;                     // 301, 302, 303, 307 or 308

  bool operator==(const Redirect&) const = default;
};

struct Route {
  std::string name; // optional label for logs and metrics; may be empty
  RouteMatch match;
  // Where matching requests go: one entry (weight 1) for `cluster:`, several for
  // `weighted_clusters:` (weighted = true). total_weight is their sum, always > 0.
  std::vector<WeightedCluster> clusters;
  bool weighted = false;
  uint64_t total_weight = 0;
  std::vector<HeaderValue> request_headers_to_add;    // replace the client's value(s)
  std::vector<HeaderValue> request_headers_to_append; // added beside the client's
  std::vector<std::string> request_headers_to_remove; // lowercase names
  std::optional<Redirect> redirect;                   // set: answer with it; clusters is then empty
  Duration timeout = std::chrono::seconds(15);        // whole request, all tries; 0 = none
  RetryPolicy retries;
  FaultConfig fault;
  std::optional<RateLimit> rate_limit;

  bool operator==(const Route&) const = default;
};

// ---- listeners -----------------------------------------------------------------------------

struct Listener {
  std::string name;
  net::SocketAddress address;
  Protocol protocol = Protocol::kHttp;
  std::vector<Route> routes; // http: tried in order, first match wins
  std::string cluster;       // tcp: where connections are forwarded
  size_t cluster_index = 0;  // tcp: into Snapshot::clusters

  uint32_t max_connections = 16384;                  // downstream connections at once
  Duration idle_timeout = std::chrono::seconds(300); // downstream, no bytes either way; 0 = none
  uint64_t buffer_limit = 1024 * 1024;               // bytes buffered per connection direction
  // http only
  uint64_t max_header_bytes = 60 * 1024; // request line + headers
  uint32_t max_headers = 100;
  Duration header_read_timeout = std::chrono::seconds(10);
  uint64_t request_buffer_limit = 64 * 1024; // body kept for retries; larger: no retry
  uint32_t max_requests_per_connection = 0;  // downstream keep-alive; 0 = unlimited

  bool operator==(const Listener&) const = default;
};

// ---- clusters ------------------------------------------------------------------------------

enum class HashSource { kHeader, kCookie, kSourceIp };
const char* hashSourceName(HashSource s); // "header", "cookie", "source_ip"

// What ring_hash and maglev hash: a request header (lowercase name), a cookie, or the
// downstream IP address. Requests without the header or cookie are balanced at random.
struct HashPolicy {
  HashSource source = HashSource::kSourceIp;
  std::string name; // header or cookie name; empty for kSourceIp

  bool operator==(const HashPolicy&) const = default;
};

struct Endpoint {
  net::SocketAddress address;
  uint32_t weight = 1; // 1..1000000

  bool operator==(const Endpoint&) const = default;
};

enum class HealthCheckKind { kHttp, kTcp };

struct HealthCheck {
  HealthCheckKind kind = HealthCheckKind::kHttp;
  std::string path; // http: GET this path; 2xx is healthy
  std::string host; // http: Host header; empty = the cluster name
  Duration interval = std::chrono::seconds(5);
  Duration timeout = std::chrono::seconds(1);
  uint32_t healthy_threshold = 2;   // consecutive successes to become healthy
  uint32_t unhealthy_threshold = 3; // consecutive failures to become unhealthy
  // Whether endpoints count as healthy before their first check (so a cold start routes at
  // once); false: each must pass healthy_threshold checks first.
  bool start_healthy = true;

  bool operator==(const HealthCheck&) const = default;
};

struct OutlierDetection {
  uint32_t consecutive_5xx = 5;             // 0 = this detector off
  uint32_t consecutive_gateway_failure = 0; // 502/503/504 and local failures; 0 = off
  Duration interval = std::chrono::seconds(10);
  Duration base_ejection_time = std::chrono::seconds(30); // times the ejection count
  Duration max_ejection_time = std::chrono::seconds(300);
  uint32_t max_ejection_percent = 10;

  bool operator==(const OutlierDetection&) const = default;
};

struct CircuitBreakers {
  uint32_t max_connections = 1024;
  uint32_t max_pending_requests = 1024;
  uint32_t max_requests = 1024;
  uint32_t max_retries = 3; // retries in flight at once

  bool operator==(const CircuitBreakers&) const = default;
};

struct PoolConfig {
  Duration idle_timeout = std::chrono::seconds(60);
  uint32_t max_requests_per_connection = 0; // 0 = unlimited
  uint32_t max_idle_per_endpoint = 64;

  bool operator==(const PoolConfig&) const = default;
};

// Set on every answer a Trellis proxy makes itself (a local reply), with the reply's response
// flag as its value (UF, UC, UH, ...; see docs/proxy.md), like Linkerd's l5d-proxy-error.
inline constexpr std::string_view kProxyErrorHeader = "x-trellis-proxy-error";

// Which endpoint list a cluster has and, when it was made by editing another one (a mesh
// delta that added or removed a few endpoints), where each endpoint was in that list. The
// runtime then carries each endpoint's state over by position, without comparing addresses.
// Not part of the cluster's content: two clusters that differ only in it are equal.
struct EndpointLineage {
  static constexpr uint32_t kNew = UINT32_MAX;
  uint64_t id = 0;   // of this list; unique in the process (nextEndpointLineageId)
  uint64_t base = 0; // the list it was edited from; 0: none (origin is empty)
  // Per endpoint: its index in the base list, or kNew.
  std::vector<uint32_t> origin;
  // What the edit changed, ascending: the indices of this list's endpoints that are new
  // (origin kNew), and those of the base list's endpoints it no longer has. A reader that
  // only counts what came and went (a worker's pool references) needs no walk of either list.
  std::vector<uint32_t> added;
  std::vector<uint32_t> removed;
};
uint64_t nextEndpointLineageId();

// A shared_ptr to the lineage that compares equal to any other (see EndpointLineage).
struct LineageRef {
  std::shared_ptr<const EndpointLineage> ptr;
  bool operator==(const LineageRef&) const { return true; }
};

struct Cluster {
  std::string name;
  LbConfig lb;                       // policy, its options and panic_threshold
  std::optional<HashPolicy> hash_on; // set exactly when lb.policy is ring_hash or maglev
  Duration connect_timeout = std::chrono::seconds(5);
  std::vector<Endpoint> endpoints;
  std::optional<HealthCheck> health_check;           // none: no active checking
  std::optional<OutlierDetection> outlier_detection; // none: no passive ejection
  CircuitBreakers circuit_breakers;
  PoolConfig pool;
  // The endpoints are Trellis proxies (sidecar inbounds): a 5xx answer of theirs carrying
  // kProxyErrorHeader counts as the failure it names (UF, UH: the app was never reached; UC:
  // reset), so it is retried and ejected like one. Off: the header is dropped from responses.
  bool trust_proxy_errors = false;
  LineageRef lineage; // null for clusters from a file

  bool operator==(const Cluster&) const = default;
};

// Pairs the endpoints of two lists of one cluster by address, walking both in step and
// looking one further (the usual change: the same order with a few endpoints added or
// removed). Sets from[i] to the index in `before` of now[i]'s address, or kNotInStep when the
// walk did not find it (new, or elsewhere in a reordered list); returns how many it paired.
// Addresses within a list are distinct (configuration checks it), so each pair is the only one.
inline constexpr size_t kNotInStep = SIZE_MAX;
size_t matchInStep(const std::vector<Endpoint>& now, const std::vector<Endpoint>& before,
                   std::vector<size_t>& from);

// Pairs the endpoints of `now` with those of `before` from their lineages, when `now`'s list
// is `before`'s (the same id) or was edited from it: from[i] is the index in `before` of
// now.endpoints[i], or kNotInStep for an endpoint that is new. Exact, so an endpoint without a
// pair is new. Returns false (and leaves `from` alone) when the lineages do not say.
bool pairByLineage(const Cluster& now, const Cluster& before, std::vector<size_t>& from);

// The lineage of `now` when its list was edited from `before`'s (or is the same list: then
// nothing was added or removed), with its `added` and `removed` lists consistent with both
// lists' sizes; null when the lineages do not say.
const EndpointLineage* editedFrom(const Cluster& now, const Cluster& before, bool& same);

// The endpoints in the form load balancers take, in the same order. Keys ("ip:port") are
// set for the hashing policies (ring_hash, maglev), which place endpoints by them; none for
// the others, which never read them.
EndpointSet endpointSetOf(const Cluster& cluster);

// ---- the whole configuration ---------------------------------------------------------------

struct AdminConfig {
  net::SocketAddress address{asio::ip::address_v4::loopback(), 9901};

  bool operator==(const AdminConfig&) const = default;
};

struct AccessLogConfig {
  std::string path; // a file, or /dev/stdout

  bool operator==(const AccessLogConfig&) const = default;
};

// A list of immutable items that reads like std::vector<T> (`list[i].name`, range-for, size())
// but holds each item by shared_ptr<const T>, so a snapshot built from another (a mesh delta
// that changed one service) shares the items that did not change instead of copying them, and
// the runtime can tell an unchanged item by its address.
template <typename T> class SharedList {
public:
  using Items = ChunkedVector<std::shared_ptr<const T>>;
  class const_iterator {
  public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using pointer = const T*;
    using reference = const T&;
    const_iterator() = default;
    explicit const_iterator(typename Items::const_iterator it) : it_(it) {}
    const T& operator*() const { return **it_; }
    const T* operator->() const { return it_->get(); }
    const_iterator& operator++() {
      ++it_;
      return *this;
    }
    const_iterator operator++(int) { return const_iterator(it_++); }
    bool operator==(const const_iterator& o) const { return it_ == o.it_; }

  private:
    typename Items::const_iterator it_;
  };

  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  const T& operator[](size_t i) const { return *items_[i]; }
  const T& back() const { return *items_.back(); }
  const_iterator begin() const { return const_iterator(items_.begin()); }
  const_iterator end() const { return const_iterator(items_.end()); }
  // The shared item itself, to put into another list.
  const std::shared_ptr<const T>& shared(size_t i) const { return items_[i]; }
  void reserve(size_t n) { items_.reserve(n); }
  void push_back(T item) { items_.push_back(std::make_shared<const T>(std::move(item))); }
  void push_back(std::shared_ptr<const T> item) { items_.push_back(std::move(item)); }
  void set(size_t i, std::shared_ptr<const T> item) { items_.set(i, std::move(item)); }
  // The items in chunks that copies share (see ChunkedVector): a list copied from another
  // and changed in a few places still shares the other chunks with it.
  const Items& items() const { return items_; }

  // By content: two lists of equal items are equal whether or not they share them.
  bool operator==(const SharedList& o) const {
    if (items_.size() != o.items_.size())
      return false;
    for (size_t i = 0; i < items_.size(); ++i)
      if (items_[i] != o.items_[i] && !(*items_[i] == *o.items_[i]))
        return false;
    return true;
  }

private:
  Items items_;
};

struct Snapshot {
  std::string source; // where it came from (file name), for logs
  AdminConfig admin;
  std::optional<AccessLogConfig> access_log; // none: no access log
  uint32_t concurrency = 0;                  // worker threads; 0 = one per CPU
  SharedList<Listener> listeners;
  SharedList<Cluster> clusters;

  const Cluster* findCluster(std::string_view name) const;
  const Listener* findListener(std::string_view name) const;

  bool operator==(const Snapshot&) const = default;
};

// Limit on configuration text, so a wrong path (a log file, a device) fails fast.
constexpr size_t kMaxConfigBytes = 16 * 1024 * 1024;

// Loads and validates a configuration file. Errors read
// `proxy.yaml:12: clusters[0].lb: unknown policy "round-robbin" (...)`: the file, the 1-based
// line, the key path and what is wrong. Never throws.
Result<std::shared_ptr<const Snapshot>> loadConfigFile(const std::string& path);

// As loadConfigFile, from text; `name_for_errors` stands for the file name in errors.
Result<std::shared_ptr<const Snapshot>> loadConfigString(std::string_view text,
                                                         std::string_view name_for_errors);

// The snapshot in the configuration schema, with every default filled in (for the admin
// /config endpoint). Loading its dump again gives an equal snapshot.
nlohmann::json toJson(const Snapshot& snapshot);
// A listener's routes as toJson() writes them (the mesh compiler's routes for a service or a
// gateway, without building a whole snapshot around them).
nlohmann::json routesToJson(const std::vector<Route>& routes);

} // namespace trellis::proxy
