#include "proxy/router.h"

#include "proxy/lb/hash.h"
#include "proxy/lb/random.h"

namespace trellis::proxy {

bool routeMatches(const RouteMatch& match, const RequestView& req) {
  std::string_view path = req.path;
  if (const size_t q = path.find('?'); q != std::string_view::npos)
    path = path.substr(0, q);
  switch (match.kind) {
  case PathMatchKind::kPrefix:
    if (!path.starts_with(match.path))
      return false;
    break;
  case PathMatchKind::kExact:
    if (path != match.path)
      return false;
    break;
  case PathMatchKind::kRegex:
    if (!match.regex || !std::regex_match(path.begin(), path.end(), *match.regex))
      return false;
    break;
  }
  if (!match.methods.empty()) {
    bool any = false;
    for (const std::string& m : match.methods) {
      if (m == req.method) {
        any = true;
        break;
      }
    }
    if (!any)
      return false;
  }
  for (const HeaderMatcher& h : match.headers) {
    const std::optional<std::string_view> v = req.header ? req.header(h.name) : std::nullopt;
    if (!v)
      return false;
    if (!h.value.empty() && *v != h.value)
      return false;
  }
  return true;
}

std::optional<size_t> matchRoute(std::span<const Route> routes, const RequestView& req) {
  for (size_t i = 0; i < routes.size(); ++i) {
    if (routeMatches(routes[i].match, req))
      return i;
  }
  return std::nullopt;
}

size_t selectCluster(const Route& route, uint64_t random) {
  if (route.clusters.size() <= 1 || route.total_weight == 0)
    return 0;
  uint64_t target = scaleRandom(random, route.total_weight);
  for (size_t i = 0; i < route.clusters.size(); ++i) {
    if (target < route.clusters[i].weight)
      return i;
    target -= route.clusters[i].weight;
  }
  return route.clusters.size() - 1; // unreachable while total_weight is the weights' sum
}

namespace {

std::string_view trimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

// The value of cookie `name` in a Cookie header ("a=1; b=2"), per RFC 6265 section 4.2.
std::optional<std::string_view> findCookie(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    const size_t semi = header.find(';');
    std::string_view pair = trimSpaces(header.substr(0, semi));
    header = semi == std::string_view::npos ? std::string_view() : header.substr(semi + 1);
    const size_t eq = pair.find('=');
    if (eq == std::string_view::npos || trimSpaces(pair.substr(0, eq)) != name)
      continue;
    std::string_view value = trimSpaces(pair.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    return value;
  }
  return std::nullopt;
}

} // namespace

std::optional<uint64_t> requestHash(const HashPolicy& policy, std::string_view source_ip,
                                    const HeaderLookup& header) {
  switch (policy.source) {
  case HashSource::kSourceIp:
    if (source_ip.empty())
      return std::nullopt;
    return hash64(source_ip);
  case HashSource::kHeader: {
    if (!header)
      return std::nullopt;
    auto v = header(policy.name);
    if (!v)
      return std::nullopt;
    return hash64(*v);
  }
  case HashSource::kCookie: {
    if (!header)
      return std::nullopt;
    auto cookies = header("cookie");
    if (!cookies)
      return std::nullopt;
    auto v = findCookie(*cookies, policy.name);
    if (!v)
      return std::nullopt;
    return hash64(*v);
  }
  }
  return std::nullopt;
}

} // namespace trellis::proxy
