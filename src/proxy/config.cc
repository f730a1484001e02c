#include "proxy/config.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "base/strings.h"
#include "proxy/lb/maglev.h"

namespace trellis::proxy {

const char* protocolName(Protocol p) {
  return p == Protocol::kTcp ? "tcp" : "http";
}

const char* pathMatchKindName(PathMatchKind k) {
  switch (k) {
  case PathMatchKind::kPrefix:
    return "prefix";
  case PathMatchKind::kExact:
    return "path";
  case PathMatchKind::kRegex:
    return "regex";
  }
  return "prefix";
}

const char* hashSourceName(HashSource s) {
  switch (s) {
  case HashSource::kHeader:
    return "header";
  case HashSource::kCookie:
    return "cookie";
  case HashSource::kSourceIp:
    return "source_ip";
  }
  return "source_ip";
}

size_t matchInStep(const std::vector<Endpoint>& now, const std::vector<Endpoint>& before,
                   std::vector<size_t>& from) {
  from.assign(now.size(), kNotInStep);
  size_t matched = 0;
  size_t next = 0; // where the walk expects the next endpoint in `before`
  for (size_t i = 0; i < now.size(); ++i) {
    for (size_t j = next; j < next + 2 && j < before.size(); ++j) {
      if (before[j].address == now[i].address) {
        from[i] = j;
        next = j + 1;
        ++matched;
        break;
      }
    }
  }
  return matched;
}

uint64_t nextEndpointLineageId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

bool pairByLineage(const Cluster& now, const Cluster& before, std::vector<size_t>& from) {
  const EndpointLineage* n = now.lineage.ptr.get();
  const EndpointLineage* b = before.lineage.ptr.get();
  if (n == nullptr || b == nullptr)
    return false;
  if (n->id == b->id && now.endpoints.size() == before.endpoints.size()) {
    from.resize(now.endpoints.size());
    for (size_t i = 0; i < from.size(); ++i)
      from[i] = i;
    return true;
  }
  if (n->base != b->id || n->origin.size() != now.endpoints.size())
    return false;
  from.resize(n->origin.size());
  for (size_t i = 0; i < from.size(); ++i) {
    const uint32_t o = n->origin[i];
    if (o != EndpointLineage::kNew && o >= before.endpoints.size())
      return false; // cannot happen for lineages the builder made; never trust it blindly
    from[i] = o == EndpointLineage::kNew ? kNotInStep : o;
  }
  return true;
}

const EndpointLineage* editedFrom(const Cluster& now, const Cluster& before, bool& same) {
  const EndpointLineage* n = now.lineage.ptr.get();
  const EndpointLineage* b = before.lineage.ptr.get();
  if (n == nullptr || b == nullptr)
    return nullptr;
  same = n->id == b->id;
  if (same)
    return now.endpoints.size() == before.endpoints.size() ? n : nullptr;
  if (n->base != b->id || n->origin.size() != now.endpoints.size() ||
      now.endpoints.size() + n->removed.size() != before.endpoints.size() + n->added.size())
    return nullptr;
  // Never trusted blindly: every index must be in its list.
  for (uint32_t i : n->added)
    if (i >= now.endpoints.size())
      return nullptr;
  for (uint32_t k : n->removed)
    if (k >= before.endpoints.size())
      return nullptr;
  return n;
}

EndpointSet endpointSetOf(const Cluster& cluster) {
  // Only the hashing policies read keys; formatting every address for the others was most
  // of the cost of a worker's new cluster (a mesh update re-creates each changed one).
  const bool keyed =
      cluster.lb.policy == LbPolicy::kRingHash || cluster.lb.policy == LbPolicy::kMaglev;
  std::vector<uint32_t> weights(cluster.endpoints.size());
  for (size_t i = 0; i < weights.size(); ++i)
    weights[i] = cluster.endpoints[i].weight;
  std::vector<std::string> keys;
  if (keyed) {
    keys.reserve(cluster.endpoints.size());
    for (const Endpoint& ep : cluster.endpoints)
      keys.push_back(ep.address.toString());
  }
  return EndpointSet(std::move(weights), std::move(keys));
}

const Cluster* Snapshot::findCluster(std::string_view name) const {
  for (const Cluster& c : clusters) {
    if (c.name == name)
      return &c;
  }
  return nullptr;
}

const Listener* Snapshot::findListener(std::string_view name) const {
  for (const Listener& l : listeners) {
    if (l.name == name)
      return &l;
  }
  return nullptr;
}

namespace {

using std::chrono::seconds;

// Limits on what a configuration may ask for; documented in docs/proxy.md.
constexpr size_t kMaxNameLength = 128;
constexpr size_t kMaxRegexLength = 1024;
constexpr uint32_t kMaxEndpointWeight = 1000000;
constexpr uint32_t kMaxRouteWeight = 1000000;
constexpr uint32_t kMaxRetryAttempts = 10;
constexpr uint64_t kMaxMaglevTableSize = 5000011;

// Header names a route may not add: they carry framing or connection management, which the
// proxy owns.
constexpr std::string_view kReservedHeaders[] = {
    "connection", "content-length", "host",    "keep-alive",       "proxy-connection",
    "te",         "trailer",        "upgrade", "transfer-encoding"};

bool isTokenChar(char c) {
  if (std::isalnum(static_cast<unsigned char>(c)))
    return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

bool isToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), isTokenChar);
}

bool isName(std::string_view s) {
  return !s.empty() && s.size() <= kMaxNameLength && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

// A header value: visible characters, spaces and tabs; no CR, LF or NUL (header injection).
bool isHeaderValue(std::string_view s) {
  return std::none_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t') || u == 0x7f;
  });
}

std::string toLower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string joinPath(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : fmt::format("{}.{}", path, key);
}

std::string indexPath(const std::string& path, size_t i) {
  return fmt::format("{}[{}]", path, i);
}

const char* nodeKind(const YAML::Node& n) {
  switch (n.Type()) {
  case YAML::NodeType::Null:
    return "an empty value";
  case YAML::NodeType::Scalar:
    return "a scalar";
  case YAML::NodeType::Sequence:
    return "a list";
  case YAML::NodeType::Map:
    return "a mapping";
  case YAML::NodeType::Undefined:
    break;
  }
  return "nothing";
}

// Parses one configuration document. Every error names the source, the line and the key path.
class Parser {
public:
  explicit Parser(std::string_view source) : source_(source) {}

  Result<std::shared_ptr<const Snapshot>> parse(const YAML::Node& root);

private:
  template <typename T>
  using Reader = std::function<Result<T>(const YAML::Node&, const std::string&)>;

  Error errorAt(const YAML::Mark& mark, const std::string& path, std::string_view msg) const {
    std::string where = mark.line >= 0 ? fmt::format("{}:{}", source_, mark.line + 1) : source_;
    if (path.empty())
      return makeError(ErrorCode::kInvalidArgument, "{}: {}", where, msg);
    return makeError(ErrorCode::kInvalidArgument, "{}: {}: {}", where, path, msg);
  }
  Error errorAt(const YAML::Node& node, const std::string& path, std::string_view msg) const {
    // yaml-cpp places an empty value (`timeout:`) at the next token, often the next line;
    // point at its key instead.
    if (node.IsNull()) {
      if (auto it = null_value_key_.find(node.Mark().pos); it != null_value_key_.end())
        return errorAt(it->second, path, msg);
    }
    return errorAt(node.Mark(), path, msg);
  }

  // ---- structure ----
  Status expectMap(const YAML::Node& n, const std::string& path) const;
  Status expectList(const YAML::Node& n, const std::string& path) const;
  // Rejects keys not in `allowed`, duplicate keys and non-string keys.
  Status checkKeys(const YAML::Node& map, const std::string& path,
                   std::initializer_list<std::string_view> allowed) const {
    return checkMap(map, path, &allowed);
  }
  // A mapping whose keys are free (header names): only duplicates and non-strings are errors.
  Status checkFreeKeys(const YAML::Node& map, const std::string& path) const {
    return checkMap(map, path, nullptr);
  }
  Status checkMap(const YAML::Node& map, const std::string& path,
                  const std::initializer_list<std::string_view>* allowed) const;
  Error missing(const YAML::Node& map, const std::string& path, std::string_view key,
                std::string_view why = {}) const {
    return why.empty()
               ? errorAt(map, path, fmt::format("missing required key \"{}\"", key))
               : errorAt(map, path, fmt::format("missing required key \"{}\" ({})", key, why));
  }

  // Reads map[key] into out with `read` if the key is present.
  template <typename T, typename U>
  Status field(const YAML::Node& map, const std::string& path, const char* key, U& out,
               const Reader<T>& read) const {
    const YAML::Node n = map[key];
    if (!n.IsDefined())
      return okStatus();
    auto v = read(n, joinPath(path, key));
    if (!v.ok())
      return v.error();
    out = std::move(v.value());
    return okStatus();
  }
  template <typename T, typename U>
  Status required(const YAML::Node& map, const std::string& path, const char* key, U& out,
                  const Reader<T>& read) const {
    if (!map[key].IsDefined())
      return missing(map, path, key);
    return field(map, path, key, out, read);
  }

