#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "proxy/config.h"

namespace trellis::proxy {

// Looks up a request header by lowercase name. The callable should compare names
// case-insensitively (HTTP/1.1 codecs) or exactly (HTTP/2, already lowercase). For a repeated
// header it returns whichever value the codec chooses (first, or comma-joined). A lambda that
// captures at most two pointers (e.g. [this]) is stored inline: building one does not
// allocate with libstdc++.
using HeaderLookup = std::function<std::optional<std::string_view>(std::string_view name)>;

// What the router looks at in a request, independent of any HTTP codec.
struct RequestView {
  std::string_view method;
  std::string_view path;       // without the query; anything from '?' on is ignored anyway
  HeaderLookup header;         // may be empty: no headers
  std::string_view query = {}; // after the '?', without it; empty: none
};

// Whether the request satisfies every condition of `match`: the path (prefix: a plain string
// prefix, case-sensitive, so "/api" also matches "/apis"; path: equal; regex: matches the
// whole path), the method (one of methods, if any), each header (present with exactly that
// value, matching its regex, or present at all when the configured value is empty; a `host`
// value without ':' is compared with the Host's name, whatever its port) and each
// query parameter (its first occurrence, percent-decoded, equal to the value or matching the
// regex).
// Allocates nothing, except std::regex's matcher for regex routes.
bool routeMatches(const RouteMatch& match, const RequestView& req);

// "name:port" -> "name"; "[::1]:80" -> "[::1]"; a Host without a port unchanged.
std::string_view hostWithoutPort(std::string_view host);

// The value of the first parameter `name` in a query string ("a=1&b=2", no '?'), not decoded;
// "" for a parameter without '='; nullopt when absent.
std::optional<std::string_view> queryParam(std::string_view query, std::string_view name);

// %XX escapes decoded (RFC 3986 section 2.1); '+' and malformed escapes stay as they are.
std::string percentDecode(std::string_view s);

// The Location of a redirect route (route.redirect set) for a request with this Host header,
// path (without the query) and query (without the '?').
std::string redirectLocation(const Route& route, std::string_view host_header,
                             std::string_view path, std::string_view query);

// The index in `routes` of the first route that matches, or nullopt (answer 404).
std::optional<size_t> matchRoute(std::span<const Route> routes, const RequestView& req);

// Picks one of route.clusters in proportion to the weights and returns its index there, given
// a uniform 64-bit random value (from the worker's RandomGenerator; tests pass fixed values).
// Weight-0 entries are never chosen. Deterministic: the same value gives the same cluster.
size_t selectCluster(const Route& route, uint64_t random);

// The value a hash_on policy hashes for LbContext::hash: hash64 of the header's value, of the
// cookie's value (from the Cookie header), or of the downstream IP address as text. nullopt
// when the header or cookie is absent (or source_ip is empty): the balancer then picks at
// random. `header` may be empty (tcp listeners: only source_ip can hash).
std::optional<uint64_t> requestHash(const HashPolicy& policy, std::string_view source_ip,
                                    const HeaderLookup& header);

} // namespace trellis::proxy
