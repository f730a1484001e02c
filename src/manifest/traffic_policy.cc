// TrafficPolicy, trellis.dev/v1alpha1: the proxy's cluster and route knobs for one destination
// service, in camelCase. Ranges and defaults are the proxy's (docs/proxy.md).

#include <algorithm>

#include "manifest/kinds.h"
#include "manifest/reader.h"
#include "proxy/lb/maglev.h"

namespace trellis::manifest::detail {

namespace {

constexpr uint32_t kMaxRetryAttempts = 10; // as the proxy's

struct PolicyName {
  std::string_view name;
  proxy::LbPolicy policy;
};
constexpr PolicyName kPolicies[] = {
    {"RoundRobin", proxy::LbPolicy::kRoundRobin}, {"LeastRequest", proxy::LbPolicy::kLeastRequest},
    {"Random", proxy::LbPolicy::kRandom},         {"RingHash", proxy::LbPolicy::kRingHash},
    {"Maglev", proxy::LbPolicy::kMaglev},
};

std::string_view policyName(proxy::LbPolicy p) {
  for (const PolicyName& n : kPolicies) {
    if (n.policy == p)
      return n.name;
  }
  return "RoundRobin";
}

// Each allowed value of retries.on and the flag it sets (the proxy's names).
struct RetryCondition {
  std::string_view name;
  bool proxy::RetryOn::*flag;
};
constexpr RetryCondition kRetryConditions[] = {
    {"connect-failure", &proxy::RetryOn::connect_failure},
    {"refused-stream", &proxy::RetryOn::refused_stream},
    {"reset", &proxy::RetryOn::reset},
    {"5xx", &proxy::RetryOn::status_5xx},
    {"gateway-error", &proxy::RetryOn::gateway_error},
    {"retriable-status-codes", &proxy::RetryOn::retriable_status_codes},
};

std::string squashName(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c != '_' && c != '-')
      out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

Status parseHashOn(const json& j, const std::string& path, proxy::HashPolicy& out) {
  TRELLIS_RETURN_IF_ERROR(checkKeys(j, path, {"header", "cookie", "sourceIp"}));
  if (j.size() != 1)
    return fieldError(path, "set exactly one of header, cookie or sourceIp");
  if (const json* h = find(j, "header")) {
    auto s = readString(*h, path + ".header", kMaxHeaderNameLength);
    if (!s.ok())
      return s.error();
    if (!isHttpToken(*s))
      return fieldError(path + ".header", fmt::format("invalid header name \"{}\"", *s));
    out = {proxy::HashSource::kHeader, toLower(*s)};
    return okStatus();
  }
  if (const json* c = find(j, "cookie")) {
    auto s = readString(*c, path + ".cookie", kMaxHeaderNameLength);
    if (!s.ok())
      return s.error();
    if (!isHttpToken(*s))
      return fieldError(path + ".cookie", fmt::format("invalid cookie name \"{}\"", *s));
    out = {proxy::HashSource::kCookie, *s};
    return okStatus();
  }
  const json* ip = find(j, "sourceIp");
  if (!ip)
    return fieldError(path, "set exactly one of header, cookie or sourceIp");
  auto on = readBool(*ip, path + ".sourceIp");
  if (!on.ok())
    return on.error();
  if (!*on)
    return fieldError(path + ".sourceIp", "must be true (or hash on a header or cookie instead)");
  out = {proxy::HashSource::kSourceIp, ""};
  return okStatus();
}

Status parseLoadBalancer(const json& j, const std::string& path, LoadBalancer& out) {
  TRELLIS_RETURN_IF_ERROR(
      checkKeys(j, path, {"policy", "leastRequest", "ringHash", "maglev", "hashOn"}));
  if (const json* p = find(j, "policy")) {
    auto s = readString(*p, path + ".policy", 64);
    if (!s.ok())
      return s.error();
    auto it = std::find_if(std::begin(kPolicies), std::end(kPolicies),
                           [&](const PolicyName& n) { return n.name == *s; });
    if (it == std::end(kPolicies)) {
      for (const PolicyName& n : kPolicies) {
        if (squashName(n.name) == squashName(*s))
          return fieldError(
              path + ".policy",
              fmt::format("unknown policy \"{}\" (did you mean \"{}\"?)", *s, n.name));
      }
      return fieldError(path + ".policy",
                        fmt::format("unknown policy \"{}\" (expected RoundRobin, LeastRequest, "
                                    "Random, RingHash or Maglev)",
                                    *s));
    }
    out.config.policy = it->policy;
  }
  const proxy::LbPolicy policy = out.config.policy;
  const bool hashing = policy == proxy::LbPolicy::kRingHash || policy == proxy::LbPolicy::kMaglev;
  if (const json* h = find(j, "hashOn")) {
    if (!hashing)
      return fieldError(
          path + ".hashOn",
          fmt::format("only RingHash and Maglev hash requests (policy is {})", policyName(policy)));
    out.hash_on.emplace();
    TRELLIS_RETURN_IF_ERROR(parseHashOn(*h, path + ".hashOn", *out.hash_on));
  } else if (hashing) {
    return fieldError(path + ".hashOn", fmt::format("required with policy {}", policyName(policy)));
  }
  // Options only next to their policy, so a mismatch is not silently ignored.
  struct Option {
    std::string_view key;
    proxy::LbPolicy policy;
  };
  for (const Option& o : {Option{"leastRequest", proxy::LbPolicy::kLeastRequest},
                          Option{"ringHash", proxy::LbPolicy::kRingHash},
                          Option{"maglev", proxy::LbPolicy::kMaglev}}) {
    if (find(j, o.key) && o.policy != policy)
      return fieldError(joinPath(path, o.key),
                        fmt::format("options for policy {} but policy is {}", policyName(o.policy),
                                    policyName(policy)));
  }
  if (const json* o = find(j, "leastRequest")) {
    const std::string p = path + ".leastRequest";
    TRELLIS_RETURN_IF_ERROR(checkKeys(*o, p, {"choiceCount"}));
    TRELLIS_RETURN_IF_ERROR(intField(*o, p, "choiceCount", out.config.choice_count, 2, 100));
  }
  if (const json* o = find(j, "ringHash")) {
    const std::string p = path + ".ringHash";
    constexpr int64_t kMaxRing = 8 * 1024 * 1024;
    TRELLIS_RETURN_IF_ERROR(checkKeys(*o, p, {"minRingSize", "maxRingSize"}));
    TRELLIS_RETURN_IF_ERROR(intField(*o, p, "minRingSize", out.config.min_ring_size, 1, kMaxRing));
    TRELLIS_RETURN_IF_ERROR(intField(*o, p, "maxRingSize", out.config.max_ring_size, 1, kMaxRing));
    if (out.config.max_ring_size < out.config.min_ring_size)
      return fieldError(p, fmt::format("maxRingSize {} is below minRingSize {}",
                                       out.config.max_ring_size, out.config.min_ring_size));
  }
  if (const json* o = find(j, "maglev")) {
    const std::string p = path + ".maglev";
    TRELLIS_RETURN_IF_ERROR(checkKeys(*o, p, {"tableSize"}));
    TRELLIS_RETURN_IF_ERROR(intField(*o, p, "tableSize", out.config.maglev_table_size, 3, 5000011));
    if (!proxy::isPrime(out.config.maglev_table_size))
      return fieldError(p + ".tableSize", fmt::format("{} is not prime (e.g. 65537, 131071)",
                                                      out.config.maglev_table_size));
  }
  return okStatus();
}

Status parseRetries(const json& j, const std::string& path, proxy::RetryPolicy& out) {
  TRELLIS_RETURN_IF_ERROR(
      checkKeys(j, path,
                {"attempts", "perTryTimeout", "on", "retriableStatusCodes", "backoff",
                 "budgetPercent", "budgetMinConcurrency", "retryNonIdempotent"}));
  if (!find(j, "attempts"))
    return missing(path, "attempts");
  TRELLIS_RETURN_IF_ERROR(intField(j, path, "attempts", out.attempts, 0, kMaxRetryAttempts));
  TRELLIS_RETURN_IF_ERROR(durationField(j, path, "perTryTimeout", out.per_try_timeout, true));
  const json* codes = find(j, "retriableStatusCodes");
  if (codes) {
    const std::string cpath = path + ".retriableStatusCodes";
    TRELLIS_RETURN_IF_ERROR(expectList(*codes, cpath, 0, 100));
    for (size_t i = 0; i < codes->size(); ++i) {
      auto v = readInt((*codes)[i], indexPath(cpath, i), 100, 599);
      if (!v.ok())
        return v.error();
      out.retriable_status_codes.push_back(static_cast<uint16_t>(*v));
    }
  }
  if (const json* on = find(j, "on")) {
    const std::string opath = path + ".on";
    TRELLIS_RETURN_IF_ERROR(expectList(*on, opath, 1, std::size(kRetryConditions)));
    out.on = proxy::RetryOn{false, false, false, false, false, false};
    for (size_t i = 0; i < on->size(); ++i) {
      const std::string p = indexPath(opath, i);
      auto s = readString((*on)[i], p, 64);
      if (!s.ok())
        return s.error();
      auto cond = std::find_if(std::begin(kRetryConditions), std::end(kRetryConditions),
                               [&](const RetryCondition& c) { return c.name == *s; });
      if (cond == std::end(kRetryConditions))
        return fieldError(p, fmt::format("unknown retry condition \"{}\" (expected "
                                         "connect-failure, refused-stream, reset, 5xx, "
                                         "gateway-error or retriable-status-codes)",
                                         *s));
      if (out.on.*(cond->flag))
        return fieldError(p, fmt::format("\"{}\" is listed twice", *s));
      out.on.*(cond->flag) = true;
    }
    if (out.on.retriable_status_codes && out.retriable_status_codes.empty())
      return fieldError(opath, "retriable-status-codes needs a non-empty retriableStatusCodes");
    if (!out.on.retriable_status_codes && !out.retriable_status_codes.empty())
      return fieldError(path + ".retriableStatusCodes",
                        "listed codes are never retried: add retriable-status-codes to on");
  } else {
    // The proxy's default conditions, plus the listed codes if any.
    out.on.retriable_status_codes = !out.retriable_status_codes.empty();
  }
  if (const json* b = find(j, "backoff")) {
    const std::string bpath = path + ".backoff";
    TRELLIS_RETURN_IF_ERROR(checkKeys(*b, bpath, {"base", "max"}));
    TRELLIS_RETURN_IF_ERROR(durationField(*b, bpath, "base", out.backoff_base, false));
    if (find(*b, "max"))
      TRELLIS_RETURN_IF_ERROR(durationField(*b, bpath, "max", out.backoff_max, false));
    else
      out.backoff_max = std::max(out.backoff_max, out.backoff_base * 10);
    if (out.backoff_max < out.backoff_base)
      return fieldError(bpath + ".max",
                        fmt::format("{} is below base {}", formatDuration(out.backoff_max),
                                    formatDuration(out.backoff_base)));
  }
  TRELLIS_RETURN_IF_ERROR(intField(j, path, "budgetPercent", out.budget_percent, 0, 100));
  TRELLIS_RETURN_IF_ERROR(
      intField(j, path, "budgetMinConcurrency", out.budget_min_concurrency, 0, 100000));
  return boolField(j, path, "retryNonIdempotent", out.retry_non_idempotent);
}

Status parseOutlier(const json& j, const std::string& path, proxy::OutlierDetection& out) {
  TRELLIS_RETURN_IF_ERROR(checkKeys(j, path,
                                    {"consecutive5xx", "consecutiveGatewayFailure", "interval",
                                     "baseEjectionTime", "maxEjectionTime", "maxEjectionPercent"}));
  TRELLIS_RETURN_IF_ERROR(intField(j, path, "consecutive5xx", out.consecutive_5xx, 0, 1000));
  TRELLIS_RETURN_IF_ERROR(
      intField(j, path, "consecutiveGatewayFailure", out.consecutive_gateway_failure, 0, 1000));
  if (out.consecutive_5xx == 0 && out.consecutive_gateway_failure == 0)
    return fieldError(path, "consecutive5xx and consecutiveGatewayFailure are both 0, nothing "
                            "would ever be ejected (remove outlierDetection to turn it off)");
  TRELLIS_RETURN_IF_ERROR(durationField(j, path, "interval", out.interval, false));
  TRELLIS_RETURN_IF_ERROR(
      durationField(j, path, "baseEjectionTime", out.base_ejection_time, false));
  TRELLIS_RETURN_IF_ERROR(durationField(j, path, "maxEjectionTime", out.max_ejection_time, false));
  if (out.max_ejection_time < out.base_ejection_time)
    return fieldError(path + (find(j, "maxEjectionTime") ? ".maxEjectionTime" : ""),
                      fmt::format("maxEjectionTime {} is below baseEjectionTime {}",
                                  formatDuration(out.max_ejection_time),
                                  formatDuration(out.base_ejection_time)));
  return intField(j, path, "maxEjectionPercent", out.max_ejection_percent, 0, 100);
}

Status parseCircuitBreakers(const json& j, const std::string& path, proxy::CircuitBreakers& out) {
  TRELLIS_RETURN_IF_ERROR(
      checkKeys(j, path, {"maxConnections", "maxPendingRequests", "maxRequests", "maxRetries"}));
  TRELLIS_RETURN_IF_ERROR(intField(j, path, "maxConnections", out.max_connections, 1, 1000000));
  TRELLIS_RETURN_IF_ERROR(
      intField(j, path, "maxPendingRequests", out.max_pending_requests, 1, 1000000));
  TRELLIS_RETURN_IF_ERROR(intField(j, path, "maxRequests", out.max_requests, 1, 1000000));
  return intField(j, path, "maxRetries", out.max_retries, 0, 1000000);
}

Status parseHealthCheck(const json& j, const std::string& path, proxy::HealthCheck& out) {
  TRELLIS_RETURN_IF_ERROR(checkKeys(
      j, path,
      {"path", "tcp", "host", "interval", "timeout", "healthyThreshold", "unhealthyThreshold"}));
  bool tcp = false;
  TRELLIS_RETURN_IF_ERROR(boolField(j, path, "tcp", tcp));
  const json* hpath = find(j, "path");
  if (tcp && hpath)
    return fieldError(path, "set either path (an HTTP check) or tcp: true, not both");
  if (!tcp && !hpath)
    return fieldError(path, "set path (an HTTP check) or tcp: true (a connect check)");
  if (tcp) {
    out.kind = proxy::HealthCheckKind::kTcp;
    if (find(j, "host"))
      return fieldError(path + ".host", "only HTTP checks send a Host header");
  } else {
    out.kind = proxy::HealthCheckKind::kHttp;
    auto p = readString(*hpath, path + ".path", kMaxPathLength);
    if (!p.ok())
      return p.error();
    if (p->front() != '/' || hasControlChar(*p) || p->find(' ') != std::string::npos)
      return fieldError(path + ".path",
                        fmt::format("must be a path starting with '/', got \"{}\"", *p));
    out.path = *p;
    if (const json* h = find(j, "host")) {
      auto v = readString(*h, path + ".host", kMaxHostnameLength);
      if (!v.ok())
        return v.error();
      if (hasControlChar(*v))
        return fieldError(path + ".host", "contains a control character (CR, LF, NUL ...)");
      out.host = *v;
    }
  }
  TRELLIS_RETURN_IF_ERROR(durationField(j, path, "interval", out.interval, false));
  TRELLIS_RETURN_IF_ERROR(durationField(j, path, "timeout", out.timeout, false));
  TRELLIS_RETURN_IF_ERROR(intField(j, path, "healthyThreshold", out.healthy_threshold, 1, 100));
  return intField(j, path, "unhealthyThreshold", out.unhealthy_threshold, 1, 100);
}

Status parseRateLimit(const json& j, const std::string& path, proxy::RateLimit& out) {
  TRELLIS_RETURN_IF_ERROR(checkKeys(j, path, {"requestsPerSecond", "burst", "status"}));
  if (!find(j, "requestsPerSecond"))
    return missing(path, "requestsPerSecond");
  TRELLIS_RETURN_IF_ERROR(
      intField(j, path, "requestsPerSecond", out.requests_per_second, 1, 1000000000));
  out.burst = out.requests_per_second;
  TRELLIS_RETURN_IF_ERROR(intField(j, path, "burst", out.burst, 1, 1000000000));
  return intField(j, path, "status", out.status, 400, 599);
}

Status parseFault(const json& j, const std::string& path, proxy::FaultConfig& out) {
  TRELLIS_RETURN_IF_ERROR(checkKeys(j, path, {"delay", "abort"}));
  if (!find(j, "delay") && !find(j, "abort"))
    return fieldError(path, "set delay, abort or both");
  auto percent = [&](const json& o, const std::string& p, double& out_percent) -> Status {
    const json* v = find(o, "percent");
    if (!v)
      return okStatus();
    auto r = readNumber(*v, p + ".percent", 0, 100);
    if (!r.ok())
      return r.error();
    out_percent = *r;
    return okStatus();
  };
  if (const json* d = find(j, "delay")) {
    const std::string p = path + ".delay";
    TRELLIS_RETURN_IF_ERROR(checkKeys(*d, p, {"percent", "duration"}));
    out.delay.emplace();
    TRELLIS_RETURN_IF_ERROR(percent(*d, p, out.delay->percent));
    if (!find(*d, "duration"))
      return missing(p, "duration");
    TRELLIS_RETURN_IF_ERROR(durationField(*d, p, "duration", out.delay->duration, false));
  }
  if (const json* a = find(j, "abort")) {
    const std::string p = path + ".abort";
    TRELLIS_RETURN_IF_ERROR(checkKeys(*a, p, {"percent", "status"}));
    out.abort.emplace();
    TRELLIS_RETURN_IF_ERROR(percent(*a, p, out.abort->percent));
    if (!find(*a, "status"))
      return missing(p, "status");
    TRELLIS_RETURN_IF_ERROR(intField(*a, p, "status", out.abort->status, 200, 599));
  }
  return okStatus();
}

// Parses spec[key] into `out` (emplaced) with `parse`, when present.
template <typename T, typename F>
Status section(const json& spec, std::string_view key, std::optional<T>& out, F parse) {
  const json* v = find(spec, key);
  if (!v)
    return okStatus();
  out.emplace();
  return parse(*v, joinPath("spec", key), *out);
}

std::string dur(Duration d) {
  return formatDuration(d);
}

} // namespace

Result<TrafficPolicy> parseTrafficPolicy(const json& spec, const ObjectMeta& /*meta*/) {
  TrafficPolicy out;
  TRELLIS_RETURN_IF_ERROR(checkKeys(spec, "spec",
                                    {"targetRef", "loadBalancer", "panicThreshold", "retries",
                                     "timeout", "connectTimeout", "outlierDetection",
                                     "circuitBreakers", "healthCheck", "rateLimit", "fault"}));
  const json* target = find(spec, "targetRef");
  if (!target)
    return missing("spec", "targetRef");
  TRELLIS_RETURN_IF_ERROR(checkKeys(*target, "spec.targetRef", {"group", "kind", "name"}));
  std::string group;
  if (const json* g = find(*target, "group")) {
    auto s = readString(*g, "spec.targetRef.group", 253, true);
    if (!s.ok())
      return s.error();
    group = *s == "core" ? "" : *s;
  }
  const json* kind = find(*target, "kind");
  if (!kind)
    return missing("spec.targetRef", "kind");
  auto k = readString(*kind, "spec.targetRef.kind", 63);
  if (!k.ok())
    return k.error();
  if (*k != "Service" || !group.empty())
    return fieldError("spec.targetRef",
                      fmt::format("unsupported target {} (group \"{}\"): a TrafficPolicy "
                                  "applies to a Service (group \"\" or \"core\")",
                                  *k, group));
  const json* name = find(*target, "name");
  if (!name)
    return missing("spec.targetRef", "name");
  auto n = readString(*name, "spec.targetRef.name", 63);
  if (!n.ok())
    return n.error();
  if (!isDns1035Label(*n))
    return fieldError("spec.targetRef.name", fmt::format("invalid Service name \"{}\"", *n));
  out.target_service = *n;

  TRELLIS_RETURN_IF_ERROR(section(spec, "loadBalancer", out.load_balancer, parseLoadBalancer));
  if (const json* p = find(spec, "panicThreshold")) {
    auto v = readInt(*p, "spec.panicThreshold", 0, 100);
    if (!v.ok())
      return v.error();
    out.panic_threshold = static_cast<uint32_t>(*v);
  }
  TRELLIS_RETURN_IF_ERROR(section(spec, "retries", out.retries, parseRetries));
  if (const json* t = find(spec, "timeout")) {
    auto d = readDuration(*t, "spec.timeout", true);
    if (!d.ok())
      return d.error();
    out.timeout = *d;
  }
  if (const json* t = find(spec, "connectTimeout")) {
    auto d = readDuration(*t, "spec.connectTimeout", false);
    if (!d.ok())
      return d.error();
    out.connect_timeout = *d;
  }
  TRELLIS_RETURN_IF_ERROR(section(spec, "outlierDetection", out.outlier_detection, parseOutlier));
  TRELLIS_RETURN_IF_ERROR(
      section(spec, "circuitBreakers", out.circuit_breakers, parseCircuitBreakers));
  TRELLIS_RETURN_IF_ERROR(section(spec, "healthCheck", out.health_check, parseHealthCheck));
  TRELLIS_RETURN_IF_ERROR(section(spec, "rateLimit", out.rate_limit, parseRateLimit));
  TRELLIS_RETURN_IF_ERROR(section(spec, "fault", out.fault, parseFault));
  return out;
}

json trafficPolicyJson(const TrafficPolicy& p) {
  json spec;
  spec["targetRef"] = {{"group", ""}, {"kind", "Service"}, {"name", p.target_service}};
  if (p.load_balancer) {
    const proxy::LbConfig& c = p.load_balancer->config;
    json lb = {{"policy", policyName(c.policy)}};
    switch (c.policy) {
    case proxy::LbPolicy::kLeastRequest:
      lb["leastRequest"] = {{"choiceCount", c.choice_count}};
      break;
    case proxy::LbPolicy::kRingHash:
      lb["ringHash"] = {{"minRingSize", c.min_ring_size}, {"maxRingSize", c.max_ring_size}};
      break;
    case proxy::LbPolicy::kMaglev:
      lb["maglev"] = {{"tableSize", c.maglev_table_size}};
      break;
    default:
      break;
    }
    if (const auto& h = p.load_balancer->hash_on) {
      if (h->source == proxy::HashSource::kSourceIp)
        lb["hashOn"] = {{"sourceIp", true}};
      else
        lb["hashOn"] = {{h->source == proxy::HashSource::kHeader ? "header" : "cookie", h->name}};
    }
    spec["loadBalancer"] = lb;
  }
  if (p.panic_threshold)
    spec["panicThreshold"] = *p.panic_threshold;
  if (p.retries) {
    const proxy::RetryPolicy& r = *p.retries;
    json on = json::array();
    for (const auto& c : kRetryConditions) {
      if (r.on.*(c.flag))
        on.push_back(c.name);
    }
    json j = {{"attempts", r.attempts},
              {"perTryTimeout", dur(r.per_try_timeout)},
              {"backoff", {{"base", dur(r.backoff_base)}, {"max", dur(r.backoff_max)}}},
              {"budgetPercent", r.budget_percent},
              {"budgetMinConcurrency", r.budget_min_concurrency},
              {"retryNonIdempotent", r.retry_non_idempotent}};
    // An explicit empty `on` is invalid, and no condition at all only comes from the struct
    // being built by hand; leave the key out then.
    if (!on.empty())
      j["on"] = on;
    if (!r.retriable_status_codes.empty())
      j["retriableStatusCodes"] = r.retriable_status_codes;
    spec["retries"] = j;
  }
  if (p.timeout)
    spec["timeout"] = dur(*p.timeout);
  if (p.connect_timeout)
    spec["connectTimeout"] = dur(*p.connect_timeout);
  if (p.outlier_detection) {
    const proxy::OutlierDetection& o = *p.outlier_detection;
    spec["outlierDetection"] = {{"consecutive5xx", o.consecutive_5xx},
                                {"consecutiveGatewayFailure", o.consecutive_gateway_failure},
                                {"interval", dur(o.interval)},
                                {"baseEjectionTime", dur(o.base_ejection_time)},
                                {"maxEjectionTime", dur(o.max_ejection_time)},
                                {"maxEjectionPercent", o.max_ejection_percent}};
  }
  if (p.circuit_breakers) {
    const proxy::CircuitBreakers& b = *p.circuit_breakers;
    spec["circuitBreakers"] = {{"maxConnections", b.max_connections},
                               {"maxPendingRequests", b.max_pending_requests},
                               {"maxRequests", b.max_requests},
                               {"maxRetries", b.max_retries}};
  }
  if (p.health_check) {
    const proxy::HealthCheck& h = *p.health_check;
    json j = {{"interval", dur(h.interval)},
              {"timeout", dur(h.timeout)},
              {"healthyThreshold", h.healthy_threshold},
              {"unhealthyThreshold", h.unhealthy_threshold}};
    if (h.kind == proxy::HealthCheckKind::kTcp) {
      j["tcp"] = true;
    } else {
      j["path"] = h.path;
      if (!h.host.empty())
        j["host"] = h.host;
    }
    spec["healthCheck"] = j;
  }
  if (p.rate_limit)
    spec["rateLimit"] = {{"requestsPerSecond", p.rate_limit->requests_per_second},
                         {"burst", p.rate_limit->burst},
                         {"status", p.rate_limit->status}};
  if (p.fault) {
    json f = json::object();
    if (p.fault->delay)
      f["delay"] = {{"percent", p.fault->delay->percent},
                    {"duration", dur(p.fault->delay->duration)}};
    if (p.fault->abort)
      f["abort"] = {{"percent", p.fault->abort->percent}, {"status", p.fault->abort->status}};
    spec["fault"] = f;
  }
  return spec;
}

} // namespace trellis::manifest::detail