  // ---- scalars ----
  Result<std::string> scalar(const YAML::Node& n, const std::string& path,
                             std::string_view what) const;
  Reader<std::string> string() const;
  Reader<std::string> name() const;
  Reader<uint64_t> integer(uint64_t min, uint64_t max) const;
  Reader<double> percent() const;
  Reader<bool> boolean() const;
  Reader<Duration> duration(bool zero_ok) const;
  Reader<uint64_t> size(uint64_t min, uint64_t max) const;
  Reader<net::SocketAddress> address(bool port_zero_ok) const;
  Reader<std::string> headerName(bool for_adding) const;
  Reader<std::string> headerValue() const;

  // ---- sections ----
  Status parseAdmin(const YAML::Node& n, const std::string& path, AdminConfig& out) const;
  Status parseAccessLog(const YAML::Node& n, const std::string& path, AccessLogConfig& out) const;
  Status parseCluster(const YAML::Node& n, const std::string& path, Cluster& out) const;
  Status parseEndpoint(const YAML::Node& n, const std::string& path, Endpoint& out) const;
  Status parseHashPolicy(const YAML::Node& n, const std::string& path, HashPolicy& out) const;
  Status parseHealthCheck(const YAML::Node& n, const std::string& path, HealthCheck& out) const;
  Status parseOutlier(const YAML::Node& n, const std::string& path, OutlierDetection& out) const;
  Status parseListener(const YAML::Node& n, const std::string& path, Listener& out) const;
  Status parseRoute(const YAML::Node& n, const std::string& path, Route& out) const;
  Status parseMatch(const YAML::Node& n, const std::string& path, RouteMatch& out) const;
  Status parseRedirect(const YAML::Node& n, const std::string& path, Redirect& out) const;
  Result<std::shared_ptr<const std::regex>> regex(const YAML::Node& n,
                                                  const std::string& path) const;
  Status regexMatcher(const YAML::Node& n, const std::string& path, std::string& source,
                      std::shared_ptr<const std::regex>& out) const;
  Status parseHeaderList(const YAML::Node& h, const std::string& path,
                         std::vector<HeaderValue>& out) const;
  Status parseRetries(const YAML::Node& n, const std::string& path, RetryPolicy& out) const;
  Status parseFault(const YAML::Node& n, const std::string& path, FaultConfig& out) const;
  Status parseRateLimit(const YAML::Node& n, const std::string& path, RateLimit& out) const;
  Result<size_t> clusterRef(const YAML::Node& n, const std::string& path, std::string& name) const;

  std::string source_;
  // Position of each empty mapping value seen by checkMap -> the mark of its key.
  mutable std::map<int, YAML::Mark> null_value_key_;
  // Clusters are parsed before listeners, so routes can be checked against them.
  std::map<std::string, size_t, std::less<>> cluster_index_;
};

// ---- structure -------------------------------------------------------------------------------

Status Parser::expectMap(const YAML::Node& n, const std::string& path) const {
  if (!n.IsMap())
    return errorAt(n, path, fmt::format("expected a mapping, got {}", nodeKind(n)));
  return okStatus();
}

Status Parser::expectList(const YAML::Node& n, const std::string& path) const {
  if (!n.IsSequence())
    return errorAt(n, path, fmt::format("expected a list, got {}", nodeKind(n)));
  return okStatus();
}

Status Parser::checkMap(const YAML::Node& map, const std::string& path,
                        const std::initializer_list<std::string_view>* allowed_keys) const {
  TRELLIS_RETURN_IF_ERROR(expectMap(map, path));
  std::set<std::string, std::less<>> seen;
  for (auto it = map.begin(); it != map.end(); ++it) {
    const YAML::Node key = it->first;
    if (!key.IsScalar())
      return errorAt(key, path, fmt::format("keys must be strings, got {}", nodeKind(key)));
    const std::string& k = key.Scalar();
    const std::string kpath = joinPath(path, k);
    if (!seen.insert(k).second)
      return errorAt(key, kpath, "duplicate key");
    if (const YAML::Node value = it->second; value.IsNull())
      null_value_key_.emplace(value.Mark().pos, key.Mark());
    if (!allowed_keys)
      continue;
    const auto& allowed = *allowed_keys;
    if (std::find(allowed.begin(), allowed.end(), k) != allowed.end())
      continue;
    std::string_view best;
    size_t best_dist = 3; // suggest only close matches
    for (std::string_view a : allowed) {
      const size_t d = editDistance(toLower(k), a);
      if (d < best_dist) {
        best_dist = d;
        best = a;
      }
    }
    if (!best.empty())
      return errorAt(key, kpath, fmt::format("unknown key (did you mean \"{}\"?)", best));
    std::string list;
    for (std::string_view a : allowed)
      list += fmt::format("{}{}", list.empty() ? "" : ", ", a);
    return errorAt(key, kpath, fmt::format("unknown key (expected one of: {})", list));
  }
  return okStatus();
}

// ---- scalars ---------------------------------------------------------------------------------

Result<std::string> Parser::scalar(const YAML::Node& n, const std::string& path,
                                   std::string_view what) const {
  if (!n.IsScalar())
    return errorAt(n, path, fmt::format("expected {}, got {}", what, nodeKind(n)));
  return n.Scalar();
}

Parser::Reader<std::string> Parser::string() const {
  return [this](const YAML::Node& n, const std::string& path) -> Result<std::string> {
    auto s = scalar(n, path, "a string");
    if (s.ok() && s->empty())
      return errorAt(n, path, "must not be empty");
    return s;
  };
}

Parser::Reader<std::string> Parser::name() const {
  return [this](const YAML::Node& n, const std::string& path) -> Result<std::string> {
    auto s = scalar(n, path, "a name");
    if (!s.ok())
      return s;
    if (!isName(*s))
      return errorAt(n, path,
                     fmt::format("invalid name \"{}\" (use 1 to {} letters, digits, '-', '_' "
                                 "or '.')",
                                 *s, kMaxNameLength));
    return s;
  };
}

Parser::Reader<uint64_t> Parser::integer(uint64_t min, uint64_t max) const {
  return [this, min, max](const YAML::Node& n, const std::string& path) -> Result<uint64_t> {
    auto want = fmt::format("an integer from {} to {}", min, max);
    auto s = scalar(n, path, want);
    if (!s.ok())
      return s.error();
    uint64_t v = 0;
    auto [ptr, ec] = std::from_chars(s->data(), s->data() + s->size(), v);
    if (ec == std::errc::result_out_of_range || (ec == std::errc() && (v < min || v > max)) ||
        (ec == std::errc() && ptr != s->data() + s->size()) || ec != std::errc() || s->empty())
      return errorAt(n, path, fmt::format("expected {}, got \"{}\"", want, *s));
    return v;
  };
}

Parser::Reader<double> Parser::percent() const {
  return [this](const YAML::Node& n, const std::string& path) -> Result<double> {
    auto s = scalar(n, path, "a percentage from 0 to 100");
    if (!s.ok())
      return s.error();
    double v = 0;
    auto [ptr, ec] = std::from_chars(s->data(), s->data() + s->size(), v);
    if (ec != std::errc() || ptr != s->data() + s->size() || !std::isfinite(v) || v < 0 || v > 100)
      return errorAt(n, path, fmt::format("expected a percentage from 0 to 100, got \"{}\"", *s));
    return v;
  };
}

Parser::Reader<bool> Parser::boolean() const {
  return [this](const YAML::Node& n, const std::string& path) -> Result<bool> {
    auto s = scalar(n, path, "true or false");
    if (!s.ok())
      return s.error();
    if (*s == "true" || *s == "True" || *s == "TRUE")
      return true;
    if (*s == "false" || *s == "False" || *s == "FALSE")
      return false;
    return errorAt(n, path, fmt::format("expected true or false, got \"{}\"", *s));
  };
}

Parser::Reader<Duration> Parser::duration(bool zero_ok) const {
  return [this, zero_ok](const YAML::Node& n, const std::string& path) -> Result<Duration> {
    auto s = scalar(n, path, "a duration such as 250ms or 10s");
    if (!s.ok())
      return s.error();
    auto d = parseDuration(*s);
    if (!d.ok())
      return errorAt(n, path, d.error().message());
    if (!zero_ok && d->count() == 0)
      return errorAt(n, path, "must be greater than 0");
    return d;
  };
}

Parser::Reader<uint64_t> Parser::size(uint64_t min, uint64_t max) const {
  return [this, min, max](const YAML::Node& n, const std::string& path) -> Result<uint64_t> {
    auto s = scalar(n, path, "a size such as 64KiB");
    if (!s.ok())
      return s.error();
    auto v = parseSize(*s);
    if (!v.ok())
      return errorAt(n, path, v.error().message());
    if (*v < min || *v > max)
      return errorAt(n, path, fmt::format("{} is out of range ({} to {} bytes)", *s, min, max));
    return v;
  };
}

Parser::Reader<net::SocketAddress> Parser::address(bool port_zero_ok) const {
  return [this, port_zero_ok](const YAML::Node& n,
                              const std::string& path) -> Result<net::SocketAddress> {
    auto s = scalar(n, path, "an address such as 127.0.0.1:8080");
    if (!s.ok())
      return s.error();
    auto a = net::parseSocketAddress(*s);
    if (!a.ok())
      return errorAt(n, path, a.error().message());
    if (!port_zero_ok && a->port == 0)
      return errorAt(n, path, fmt::format("invalid address \"{}\": port 0", *s));
    return a;
  };
}

