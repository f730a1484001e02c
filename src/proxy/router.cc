#include "proxy/router.h"

#include "http/chars.h"

#include "proxy/lb/hash.h"
#include "proxy/lb/random.h"

namespace trellis::proxy {

std::string_view hostWithoutPort(std::string_view host) {
  const size_t colon = host.rfind(':');
  const size_t close = host.rfind(']'); // an [IPv6] literal has colons of its own
  if (colon == std::string_view::npos || (close != std::string_view::npos && colon < close))
    return host;
  return host.substr(0, colon);
}

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
    std::string_view value = *v;
    if (h.name == "host" && h.value.find(':') == std::string::npos)
      value = hostWithoutPort(value); // a host name matches whatever port was asked for
    if (h.regex) {
      if (!std::regex_match(value.begin(), value.end(), *h.regex))
        return false;
    } else if (!h.value.empty() && value != h.value) {
      return false;
    }
  }
  for (const QueryMatcher& q : match.query) {
    const std::optional<std::string_view> raw = queryParam(req.query, q.name);
    if (!raw)
      return false;
    // Most values carry no escapes: compare them in place.
    std::string decoded;
    std::string_view v = *raw;
    if (v.find('%') != std::string_view::npos) {
      decoded = percentDecode(v);
      v = decoded;
    }
    if (q.regex ? !std::regex_match(v.begin(), v.end(), *q.regex) : v != q.value)
      return false;
  }
  return true;
}

std::optional<std::string_view> queryParam(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name)
      return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
  }
  return std::nullopt;
}

std::string percentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    int hi, lo;
    if (s[i] == '%' && i + 2 < s.size() && (hi = http::chars::hexValue(s[i + 1])) >= 0 &&
        (lo = http::chars::hexValue(s[i + 2])) >= 0) {
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(s[i]); // a stray '%' stays as it is
    }
  }
  return out;
}

std::string redirectLocation(const Route& route, std::string_view host_header,
                             std::string_view path, std::string_view query) {
  const Redirect& r = *route.redirect;
  const std::string_view name = hostWithoutPort(host_header);
  const std::string_view port =
      name.size() < host_header.size() ? host_header.substr(name.size() + 1) : std::string_view();
  std::string out = r.scheme.empty() ? "http" : r.scheme;
  out.append("://").append(r.host.empty() ? name : std::string_view(r.host));
  if (r.port)
    out.append(":").append(std::to_string(*r.port));
  else if (r.scheme.empty() && !port.empty())
    out.append(":").append(port);
  if (r.path) {
    out.append(*r.path);
  } else if (r.prefix_rewrite && route.match.kind != PathMatchKind::kRegex &&
             path.starts_with(route.match.path)) {
    out.append(*r.prefix_rewrite).append(path.substr(route.match.path.size()));
  } else {
    out.append(path);
  }
  if (!query.empty())
    out.append("?").append(query);
  return out;
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