Parser::Reader<std::string> Parser::headerName(bool for_adding) const {
  return [this, for_adding](const YAML::Node& n, const std::string& path) -> Result<std::string> {
    auto s = scalar(n, path, "a header name");
    if (!s.ok())
      return s;
    if (!isToken(*s))
      return errorAt(n, path, fmt::format("invalid header name \"{}\"", *s));
    std::string lower = toLower(*s);
    if (for_adding && std::find(std::begin(kReservedHeaders), std::end(kReservedHeaders), lower) !=
                          std::end(kReservedHeaders))
      return errorAt(n, path, fmt::format("header \"{}\" is managed by the proxy", lower));
    return lower;
  };
}

Parser::Reader<std::string> Parser::headerValue() const {
  return [this](const YAML::Node& n, const std::string& path) -> Result<std::string> {
    auto s = scalar(n, path, "a header value");
    if (!s.ok())
      return s;
    if (!isHeaderValue(*s))
      return errorAt(n, path, "header value contains a control character (CR, LF, NUL ...)");
    return s;
  };
}

// ---- top level -----------------------------------------------------------------------------

Result<std::shared_ptr<const Snapshot>> Parser::parse(const YAML::Node& root) {
  if (!root.IsDefined() || root.IsNull())
    return makeError(ErrorCode::kInvalidArgument,
                     "{}: the configuration is empty (expected listeners and clusters)", source_);
  if (!root.IsMap())
    return errorAt(root, "",
                   fmt::format("expected a mapping at the top level, got {}", nodeKind(root)));
  TRELLIS_RETURN_IF_ERROR(
      checkKeys(root, "", {"admin", "access_log", "concurrency", "listeners", "clusters"}));
  auto snap = std::make_shared<Snapshot>();
  snap->source = source_;

  if (const YAML::Node n = root["admin"]; n.IsDefined())
    TRELLIS_RETURN_IF_ERROR(parseAdmin(n, "admin", snap->admin));
  if (const YAML::Node n = root["access_log"]; n.IsDefined()) {
    snap->access_log.emplace();
    TRELLIS_RETURN_IF_ERROR(parseAccessLog(n, "access_log", *snap->access_log));
  }
  TRELLIS_RETURN_IF_ERROR(field(root, "", "concurrency", snap->concurrency, integer(0, 1024)));

  // Clusters first: routes and tcp listeners refer to them by name.
  if (const YAML::Node list = root["clusters"]; list.IsDefined()) {
    TRELLIS_RETURN_IF_ERROR(expectList(list, "clusters"));
    std::map<std::string, int, std::less<>> first_line;
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string path = indexPath("clusters", i);
      Cluster c;
      TRELLIS_RETURN_IF_ERROR(parseCluster(list[i], path, c));
      auto [it, fresh] = first_line.emplace(c.name, list[i]["name"].Mark().line + 1);
      if (!fresh)
        return errorAt(list[i]["name"], path + ".name",
                       fmt::format("duplicate cluster name \"{}\" (first defined at line {})",
                                   c.name, it->second));
      cluster_index_.emplace(c.name, snap->clusters.size());
      snap->clusters.push_back(std::move(c));
    }
  }

  const YAML::Node list = root["listeners"];
  if (!list.IsDefined())
    return missing(root, "", "listeners");
  TRELLIS_RETURN_IF_ERROR(expectList(list, "listeners"));
  if (list.size() == 0)
    return errorAt(list, "listeners", "must list at least one listener");
  std::map<std::string, int, std::less<>> name_line;
  std::vector<std::pair<net::SocketAddress, std::string>> bound; // address, its path
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string path = indexPath("listeners", i);
    Listener l;
    TRELLIS_RETURN_IF_ERROR(parseListener(list[i], path, l));
    auto [it, fresh] = name_line.emplace(l.name, list[i]["name"].Mark().line + 1);
    if (!fresh)
      return errorAt(list[i]["name"], path + ".name",
                     fmt::format("duplicate listener name \"{}\" (first defined at line {})",
                                 l.name, it->second));
    // Port 0 asks the kernel for a fresh port each time, so it never collides.
    if (l.address.port != 0) {
      for (const auto& [addr, other] : bound) {
        const bool same_port = addr.port == l.address.port;
        const bool overlap =
            addr.ip == l.address.ip ||
            (addr.ip.is_unspecified() && addr.ip.is_v4() == l.address.ip.is_v4()) ||
            (l.address.ip.is_unspecified() && addr.ip.is_v4() == l.address.ip.is_v4());
        if (same_port && overlap)
          return errorAt(list[i]["address"], path + ".address",
                         fmt::format("address {} conflicts with {}.address ({})",
                                     l.address.toString(), other, addr.toString()));
      }
      bound.emplace_back(l.address, path);
    }
    snap->listeners.push_back(std::move(l));
  }
  if (snap->admin.address.port != 0) {
    for (size_t i = 0; i < snap->listeners.size(); ++i) {
      if (snap->listeners[i].address == snap->admin.address)
        return errorAt(root["admin"]["address"], "admin.address",
                       fmt::format("address {} is also used by listeners[{}]",
                                   snap->admin.address.toString(), i));
    }
  }
  return std::shared_ptr<const Snapshot>(std::move(snap));
}

Status Parser::parseAdmin(const YAML::Node& n, const std::string& path, AdminConfig& out) const {
  TRELLIS_RETURN_IF_ERROR(checkKeys(n, path, {"address"}));
  return field(n, path, "address", out.address, address(true));
}

Status Parser::parseAccessLog(const YAML::Node& n, const std::string& path,
                              AccessLogConfig& out) const {
  TRELLIS_RETURN_IF_ERROR(checkKeys(n, path, {"path"}));
  return required(n, path, "path", out.path, string());
}

// ---- clusters --------------------------------------------------------------------------------

Status Parser::parseCluster(const YAML::Node& n, const std::string& path, Cluster& out) const {
  TRELLIS_RETURN_IF_ERROR(
      checkKeys(n, path,
                {"name", "lb", "hash_on", "connect_timeout", "endpoints", "health_check",
                 "outlier_detection", "circuit_breakers", "panic_threshold", "pool",
                 "least_request", "ring_hash", "maglev", "trust_proxy_errors"}));
  TRELLIS_RETURN_IF_ERROR(required(n, path, "name", out.name, name()));

  if (const YAML::Node lb = n["lb"]; lb.IsDefined()) {
    auto s = scalar(lb, path + ".lb", "a policy name");
    if (!s.ok())
      return s.error();
    auto p = parseLbPolicy(*s);
    if (!p)
      return errorAt(lb, path + ".lb",
                     fmt::format("unknown policy \"{}\" (expected round_robin, least_request, "
                                 "random, ring_hash or maglev)",
                                 *s));
    out.lb.policy = *p;
  }
  const bool hashing = out.lb.policy == LbPolicy::kRingHash || out.lb.policy == LbPolicy::kMaglev;
  const char* policy = lbPolicyName(out.lb.policy);
  if (const YAML::Node h = n["hash_on"]; h.IsDefined()) {
    if (!hashing)
      return errorAt(h, path + ".hash_on",
                     fmt::format("only ring_hash and maglev hash requests (lb is {})", policy));
    out.hash_on.emplace();
    TRELLIS_RETURN_IF_ERROR(parseHashPolicy(h, path + ".hash_on", *out.hash_on));
  } else if (hashing) {
    return missing(n, path, "hash_on", fmt::format("lb {} needs it", policy));
  }

  // Policy options: only next to their policy, so a mismatch is not silently ignored.
  auto policyOptions = [&](const char* key, LbPolicy want,
                           std::initializer_list<std::string_view> keys) -> Status {
    const YAML::Node o = n[key];
    if (!o.IsDefined())
      return okStatus();
    if (out.lb.policy != want)
      return errorAt(o, joinPath(path, key),
                     fmt::format("options for lb {} but lb is {}", key, policy));
    return checkKeys(o, joinPath(path, key), keys);
  };
  TRELLIS_RETURN_IF_ERROR(
      policyOptions("least_request", LbPolicy::kLeastRequest, {"choice_count"}));
  if (const YAML::Node o = n["least_request"]; o.IsDefined())
    TRELLIS_RETURN_IF_ERROR(
        field(o, path + ".least_request", "choice_count", out.lb.choice_count, integer(2, 100)));
  TRELLIS_RETURN_IF_ERROR(
      policyOptions("ring_hash", LbPolicy::kRingHash, {"min_ring_size", "max_ring_size"}));
  if (const YAML::Node o = n["ring_hash"]; o.IsDefined()) {
    TRELLIS_RETURN_IF_ERROR(field(o, path + ".ring_hash", "min_ring_size", out.lb.min_ring_size,
                                  integer(1, 8 * 1024 * 1024)));
    TRELLIS_RETURN_IF_ERROR(field(o, path + ".ring_hash", "max_ring_size", out.lb.max_ring_size,
                                  integer(1, 8 * 1024 * 1024)));
    if (out.lb.max_ring_size < out.lb.min_ring_size)
      return errorAt(o, path + ".ring_hash",
                     fmt::format("max_ring_size {} is below min_ring_size {}", out.lb.max_ring_size,
                                 out.lb.min_ring_size));
  }
  TRELLIS_RETURN_IF_ERROR(policyOptions("maglev", LbPolicy::kMaglev, {"table_size"}));
  if (const YAML::Node o = n["maglev"]; o.IsDefined()) {
    TRELLIS_RETURN_IF_ERROR(field(o, path + ".maglev", "table_size", out.lb.maglev_table_size,
                                  integer(3, kMaxMaglevTableSize)));
    if (!isPrime(out.lb.maglev_table_size))
      return errorAt(
          o["table_size"], path + ".maglev.table_size",
          fmt::format("{} is not prime (e.g. 65537, 131071, 655373)", out.lb.maglev_table_size));
  }
  TRELLIS_RETURN_IF_ERROR(
      field(n, path, "panic_threshold", out.lb.panic_threshold, integer(0, 100)));
  TRELLIS_RETURN_IF_ERROR(field(n, path, "connect_timeout", out.connect_timeout, duration(false)));
  TRELLIS_RETURN_IF_ERROR(field(n, path, "trust_proxy_errors", out.trust_proxy_errors, boolean()));

  const YAML::Node eps = n["endpoints"];
  if (!eps.IsDefined())
    return missing(n, path, "endpoints");
  TRELLIS_RETURN_IF_ERROR(expectList(eps, path + ".endpoints"));
  if (eps.size() == 0)
    return errorAt(eps, path + ".endpoints", "must list at least one endpoint");
  for (size_t i = 0; i < eps.size(); ++i) {
    const std::string epath = indexPath(path + ".endpoints", i);
    Endpoint ep;
    TRELLIS_RETURN_IF_ERROR(parseEndpoint(eps[i], epath, ep));
    for (size_t j = 0; j < out.endpoints.size(); ++j) {
      if (out.endpoints[j].address == ep.address)
        return errorAt(
            eps[i], epath,
            fmt::format("duplicate endpoint {} (also endpoints[{}])", ep.address.toString(), j));
    }
    out.endpoints.push_back(ep);
  }
  if (out.lb.policy == LbPolicy::kMaglev && out.endpoints.size() >= out.lb.maglev_table_size)
    return errorAt(eps, path + ".endpoints",
                   fmt::format("{} endpoints need a maglev table_size above that (is {})",
                               out.endpoints.size(), out.lb.maglev_table_size));

  if (const YAML::Node h = n["health_check"]; h.IsDefined()) {
    out.health_check.emplace();
    TRELLIS_RETURN_IF_ERROR(parseHealthCheck(h, path + ".health_check", *out.health_check));
  }
  if (const YAML::Node o = n["outlier_detection"]; o.IsDefined()) {
    out.outlier_detection.emplace();
    TRELLIS_RETURN_IF_ERROR(parseOutlier(o, path + ".outlier_detection", *out.outlier_detection));
  }
  if (const YAML::Node cb = n["circuit_breakers"]; cb.IsDefined()) {
    const std::string p = path + ".circuit_breakers";
    TRELLIS_RETURN_IF_ERROR(checkKeys(
        cb, p, {"max_connections", "max_pending_requests", "max_requests", "max_retries"}));
    auto& b = out.circuit_breakers;
    TRELLIS_RETURN_IF_ERROR(
        field(cb, p, "max_connections", b.max_connections, integer(1, 1000000)));
    TRELLIS_RETURN_IF_ERROR(
        field(cb, p, "max_pending_requests", b.max_pending_requests, integer(1, 1000000)));
    TRELLIS_RETURN_IF_ERROR(field(cb, p, "max_requests", b.max_requests, integer(1, 1000000)));
    TRELLIS_RETURN_IF_ERROR(field(cb, p, "max_retries", b.max_retries, integer(0, 1000000)));
  }
  if (const YAML::Node pool = n["pool"]; pool.IsDefined()) {
    const std::string p = path + ".pool";
    TRELLIS_RETURN_IF_ERROR(checkKeys(
        pool, p, {"idle_timeout", "max_requests_per_connection", "max_idle_per_endpoint"}));
    TRELLIS_RETURN_IF_ERROR(field(pool, p, "idle_timeout", out.pool.idle_timeout, duration(false)));
    TRELLIS_RETURN_IF_ERROR(field(pool, p, "max_requests_per_connection",
                                  out.pool.max_requests_per_connection, integer(0, 1000000000)));
    TRELLIS_RETURN_IF_ERROR(field(pool, p, "max_idle_per_endpoint", out.pool.max_idle_per_endpoint,
                                  integer(0, 100000)));
  }
  return okStatus();
}

Status Parser::parseEndpoint(const YAML::Node& n, const std::string& path, Endpoint& out) const {
  if (n.IsScalar()) {
    auto a = address(false)(n, path);
    if (!a.ok())
      return a.error();
    out.address = *a;
    return okStatus();
  }
  if (!n.IsMap())
    return errorAt(n, path,
                   fmt::format("expected an address or a mapping with address and weight, "
                               "got {}",
                               nodeKind(n)));
  TRELLIS_RETURN_IF_ERROR(checkKeys(n, path, {"address", "weight"}));
  TRELLIS_RETURN_IF_ERROR(required(n, path, "address", out.address, address(false)));
  return field(n, path, "weight", out.weight, integer(1, kMaxEndpointWeight));
}

Status Parser::parseHashPolicy(const YAML::Node& n, const std::string& path,
                               HashPolicy& out) const {
  TRELLIS_RETURN_IF_ERROR(checkKeys(n, path, {"header", "cookie", "source_ip"}));
  if (n.size() != 1)
    return errorAt(n, path, "set exactly one of header, cookie or source_ip");
  if (n["header"].IsDefined()) {
    out.source = HashSource::kHeader;
    return field(n, path, "header", out.name, headerName(false));
  }
  if (const YAML::Node c = n["cookie"]; c.IsDefined()) {
    out.source = HashSource::kCookie;
    auto s = scalar(c, path + ".cookie", "a cookie name");
    if (!s.ok())
      return s.error();
    if (!isToken(*s))
      return errorAt(c, path + ".cookie", fmt::format("invalid cookie name \"{}\"", *s));
    out.name = *s;
    return okStatus();
  }
  bool on = false;
  TRELLIS_RETURN_IF_ERROR(field(n, path, "source_ip", on, boolean()));
  if (!on)
    return errorAt(n["source_ip"], path + ".source_ip",
                   "must be true (or hash on a header or cookie instead)");
  out.source = HashSource::kSourceIp;
  return okStatus();
}

Status Parser::parseHealthCheck(const YAML::Node& n, const std::string& path,
                                HealthCheck& out) const {
  TRELLIS_RETURN_IF_ERROR(checkKeys(n, path,
                                    {"path", "tcp", "host", "interval", "timeout",
                                     "healthy_threshold", "unhealthy_threshold", "start_healthy"}));
  bool tcp = false;
  TRELLIS_RETURN_IF_ERROR(field(n, path, "tcp", tcp, boolean()));
  const bool has_path = n["path"].IsDefined();
  if (tcp && has_path)
    return errorAt(n, path, "set either path (HTTP check) or tcp: true, not both");
  if (!tcp && !has_path)
    return errorAt(n, path, "set path (an HTTP check) or tcp: true (a connect check)");
  if (tcp) {
    out.kind = HealthCheckKind::kTcp;
    if (n["host"].IsDefined())
      return errorAt(n["host"], path + ".host", "only HTTP checks send a Host header");
  } else {
    out.kind = HealthCheckKind::kHttp;
    TRELLIS_RETURN_IF_ERROR(field(n, path, "path", out.path, string()));
    if (out.path.front() != '/' || !isHeaderValue(out.path) ||
        out.path.find(' ') != std::string::npos)
      return errorAt(n["path"], path + ".path",
                     fmt::format("must be a path starting with '/', got \"{}\"", out.path));
    TRELLIS_RETURN_IF_ERROR(field(n, path, "host", out.host, headerValue()));
  }
  TRELLIS_RETURN_IF_ERROR(field(n, path, "interval", out.interval, duration(false)));
  TRELLIS_RETURN_IF_ERROR(field(n, path, "timeout", out.timeout, duration(false)));
  TRELLIS_RETURN_IF_ERROR(
      field(n, path, "healthy_threshold", out.healthy_threshold, integer(1, 100)));
  TRELLIS_RETURN_IF_ERROR(field(n, path, "start_healthy", out.start_healthy, boolean()));
  return field(n, path, "unhealthy_threshold", out.unhealthy_threshold, integer(1, 100));
}

Status Parser::parseOutlier(const YAML::Node& n, const std::string& path,
                            OutlierDetection& out) const {
  TRELLIS_RETURN_IF_ERROR(
      checkKeys(n, path,
                {"consecutive_5xx", "consecutive_gateway_failure", "interval", "base_ejection_time",
                 "max_ejection_time", "max_ejection_percent"}));
  TRELLIS_RETURN_IF_ERROR(field(n, path, "consecutive_5xx", out.consecutive_5xx, integer(0, 1000)));
  TRELLIS_RETURN_IF_ERROR(field(n, path, "consecutive_gateway_failure",
                                out.consecutive_gateway_failure, integer(0, 1000)));
  if (out.consecutive_5xx == 0 && out.consecutive_gateway_failure == 0)
    return errorAt(n, path,
                   "consecutive_5xx and consecutive_gateway_failure are both 0, nothing would "
                   "ever be ejected (remove outlier_detection to turn it off)");
  TRELLIS_RETURN_IF_ERROR(field(n, path, "interval", out.interval, duration(false)));
  TRELLIS_RETURN_IF_ERROR(
      field(n, path, "base_ejection_time", out.base_ejection_time, duration(false)));
  TRELLIS_RETURN_IF_ERROR(
      field(n, path, "max_ejection_time", out.max_ejection_time, duration(false)));
  if (out.max_ejection_time < out.base_ejection_time)
    return errorAt(n["max_ejection_time"].IsDefined() ? n["max_ejection_time"] : n,
                   n["max_ejection_time"].IsDefined() ? path + ".max_ejection_time" : path,
                   fmt::format("max_ejection_time {} is below base_ejection_time {}",
                               formatDuration(out.max_ejection_time),
                               formatDuration(out.base_ejection_time)));
  return field(n, path, "max_ejection_percent", out.max_ejection_percent, integer(0, 100));
}

// ---- listeners and routes ------------------------------------------------------------------

Result<size_t> Parser::clusterRef(const YAML::Node& n, const std::string& path,
                                  std::string& name_out) const {
  auto s = name()(n, path);
  if (!s.ok())
    return s.error();
  auto it = cluster_index_.find(*s);
  if (it == cluster_index_.end())
    return errorAt(n, path, fmt::format("unknown cluster \"{}\"", *s));
  name_out = *s;
  return it->second;
}

Status Parser::parseListener(const YAML::Node& n, const std::string& path, Listener& out) const {
  TRELLIS_RETURN_IF_ERROR(
      checkKeys(n, path,
                {"name", "address", "protocol", "routes", "cluster", "max_connections",
                 "idle_timeout", "buffer_limit", "max_header_bytes", "max_headers",
                 "header_read_timeout", "request_buffer_limit", "max_requests_per_connection"}));
  TRELLIS_RETURN_IF_ERROR(required(n, path, "name", out.name, name()));
  TRELLIS_RETURN_IF_ERROR(required(n, path, "address", out.address, address(true)));
  if (const YAML::Node p = n["protocol"]; p.IsDefined()) {
    auto s = scalar(p, path + ".protocol", "http or tcp");
    if (!s.ok())
      return s.error();
    if (*s == "http")
      out.protocol = Protocol::kHttp;
    else if (*s == "tcp")
      out.protocol = Protocol::kTcp;
    else
      return errorAt(p, path + ".protocol",
                     fmt::format("unknown protocol \"{}\" (expected http or tcp)", *s));
  }
  TRELLIS_RETURN_IF_ERROR(
      field(n, path, "max_connections", out.max_connections, integer(1, 1000000)));
  TRELLIS_RETURN_IF_ERROR(field(n, path, "idle_timeout", out.idle_timeout, duration(true)));
  TRELLIS_RETURN_IF_ERROR(
      field(n, path, "buffer_limit", out.buffer_limit, size(16 * 1024, 1024ull << 20)));

  if (out.protocol == Protocol::kTcp) {
    for (const char* key : {"routes", "max_header_bytes", "max_headers", "header_read_timeout",
                            "request_buffer_limit", "max_requests_per_connection"}) {
      if (n[key].IsDefined())
        return errorAt(n[key], joinPath(path, key), "only valid for http listeners");
    }
    const YAML::Node c = n["cluster"];
    if (!c.IsDefined())
      return missing(n, path, "cluster", "a tcp listener forwards to a cluster");
    auto idx = clusterRef(c, path + ".cluster", out.cluster);
    if (!idx.ok())
      return idx.error();
    out.cluster_index = *idx;
    return okStatus();
  }

  if (n["cluster"].IsDefined())
    return errorAt(n["cluster"], path + ".cluster",
                   "only valid for tcp listeners (http listeners route with routes)");
  TRELLIS_RETURN_IF_ERROR(
      field(n, path, "max_header_bytes", out.max_header_bytes, size(1024, 8ull << 20)));
  TRELLIS_RETURN_IF_ERROR(field(n, path, "max_headers", out.max_headers, integer(1, 10000)));
  TRELLIS_RETURN_IF_ERROR(
      field(n, path, "header_read_timeout", out.header_read_timeout, duration(false)));
  TRELLIS_RETURN_IF_ERROR(
      field(n, path, "request_buffer_limit", out.request_buffer_limit, size(0, 1024ull << 20)));
  TRELLIS_RETURN_IF_ERROR(field(n, path, "max_requests_per_connection",
                                out.max_requests_per_connection, integer(0, 1000000000)));
  const YAML::Node routes = n["routes"];
  if (!routes.IsDefined())
    return missing(n, path, "routes", "an http listener needs at least one route");
  TRELLIS_RETURN_IF_ERROR(expectList(routes, path + ".routes"));
  if (routes.size() == 0)
    return errorAt(routes, path + ".routes", "must list at least one route");
  for (size_t i = 0; i < routes.size(); ++i) {
    Route r;
    TRELLIS_RETURN_IF_ERROR(parseRoute(routes[i], indexPath(path + ".routes", i), r));
    out.routes.push_back(std::move(r));
  }
  return okStatus();
}

Status Parser::parseRoute(const YAML::Node& n, const std::string& path, Route& out) const {
  TRELLIS_RETURN_IF_ERROR(
      checkKeys(n, path,
                {"name", "match", "cluster", "weighted_clusters", "request_headers_to_add",
                 "request_headers_to_append", "request_headers_to_remove", "redirect", "timeout",
                 "retries", "fault", "rate_limit"}));
  TRELLIS_RETURN_IF_ERROR(field(n, path, "name", out.name, name()));
  const YAML::Node m = n["match"];
  if (!m.IsDefined())
    return missing(n, path, "match");
  TRELLIS_RETURN_IF_ERROR(parseMatch(m, path + ".match", out.match));

  const YAML::Node c = n["cluster"];
  const YAML::Node wc = n["weighted_clusters"];
  if (const YAML::Node rd = n["redirect"]; rd.IsDefined()) {
    // A redirect answers the request itself: nothing is forwarded, so nothing of forwarding
    // applies.
    for (const char* k :
         {"cluster", "weighted_clusters", "request_headers_to_add", "request_headers_to_append",
          "request_headers_to_remove", "retries", "fault", "rate_limit"}) {
      if (n[k].IsDefined())
        return errorAt(n[k], joinPath(path, k),
                       "not allowed with redirect (a redirect route forwards nothing)");
    }
    out.redirect.emplace();
    TRELLIS_RETURN_IF_ERROR(parseRedirect(rd, path + ".redirect", *out.redirect));
    if (out.redirect->prefix_rewrite && out.match.kind == PathMatchKind::kRegex)
      return errorAt(rd["prefix_rewrite"], path + ".redirect.prefix_rewrite",
                     "needs a prefix or path match (a regex match has no prefix to replace)");
    return field(n, path, "timeout", out.timeout, duration(true));
  }
  if (c.IsDefined() && wc.IsDefined())
    return errorAt(n, path, "set either cluster or weighted_clusters, not both");
  if (c.IsDefined()) {
    WeightedCluster w;
    auto idx = clusterRef(c, path + ".cluster", w.cluster);
    if (!idx.ok())
      return idx.error();
    w.cluster_index = *idx;
    out.clusters.push_back(std::move(w));
    out.total_weight = 1;
  } else if (wc.IsDefined()) {
    const std::string wpath = path + ".weighted_clusters";
    TRELLIS_RETURN_IF_ERROR(expectList(wc, wpath));
    if (wc.size() == 0)
      return errorAt(wc, wpath, "must list at least one cluster");
    out.weighted = true;
    for (size_t i = 0; i < wc.size(); ++i) {
      const std::string p = indexPath(wpath, i);
      TRELLIS_RETURN_IF_ERROR(checkKeys(wc[i], p, {"cluster", "weight"}));
      WeightedCluster w;
      if (!wc[i]["cluster"].IsDefined())
        return missing(wc[i], p, "cluster");
      auto idx = clusterRef(wc[i]["cluster"], p + ".cluster", w.cluster);
      if (!idx.ok())
        return idx.error();
      w.cluster_index = *idx;
      TRELLIS_RETURN_IF_ERROR(required(wc[i], p, "weight", w.weight, integer(0, kMaxRouteWeight)));
      for (const WeightedCluster& prev : out.clusters) {
        if (prev.cluster == w.cluster)
          return errorAt(wc[i]["cluster"], p + ".cluster",
                         fmt::format("cluster \"{}\" is listed twice", w.cluster));
      }
      out.total_weight += w.weight;
      out.clusters.push_back(std::move(w));
    }
    if (out.total_weight == 0)
      return errorAt(wc, wpath, "weights add up to 0; at least one must be positive");
  } else {
    return errorAt(n, path,
                   "missing required key \"cluster\", \"weighted_clusters\" or \"redirect\"");
  }

  if (const YAML::Node h = n["request_headers_to_add"]; h.IsDefined())
    TRELLIS_RETURN_IF_ERROR(
        parseHeaderList(h, path + ".request_headers_to_add", out.request_headers_to_add));
  if (const YAML::Node h = n["request_headers_to_append"]; h.IsDefined())
    TRELLIS_RETURN_IF_ERROR(
        parseHeaderList(h, path + ".request_headers_to_append", out.request_headers_to_append));
  if (const YAML::Node h = n["request_headers_to_remove"]; h.IsDefined()) {
    const std::string hpath = path + ".request_headers_to_remove";
    TRELLIS_RETURN_IF_ERROR(expectList(h, hpath));
    for (size_t i = 0; i < h.size(); ++i) {
      const std::string p = indexPath(hpath, i);
      auto nm = headerName(true)(h[i], p);
      if (!nm.ok())
        return nm.error();
      if (std::find(out.request_headers_to_remove.begin(), out.request_headers_to_remove.end(),
                    *nm) != out.request_headers_to_remove.end())
        return errorAt(h[i], p, "header is listed twice (names are case-insensitive)");
      out.request_headers_to_remove.push_back(*nm);
    }
  }
  // A name both set and appended, or set and removed, has no single meaning.
  for (const HeaderValue& a : out.request_headers_to_append) {
    for (const HeaderValue& b : out.request_headers_to_add)
      if (a.name == b.name)
        return errorAt(n["request_headers_to_append"], path + ".request_headers_to_append",
                       fmt::format("header \"{}\" is also in request_headers_to_add", a.name));
  }
  for (const std::string& r : out.request_headers_to_remove) {
    for (const auto* list : {&out.request_headers_to_add, &out.request_headers_to_append})
      for (const HeaderValue& b : *list)
        if (r == b.name)
          return errorAt(n["request_headers_to_remove"], path + ".request_headers_to_remove",
                         fmt::format("header \"{}\" is also added by this route", r));
  }
  TRELLIS_RETURN_IF_ERROR(field(n, path, "timeout", out.timeout, duration(true)));
  if (const YAML::Node r = n["retries"]; r.IsDefined())
    TRELLIS_RETURN_IF_ERROR(parseRetries(r, path + ".retries", out.retries));
  if (const YAML::Node f = n["fault"]; f.IsDefined())
    TRELLIS_RETURN_IF_ERROR(parseFault(f, path + ".fault", out.fault));
  if (const YAML::Node rl = n["rate_limit"]; rl.IsDefined()) {
    out.rate_limit.emplace();
    TRELLIS_RETURN_IF_ERROR(parseRateLimit(rl, path + ".rate_limit", *out.rate_limit));
  }
  return okStatus();
}

Status Parser::parseHeaderList(const YAML::Node& h, const std::string& hpath,
                               std::vector<HeaderValue>& out) const {
  TRELLIS_RETURN_IF_ERROR(checkFreeKeys(h, hpath));
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string p = joinPath(hpath, it->first.Scalar());
    auto nm = headerName(true)(it->first, p);
    if (!nm.ok())
      return nm.error();
    auto v = headerValue()(it->second, p);
    if (!v.ok())
      return v.error();
    for (const HeaderValue& prev : out) {
      if (prev.name == *nm)
        return errorAt(it->first, p, "header is listed twice (names are case-insensitive)");
    }
    out.push_back({*nm, *v});
  }
  return okStatus();
}

Result<std::shared_ptr<const std::regex>> Parser::regex(const YAML::Node& n,
                                                        const std::string& path) const {
  auto src = scalar(n, path, "a regular expression");
  if (!src.ok())
    return src.error();
  if (src->empty() || src->size() > kMaxRegexLength)
    return errorAt(n, path, fmt::format("a regex must have 1 to {} characters", kMaxRegexLength));
  try {
    auto flags = std::regex::ECMAScript;
#ifdef __GLIBCXX__
    // libstdc++'s default matcher backtracks recursively, so a long input can exhaust the
    // stack and some patterns take exponential time; the polynomial (Thompson) matcher runs
    // in O(input x pattern) without deep recursion. It forbids back-references.
    flags |= std::regex_constants::__polynomial;
#endif
    return std::make_shared<const std::regex>(*src, flags);
  } catch (const std::regex_error& e) {
    return errorAt(n, path, fmt::format("invalid regex \"{}\": {}", *src, e.what()));
  }
}

Status Parser::regexMatcher(const YAML::Node& n, const std::string& path, std::string& source,
                            std::shared_ptr<const std::regex>& out) const {
  // {regex: SOURCE}
  TRELLIS_RETURN_IF_ERROR(checkKeys(n, path, {"regex"}));
  if (!n["regex"].IsDefined())
    return missing(n, path, "regex");
  auto rx = regex(n["regex"], path + ".regex");
  if (!rx.ok())
    return rx.error();
  source = n["regex"].Scalar();
  out = *rx;
  return okStatus();
}

Status Parser::parseRedirect(const YAML::Node& n, const std::string& path, Redirect& out) const {
  TRELLIS_RETURN_IF_ERROR(
      checkKeys(n, path, {"scheme", "host", "port", "path", "prefix_rewrite", "status"}));
  if (const YAML::Node sc = n["scheme"]; sc.IsDefined()) {
    auto s = scalar(sc, path + ".scheme", "http or https");
    if (!s.ok())
      return s.error();
    if (*s != "http" && *s != "https")
      return errorAt(sc, path + ".scheme", fmt::format("must be http or https, got \"{}\"", *s));
    out.scheme = *s;
  }
  if (const YAML::Node h = n["host"]; h.IsDefined()) {
    auto s = scalar(h, path + ".host", "a host name");
    if (!s.ok())
      return s.error();
    const bool ok =
        !s->empty() && s->size() <= 253 && std::all_of(s->begin(), s->end(), [](char ch) {
          return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '.';
        });
    if (!ok)
      return errorAt(
          h, path + ".host",
          fmt::format("must be a host name (letters, digits, '-', '.'), got \"{}\"", *s));
    out.host = *s;
  }
  if (n["port"].IsDefined()) {
    uint16_t port = 0;
    TRELLIS_RETURN_IF_ERROR(field(n, path, "port", port, integer(1, 65535)));
    out.port = port;
  }
  if (n["path"].IsDefined() && n["prefix_rewrite"].IsDefined())
    return errorAt(n, path, "set either path or prefix_rewrite, not both");
  for (const char* k : {"path", "prefix_rewrite"}) {
    if (const YAML::Node v = n[k]; v.IsDefined()) {
      auto s = scalar(v, joinPath(path, k), "a path");
      if (!s.ok())
        return s.error();
      if (s->empty() || s->front() != '/' || !isHeaderValue(*s) ||
          s->find_first_of(" ?#") != std::string::npos)
        return errorAt(v, joinPath(path, k),
                       fmt::format("must be a path starting with '/' (no space, '?' or '#'), "
                                   "got \"{}\"",
                                   *s));
      (std::string_view(k) == "path" ? out.path : out.prefix_rewrite) = *s;
    }
  }
  TRELLIS_RETURN_IF_ERROR(field(n, path, "status", out.status, integer(300, 399)));
  if (out.status != 301 && out.status != 302 && out.status != 303 && out.status != 307 &&
      out.status != 308)
    return errorAt(n["status"], path + ".status",
                   fmt::format("must be 301, 302, 303, 307 or 308, got {}", out.status));
  return okStatus();
}

Status Parser::parseMatch(const YAML::Node& n, const std::string& path, RouteMatch& out) const {
  TRELLIS_RETURN_IF_ERROR(
      checkKeys(n, path, {"prefix", "path", "regex", "method", "headers", "query"}));
  int kinds = 0;
  for (const char* key : {"prefix", "path", "regex"})
    kinds += n[key].IsDefined() ? 1 : 0;
  if (kinds != 1)
    return errorAt(n, path,
                   kinds == 0 ? "set one of prefix, path or regex"
                              : "set only one of prefix, path or regex");
  const char* key = n["prefix"].IsDefined() ? "prefix" : n["path"].IsDefined() ? "path" : "regex";
  out.kind = n["prefix"].IsDefined() ? PathMatchKind::kPrefix
             : n["path"].IsDefined() ? PathMatchKind::kExact
                                     : PathMatchKind::kRegex;
  const std::string kpath = joinPath(path, key);
  auto s = scalar(n[key], kpath, "a string");
  if (!s.ok())
    return s.error();
  out.path = *s;
  if (out.kind == PathMatchKind::kRegex) {
    auto rx = regex(n[key], kpath);
    if (!rx.ok())
      return rx.error();
    out.regex = *rx;
  } else if (out.path.empty() || out.path.front() != '/') {
    return errorAt(n[key], kpath, fmt::format("must start with '/', got \"{}\"", out.path));
  }

  if (const YAML::Node m = n["method"]; m.IsDefined()) {
    const std::string mpath = path + ".method";
    auto one = [&](const YAML::Node& v, const std::string& p) -> Status {
      auto s = scalar(v, p, "an HTTP method");
      if (!s.ok())
        return s.error();
      if (!isToken(*s))
        return errorAt(v, p, fmt::format("invalid method \"{}\"", *s));
      out.methods.push_back(*s);
      return okStatus();
    };
    if (m.IsSequence()) {
      if (m.size() == 0)
        return errorAt(m, mpath, "must list at least one method");
      for (size_t i = 0; i < m.size(); ++i)
        TRELLIS_RETURN_IF_ERROR(one(m[i], indexPath(mpath, i)));
    } else {
      TRELLIS_RETURN_IF_ERROR(one(m, mpath));
    }
  }
  if (const YAML::Node h = n["headers"]; h.IsDefined()) {
    const std::string hpath = path + ".headers";
    TRELLIS_RETURN_IF_ERROR(checkFreeKeys(h, hpath));
    for (auto it = h.begin(); it != h.end(); ++it) {
      const std::string p = joinPath(hpath, it->first.Scalar());
      auto nm = headerName(false)(it->first, p);
      if (!nm.ok())
        return nm.error();
      HeaderMatcher hm{*nm, "", nullptr};
      if (it->second.IsMap()) {
        TRELLIS_RETURN_IF_ERROR(regexMatcher(it->second, p, hm.value, hm.regex));
      } else if (!it->second.IsNull()) { // `name:` with no value means presence only, like ""
        auto v = headerValue()(it->second, p);
        if (!v.ok())
          return v.error();
        hm.value = *v;
      }
      for (const HeaderMatcher& prev : out.headers) {
        if (prev.name == hm.name)
          return errorAt(it->first, p, "header is listed twice (names are case-insensitive)");
      }
      out.headers.push_back(std::move(hm));
    }
  }
  if (const YAML::Node q = n["query"]; q.IsDefined()) {
    const std::string qpath = path + ".query";
    TRELLIS_RETURN_IF_ERROR(checkFreeKeys(q, qpath));
    for (auto it = q.begin(); it != q.end(); ++it) {
      const std::string p = joinPath(qpath, it->first.Scalar());
      auto nm = scalar(it->first, p, "a query parameter name");
      if (!nm.ok())
        return nm.error();
      if (nm->empty() || nm->size() > 256 || !isHeaderValue(*nm) ||
          nm->find_first_of("&=# ") != std::string::npos)
        return errorAt(it->first, p,
                       "a query parameter name has 1 to 256 characters, none of '&', '=', '#', "
                       "space or control characters");
      QueryMatcher qm{*nm, "", nullptr};
      if (it->second.IsMap()) {
        TRELLIS_RETURN_IF_ERROR(regexMatcher(it->second, p, qm.value, qm.regex));
      } else {
        auto v = scalar(it->second, p, "a value (or {regex: ...})");
        if (!v.ok())
          return v.error();
        qm.value = *v;
      }
      for (const QueryMatcher& prev : out.query)
        if (prev.name == qm.name)
          return errorAt(it->first, p, "query parameter is listed twice");
      out.query.push_back(std::move(qm));
    }
  }
  return okStatus();
}

// Each allowed value of retries.on and the flag it sets.
struct RetryCondition {
  std::string_view name;
  bool RetryOn::*flag;
};
constexpr RetryCondition kRetryConditions[] = {
    {"connect-failure", &RetryOn::connect_failure},
    {"refused-stream", &RetryOn::refused_stream},
    {"reset", &RetryOn::reset},
    {"5xx", &RetryOn::status_5xx},
    {"gateway-error", &RetryOn::gateway_error},
    {"retriable-status-codes", &RetryOn::retriable_status_codes},
};

Status Parser::parseRetries(const YAML::Node& n, const std::string& path, RetryPolicy& out) const {
  TRELLIS_RETURN_IF_ERROR(
      checkKeys(n, path,
                {"attempts", "per_try_timeout", "on", "retriable_status_codes", "backoff",
                 "budget_percent", "budget_min_concurrency", "retry_non_idempotent"}));
  TRELLIS_RETURN_IF_ERROR(
      required(n, path, "attempts", out.attempts, integer(0, kMaxRetryAttempts)));
  TRELLIS_RETURN_IF_ERROR(field(n, path, "per_try_timeout", out.per_try_timeout, duration(true)));
  if (const YAML::Node codes = n["retriable_status_codes"]; codes.IsDefined()) {
    const std::string cpath = path + ".retriable_status_codes";
    TRELLIS_RETURN_IF_ERROR(expectList(codes, cpath));
    for (size_t i = 0; i < codes.size(); ++i) {
      uint16_t code = 0;
      auto v = integer(100, 599)(codes[i], indexPath(cpath, i));
      if (!v.ok())
        return v.error();
      code = static_cast<uint16_t>(*v);
      out.retriable_status_codes.push_back(code);
    }
  }
  if (const YAML::Node on = n["on"]; on.IsDefined()) {
    const std::string opath = path + ".on";
    TRELLIS_RETURN_IF_ERROR(expectList(on, opath));
    if (on.size() == 0)
      return errorAt(on, opath, "must list at least one condition");
    out.on = RetryOn{false, false, false, false, false, false};
    for (size_t i = 0; i < on.size(); ++i) {
      const std::string p = indexPath(opath, i);
      auto s = scalar(on[i], p, "a retry condition");
      if (!s.ok())
        return s.error();
      auto cond = std::find_if(std::begin(kRetryConditions), std::end(kRetryConditions),
                               [&](const RetryCondition& c) { return c.name == *s; });
      if (cond == std::end(kRetryConditions))
        return errorAt(on[i], p,
                       fmt::format("unknown retry condition \"{}\" (expected connect-failure, "
                                   "refused-stream, reset, 5xx, gateway-error or "
                                   "retriable-status-codes)",
                                   *s));
      out.on.*(cond->flag) = true;
    }
    if (out.on.retriable_status_codes && out.retriable_status_codes.empty())
      return errorAt(on, opath,
                     "retriable-status-codes needs a non-empty retriable_status_codes list");
    if (!out.on.retriable_status_codes && !out.retriable_status_codes.empty())
      return errorAt(n["retriable_status_codes"], path + ".retriable_status_codes",
                     "listed codes are never retried: add retriable-status-codes to on");
  } else {
    // The defaults (RetryOn's), plus the listed codes if any.
    out.on.retriable_status_codes = !out.retriable_status_codes.empty();
  }
  if (const YAML::Node b = n["backoff"]; b.IsDefined()) {
    const std::string bpath = path + ".backoff";
    TRELLIS_RETURN_IF_ERROR(checkKeys(b, bpath, {"base", "max"}));
    TRELLIS_RETURN_IF_ERROR(field(b, bpath, "base", out.backoff_base, duration(false)));
    if (b["max"].IsDefined())
      TRELLIS_RETURN_IF_ERROR(field(b, bpath, "max", out.backoff_max, duration(false)));
    else
      out.backoff_max = std::max(out.backoff_max, out.backoff_base * 10);
    if (out.backoff_max < out.backoff_base)
      return errorAt(b["max"], bpath + ".max",
                     fmt::format("{} is below base {}", formatDuration(out.backoff_max),
                                 formatDuration(out.backoff_base)));
  }
  TRELLIS_RETURN_IF_ERROR(field(n, path, "budget_percent", out.budget_percent, integer(0, 100)));
  TRELLIS_RETURN_IF_ERROR(
      field(n, path, "budget_min_concurrency", out.budget_min_concurrency, integer(0, 100000)));
  return field(n, path, "retry_non_idempotent", out.retry_non_idempotent, boolean());
}

Status Parser::parseFault(const YAML::Node& n, const std::string& path, FaultConfig& out) const {
  TRELLIS_RETURN_IF_ERROR(checkKeys(n, path, {"delay", "abort"}));
  if (n.size() == 0)
    return errorAt(n, path, "set delay, abort or both");
  if (const YAML::Node d = n["delay"]; d.IsDefined()) {
    const std::string p = path + ".delay";
    TRELLIS_RETURN_IF_ERROR(checkKeys(d, p, {"percent", "duration"}));
    out.delay.emplace();
    TRELLIS_RETURN_IF_ERROR(field(d, p, "percent", out.delay->percent, percent()));
    TRELLIS_RETURN_IF_ERROR(required(d, p, "duration", out.delay->duration, duration(false)));
  }
  if (const YAML::Node a = n["abort"]; a.IsDefined()) {
    const std::string p = path + ".abort";
    TRELLIS_RETURN_IF_ERROR(checkKeys(a, p, {"percent", "status"}));
    out.abort.emplace();
    TRELLIS_RETURN_IF_ERROR(field(a, p, "percent", out.abort->percent, percent()));
    TRELLIS_RETURN_IF_ERROR(required(a, p, "status", out.abort->status, integer(200, 599)));
  }
  return okStatus();
}

Status Parser::parseRateLimit(const YAML::Node& n, const std::string& path, RateLimit& out) const {
  TRELLIS_RETURN_IF_ERROR(checkKeys(n, path, {"requests_per_second", "burst", "status"}));
  TRELLIS_RETURN_IF_ERROR(
      required(n, path, "requests_per_second", out.requests_per_second, integer(1, 1000000000)));
  out.burst = out.requests_per_second;
  TRELLIS_RETURN_IF_ERROR(field(n, path, "burst", out.burst, integer(1, 1000000000)));
  return field(n, path, "status", out.status, integer(400, 599));
}

} // namespace

Result<std::shared_ptr<const Snapshot>> loadConfigString(std::string_view text,
                                                         std::string_view name_for_errors) {
  const std::string source(name_for_errors);
  if (text.size() > kMaxConfigBytes)
    return makeError(ErrorCode::kInvalidArgument, "{}: larger than the {} byte limit", source,
                     kMaxConfigBytes);
  try {
    const YAML::Node root = YAML::Load(std::string(text));
    Parser parser(source);
    return parser.parse(root);
  } catch (const YAML::Exception& e) {
    if (e.mark.line >= 0)
      return makeError(ErrorCode::kInvalidArgument, "{}:{}: invalid YAML: {} (column {})", source,
                       e.mark.line + 1, e.msg, e.mark.column + 1);
    return makeError(ErrorCode::kInvalidArgument, "{}: invalid YAML: {}", source, e.msg);
  } catch (const std::exception& e) {
    return makeError(ErrorCode::kInvalidArgument, "{}: {}", source, e.what());
  }
}

Result<std::shared_ptr<const Snapshot>> loadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return makeError(ErrorCode::kIo, "{}: cannot open: {}", path, std::strerror(errno));
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxConfigBytes)
      return makeError(ErrorCode::kInvalidArgument, "{}: larger than the {} byte limit", path,
                       kMaxConfigBytes);
  }
  if (in.bad())
    return makeError(ErrorCode::kIo, "{}: read failed: {}", path, std::strerror(errno));
  return loadConfigString(text, path);
}

// ---- JSON ------------------------------------------------------------------------------------

namespace {

using nlohmann::json;

std::string dur(Duration d) {
  return formatDuration(d);
}

json routeJson(const Route& r) {
  json j;
  if (!r.name.empty())
    j["name"] = r.name;
  json m;
  m[pathMatchKindName(r.match.kind)] = r.match.path;
  if (!r.match.methods.empty())
    m["method"] = r.match.methods;
  if (!r.match.headers.empty()) {
    json h = json::object();
    for (const auto& hm : r.match.headers)
      h[hm.name] = hm.regex ? json{{"regex", hm.value}} : json(hm.value);
    m["headers"] = h;
  }
  if (!r.match.query.empty()) {
    json q = json::object();
    for (const auto& qm : r.match.query)
      q[qm.name] = qm.regex ? json{{"regex", qm.value}} : json(qm.value);
    m["query"] = q;
  }
  j["match"] = m;
  if (r.redirect) {
    const Redirect& rd = *r.redirect;
    json red = {{"status", rd.status}};
    if (!rd.scheme.empty())
      red["scheme"] = rd.scheme;
    if (!rd.host.empty())
      red["host"] = rd.host;
    if (rd.port)
      red["port"] = *rd.port;
    if (rd.path)
      red["path"] = *rd.path;
    if (rd.prefix_rewrite)
      red["prefix_rewrite"] = *rd.prefix_rewrite;
    j["redirect"] = red;
    j["timeout"] = dur(r.timeout);
    return j;
  }
  if (r.weighted) {
    json list = json::array();
    for (const auto& w : r.clusters)
      list.push_back({{"cluster", w.cluster}, {"weight", w.weight}});
    j["weighted_clusters"] = list;
  } else if (!r.clusters.empty()) {
    j["cluster"] = r.clusters.front().cluster;
  }
  if (!r.request_headers_to_add.empty()) {
    json h = json::object();
    for (const auto& hv : r.request_headers_to_add)
      h[hv.name] = hv.value;
    j["request_headers_to_add"] = h;
  }
  if (!r.request_headers_to_append.empty()) {
    json h = json::object();
    for (const auto& hv : r.request_headers_to_append)
      h[hv.name] = hv.value;
    j["request_headers_to_append"] = h;
  }
  if (!r.request_headers_to_remove.empty())
    j["request_headers_to_remove"] = r.request_headers_to_remove;
  j["timeout"] = dur(r.timeout);
  const RetryPolicy& rp = r.retries;
  json on = json::array();
  for (const auto& c : kRetryConditions) {
    if (rp.on.*(c.flag))
      on.push_back(c.name);
  }
  json retries = {{"attempts", rp.attempts},
                  {"per_try_timeout", dur(rp.per_try_timeout)},
                  {"backoff", {{"base", dur(rp.backoff_base)}, {"max", dur(rp.backoff_max)}}},
                  {"budget_percent", rp.budget_percent},
                  {"budget_min_concurrency", rp.budget_min_concurrency},
                  {"retry_non_idempotent", rp.retry_non_idempotent}};
  if (!on.empty())
    retries["on"] = on;
  if (!rp.retriable_status_codes.empty())
    retries["retriable_status_codes"] = rp.retriable_status_codes;
  j["retries"] = retries;
  if (r.fault.delay || r.fault.abort) {
    json f;
    if (r.fault.delay)
      f["delay"] = {{"percent", r.fault.delay->percent},
                    {"duration", dur(r.fault.delay->duration)}};
    if (r.fault.abort)
      f["abort"] = {{"percent", r.fault.abort->percent}, {"status", r.fault.abort->status}};
    j["fault"] = f;
  }
  if (r.rate_limit)
    j["rate_limit"] = {{"requests_per_second", r.rate_limit->requests_per_second},
                       {"burst", r.rate_limit->burst},
                       {"status", r.rate_limit->status}};
  return j;
}

json listenerJson(const Listener& l) {
  json j = {{"name", l.name},
            {"address", l.address.toString()},
            {"protocol", protocolName(l.protocol)},
            {"max_connections", l.max_connections},
            {"idle_timeout", dur(l.idle_timeout)},
            {"buffer_limit", l.buffer_limit}};
  if (l.protocol == Protocol::kTcp) {
    j["cluster"] = l.cluster;
    return j;
  }
  j["max_header_bytes"] = l.max_header_bytes;
  j["max_headers"] = l.max_headers;
  j["header_read_timeout"] = dur(l.header_read_timeout);
  j["request_buffer_limit"] = l.request_buffer_limit;
  j["max_requests_per_connection"] = l.max_requests_per_connection;
  j["routes"] = routesToJson(l.routes);
  return j;
}

json clusterJson(const Cluster& c) {
  json j = {{"name", c.name},
            {"lb", lbPolicyName(c.lb.policy)},
            {"panic_threshold", c.lb.panic_threshold},
            {"connect_timeout", dur(c.connect_timeout)},
            {"trust_proxy_errors", c.trust_proxy_errors}};
  switch (c.lb.policy) {
  case LbPolicy::kLeastRequest:
    j["least_request"] = {{"choice_count", c.lb.choice_count}};
    break;
  case LbPolicy::kRingHash:
    j["ring_hash"] = {{"min_ring_size", c.lb.min_ring_size}, {"max_ring_size", c.lb.max_ring_size}};
    break;
  case LbPolicy::kMaglev:
    j["maglev"] = {{"table_size", c.lb.maglev_table_size}};
    break;
  default:
    break;
  }
  if (c.hash_on) {
    if (c.hash_on->source == HashSource::kSourceIp)
      j["hash_on"] = {{"source_ip", true}};
    else
      j["hash_on"] = {{hashSourceName(c.hash_on->source), c.hash_on->name}};
  }
  json eps = json::array();
  for (const Endpoint& ep : c.endpoints)
    eps.push_back({{"address", ep.address.toString()}, {"weight", ep.weight}});
  j["endpoints"] = eps;
  if (c.health_check) {
    const HealthCheck& h = *c.health_check;
    json hc = {{"interval", dur(h.interval)},
               {"timeout", dur(h.timeout)},
               {"healthy_threshold", h.healthy_threshold},
               {"unhealthy_threshold", h.unhealthy_threshold},
               {"start_healthy", h.start_healthy}};
    if (h.kind == HealthCheckKind::kTcp) {
      hc["tcp"] = true;
    } else {
      hc["path"] = h.path;
      if (!h.host.empty())
        hc["host"] = h.host;
    }
    j["health_check"] = hc;
  }
  if (c.outlier_detection) {
    const OutlierDetection& o = *c.outlier_detection;
    j["outlier_detection"] = {{"consecutive_5xx", o.consecutive_5xx},
                              {"consecutive_gateway_failure", o.consecutive_gateway_failure},
                              {"interval", dur(o.interval)},
                              {"base_ejection_time", dur(o.base_ejection_time)},
                              {"max_ejection_time", dur(o.max_ejection_time)},
                              {"max_ejection_percent", o.max_ejection_percent}};
  }
  const CircuitBreakers& b = c.circuit_breakers;
  j["circuit_breakers"] = {{"max_connections", b.max_connections},
                           {"max_pending_requests", b.max_pending_requests},
                           {"max_requests", b.max_requests},
                           {"max_retries", b.max_retries}};
  j["pool"] = {{"idle_timeout", dur(c.pool.idle_timeout)},
               {"max_requests_per_connection", c.pool.max_requests_per_connection},
               {"max_idle_per_endpoint", c.pool.max_idle_per_endpoint}};
  return j;
}

} // namespace

nlohmann::json routesToJson(const std::vector<Route>& routes) {
  json out = json::array();
  for (const Route& r : routes)
    out.push_back(routeJson(r));
  return out;
}

nlohmann::json toJson(const Snapshot& s) {
  json j;
  j["admin"] = {{"address", s.admin.address.toString()}};
  if (s.access_log)
    j["access_log"] = {{"path", s.access_log->path}};
  j["concurrency"] = s.concurrency;
  json listeners = json::array();
  for (const Listener& l : s.listeners)
    listeners.push_back(listenerJson(l));
  j["listeners"] = listeners;
  json clusters = json::array();
  for (const Cluster& c : s.clusters)
    clusters.push_back(clusterJson(c));
  j["clusters"] = clusters;
  return j;
}

} // namespace trellis::proxy
