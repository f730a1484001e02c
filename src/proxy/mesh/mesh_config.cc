#include "proxy/mesh/mesh_config.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <numeric>
#include <set>
#include <tuple>

#include <fmt/format.h>

#include "proxy/resilience/retry.h"

namespace trellis::proxy::mesh {

namespace {

using json = nlohmann::json;

// Configuration names (docs/proxy.md "Values"): what a service must be called to be a cluster.
bool isConfigName(std::string_view s) {
  if (s.empty() || s.size() > 128)
    return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return false;
  return true;
}

// Validation of routes and cluster keys reuses the configuration loader: the pieces are put in
// a small configuration document whose parse errors are then renamed into mesh terms. Routes
// name other services, which get placeholder clusters here (their real entries are checked on
// their own); the placeholder endpoint never reaches a Snapshot.
constexpr const char* kPlaceholderEndpoint = "127.0.0.1:1";

void collectRouteClusters(const json& routes, std::set<std::string>& out) {
  if (!routes.is_array())
    return;
  for (const auto& r : routes) {
    if (!r.is_object())
      continue;
    if (auto c = r.find("cluster"); c != r.end() && c->is_string())
      out.insert(c->get<std::string>());
    if (auto w = r.find("weighted_clusters"); w != r.end() && w->is_array())
      for (const auto& wc : *w)
        if (wc.is_object())
          if (auto c = wc.find("cluster"); c != wc.end() && c->is_string())
            out.insert(c->get<std::string>());
  }
}

// "mesh:1: clusters[0].lb: unknown policy" -> "<cluster_path>.lb: unknown policy", and
// "listeners[0].routes[2]..." -> "<routes_path>[2]...".
Error renameError(const Error& e, const std::string& cluster_path, const std::string& routes_path,
                  const std::string& fallback) {
  std::string_view m = e.message();
  if (m.starts_with("mesh")) {
    m.remove_prefix(4);
    if (!m.empty() && m.front() == ':') {
      size_t i = 1;
      while (i < m.size() && std::isdigit(static_cast<unsigned char>(m[i])))
        ++i;
      m.remove_prefix(i);
    }
    if (m.starts_with(": "))
      m.remove_prefix(2);
  }
  auto rename = [&](std::string_view from, const std::string& to) -> std::optional<std::string> {
    if (to.empty() || !m.starts_with(from))
      return std::nullopt;
    return to + std::string(m.substr(from.size()));
  };
  if (auto s = rename("clusters[0]", cluster_path))
    return makeError(ErrorCode::kInvalidArgument, "{}", *s);
  if (auto s = rename("listeners[0].routes", routes_path))
    return makeError(ErrorCode::kInvalidArgument, "{}", *s);
  return makeError(ErrorCode::kInvalidArgument, "{}: {}", fallback, m);
}

Result<std::shared_ptr<const Snapshot>> loadPieces(const json& cluster, const std::string& name,
                                                   const json& routes) {
  std::set<std::string> refs;
  collectRouteClusters(routes, refs);
  json clusters = json::array();
  json c = cluster.is_null() ? json::object() : cluster;
  c["name"] = name;
  c["endpoints"] = json::array({kPlaceholderEndpoint});
  clusters.push_back(std::move(c));
  for (const auto& r : refs)
    if (r != name && isConfigName(r))
      clusters.push_back(json{{"name", r}, {"endpoints", json::array({kPlaceholderEndpoint})}});
  json listener{{"name", "routes"}, {"address", "127.0.0.1:0"}};
  if (routes.is_array() && !routes.empty()) {
    listener["routes"] = routes;
  } else if (!routes.is_null() && !routes.is_array()) {
    listener["routes"] = routes; // the loader names the type error
  } else {
    listener["protocol"] = "tcp";
    listener["cluster"] = name;
  }
  json doc{{"listeners", json::array({std::move(listener)})}, {"clusters", std::move(clusters)}};
  return loadConfigString(doc.dump(-1, ' ', false, json::error_handler_t::replace), "mesh");
}

Route defaultRoute(const std::string& service) {
  Route r;
  r.match.kind = PathMatchKind::kPrefix;
  r.match.path = "/";
  r.clusters.push_back(WeightedCluster{service, 1, 0});
  r.total_weight = 1;
  r.retries = meshDefaultRetries();
  return r;
}

// The mesh default without any policy: an endpoint that fails 3 times in a row at the gateway
// level (connect failure, reset, timeout, 502/503/504) is ejected at once. Without it a killed
// instance keeps its share of requests until its health check fails, and each of them costs a
// retry, more than the retry budget allows at a few hundred requests per second.
OutlierDetection defaultOutlierDetection() {
  OutlierDetection od;
  od.consecutive_gateway_failure = 3;
  return od;
}

Cluster defaultCluster(const std::string& name) {
  Cluster c;
  c.name = name;
  c.connect_timeout = std::chrono::seconds(1);
  c.outlier_detection = defaultOutlierDetection();
  c.trust_proxy_errors = true; // a service's endpoints are its instances' sidecars
  return c;
}

} // namespace

namespace {

// Parsed (not reused) addresses up to which parseEndpoints checks repetitions by comparing
// them with the list instead of sorting it.
constexpr size_t kDirectRepeatCheck = 8;

// The index of the first endpoint (in list order) whose address an earlier one already has.
// Sorting compact keys once costs a fraction of a tree of asio addresses, and a proxy
// re-validates every endpoint of each service whose endpoints changed. Two addresses are the
// same exactly when SocketAddress::operator== says so (an IPv6 scope id included), like the
// direct check and the configuration file's.
std::optional<size_t> firstRepeated(const std::vector<Endpoint>& eps) {
  struct Key {
    uint64_t hi, lo;      // the address bytes (IPv4 in lo)
    uint32_t family_port; // port << 1 | 1 for IPv4: a v4 address and its v4-mapped v6 differ
    uint32_t scope;       // IPv6 scope id
    uint32_t index;
    bool sameAddress(const Key& o) const {
      return hi == o.hi && lo == o.lo && family_port == o.family_port && scope == o.scope;
    }
    bool operator<(const Key& o) const {
      return std::tie(hi, lo, family_port, scope, index) <
             std::tie(o.hi, o.lo, o.family_port, o.scope, o.index);
    }
  };
  std::vector<Key> keys;
  keys.reserve(eps.size());
  for (size_t i = 0; i < eps.size(); ++i) {
    Key k{};
    const asio::ip::address& ip = eps[i].address.ip;
    if (ip.is_v4()) {
      k.lo = ip.to_v4().to_uint();
      k.family_port = (uint32_t{eps[i].address.port} << 1) | 1u;
    } else {
      const auto b = ip.to_v6().to_bytes();
      for (size_t j = 0; j < 8; ++j) {
        k.hi = k.hi << 8 | b[j];
        k.lo = k.lo << 8 | b[8 + j];
      }
      k.family_port = uint32_t{eps[i].address.port} << 1;
      k.scope = static_cast<uint32_t>(ip.to_v6().scope_id());
    }
    k.index = static_cast<uint32_t>(i);
    keys.push_back(k);
  }
  std::sort(keys.begin(), keys.end());
  std::optional<size_t> first;
  for (size_t i = 1; i < keys.size(); ++i)
    if (keys[i].sameAddress(keys[i - 1]) && (!first || keys[i].index < *first))
      first = keys[i].index;
  return first;
}

// What one element of an endpoints list gives: its address as written and its weight.
struct Element {
  const std::string* text = nullptr;
  uint32_t weight = 1;
};

// Error paths only: formatting them for every endpoint would be most of the cost.
std::string elementAddressPath(const json& e, const std::string& path, size_t i) {
  return e.is_object() ? fmt::format("{}[{}].address", path, i) : fmt::format("{}[{}]", path, i);
}

// Checks an element of a list (an address string or {address, weight}); errors name it as
// `path[i]`.
Result<Element> readElement(const json& e, const std::string& path, size_t i) {
  Element out;
  const json* addr = &e;
  if (e.is_object()) {
    // One pass over the members instead of a lookup for each (most of this loop's cost);
    // members other than these two are ignored.
    const json* a = nullptr;
    const json* w = nullptr;
    using namespace std::string_view_literals;
    for (const auto& [key, value] : e.get_ref<const json::object_t&>()) {
      if (std::string_view(key) == "address"sv) // sizes first: no memcmp for the other
        a = &value;
      else if (std::string_view(key) == "weight"sv)
        w = &value;
    }
    if (a == nullptr)
      return makeError(ErrorCode::kInvalidArgument, "{}[{}]: missing \"address\"", path, i);
    addr = a;
    if (w != nullptr) {
      if (!w->is_number_integer() || w->get<int64_t>() < 1 || w->get<int64_t>() > 1000000)
        return makeError(ErrorCode::kInvalidArgument,
                         "{}[{}].weight: must be an integer 1..1000000, got {}", path, i,
                         w->dump(-1, ' ', false, json::error_handler_t::replace));
      out.weight = static_cast<uint32_t>(w->get<int64_t>());
    }
  } else if (!e.is_string()) {
    return makeError(ErrorCode::kInvalidArgument,
                     "{}[{}]: must be an address string or {{address, weight}}, got {}", path, i,
                     e.type_name());
  }
  if (!addr->is_string())
    return makeError(ErrorCode::kInvalidArgument, "{}: must be a string, got {}",
                     elementAddressPath(e, path, i), addr->type_name());
  out.text = &addr->get_ref<const std::string&>();
  return out;
}

// The address an element's text names (port 0 is no endpoint).
Result<net::SocketAddress> parseElementAddress(const json& e, const std::string& text,
                                               const std::string& path, size_t i) {
  auto sa = net::parseSocketAddress(text);
  if (!sa.ok())
    return makeError(ErrorCode::kInvalidArgument, "{}: {}", elementAddressPath(e, path, i),
                     sa.error().message());
  if (sa->port == 0)
    return makeError(ErrorCode::kInvalidArgument, "{}: port 0 is not allowed for an endpoint",
                     elementAddressPath(e, path, i));
  return *sa;
}

// Whether an endpoint at one of `fresh` has the address of another one, compared directly:
// for a list whose other endpoints are known distinct and few fresh ones (kDirectRepeatCheck).
bool repeatsOneOf(const std::vector<Endpoint>& eps, const std::vector<size_t>& fresh) {
  for (size_t f : fresh)
    for (size_t j = 0; j < eps.size(); ++j)
      if (j != f && eps[j].address == eps[f].address)
        return true;
  return false;
}

} // namespace

Result<std::vector<Endpoint>> parseEndpoints(const json& eps, const std::string& path,
                                             EndpointTexts* reuse) {
  std::vector<Endpoint> out;
  EndpointTexts last;
  if (reuse != nullptr) {
    last = std::move(*reuse);
    reuse->text.clear();
    reuse->address.clear();
  }
  if (eps.is_null())
    return out;
  if (!eps.is_array())
    return makeError(ErrorCode::kInvalidArgument, "{}: must be a list, got {}", path,
                     eps.type_name());
  out.reserve(eps.size());
  auto apath = [&](size_t i) { return elementAddressPath(eps[i], path, i); };
  // Errors are reported in list order: a repeated address before the failing element is
  // the first error.
  auto repeatedOr = [&](Error e) -> Error {
    if (auto r = firstRepeated(out))
      return makeError(ErrorCode::kInvalidArgument, "{}: {} is listed twice", apath(*r),
                       out[*r].address.toString());
    return e;
  };
  size_t next = 0;                       // in `last`
  std::vector<const std::string*> texts; // each address as written, for `reuse`
  std::vector<size_t> parsed;            // indexes whose address was parsed, not reused
  if (reuse != nullptr)
    texts.reserve(eps.size());
  for (size_t i = 0; i < eps.size(); ++i) {
    auto element = readElement(eps[i], path, i);
    if (!element.ok())
      return repeatedOr(element.error());
    Endpoint out_ep;
    out_ep.weight = element->weight;
    const std::string& text = *element->text;
    if (reuse != nullptr)
      texts.push_back(&text);
    // The last parse's list, walked in step: skip what sorts before this address (gone from
    // the list), take it if it is the next one there.
    int order = 1; // of last.text[next] against text
    while (next < last.text.size() && (order = last.text[next].compare(text)) < 0)
      ++next;
    if (next < last.text.size() && order == 0) {
      out_ep.address = last.address[next++]; // was valid, port not 0
    } else {
      auto sa = parseElementAddress(eps[i], text, path, i);
      if (!sa.ok())
        return repeatedOr(sa.error());
      out_ep.address = *sa;
      if (reuse != nullptr)
        parsed.push_back(i);
    }
    out.push_back(out_ep);
  }
  // Reused addresses are distinct (each comes from a different element of a list that had no
  // repetition), so with few parsed ones it is enough to compare those with the rest; the
  // sort finds the first repetition in list order for the error.
  const bool direct = reuse != nullptr && parsed.size() <= kDirectRepeatCheck;
  if (auto r = !direct || repeatsOneOf(out, parsed) ? firstRepeated(out) : std::nullopt)
    return makeError(ErrorCode::kInvalidArgument, "{}: {} is listed twice", apath(*r),
                     out[*r].address.toString());
  if (reuse != nullptr) {
    reuse->text.reserve(out.size());
    reuse->address.reserve(out.size());
    for (size_t i = 0; i < out.size(); ++i) {
      reuse->text.push_back(*texts[i]);
      reuse->address.push_back(out[i].address);
    }
  }
  return out;
}

Status ConfigBuilder::refresh(const std::string& name, const ServiceEntry& entry,
                              ServiceCache& cache) {
  ParsedDefinition& def = cache.def;
  if (def.rev != entry.definition_rev) {
    const std::string path = "services." + name;
    layout_valid_ = false;
    def = ParsedDefinition{};
    def.rev = entry.definition_rev;
    auto fail = [&](Error e) { def.error = std::move(e); };
    if (entry.protocol.is_null() || entry.protocol == "http") {
      def.protocol = Protocol::kHttp;
    } else if (entry.protocol == "tcp") {
      def.protocol = Protocol::kTcp;
    } else {
      fail(
          makeError(ErrorCode::kInvalidArgument, "{}.protocol: must be \"http\" or \"tcp\"", path));
    }
    if (!def.error && !entry.cluster.is_null() && !entry.cluster.is_object())
      fail(makeError(ErrorCode::kInvalidArgument, "{}.cluster: must be an object, got {}", path,
                     entry.cluster.type_name()));
    for (const char* k : {"name", "endpoints"})
      if (!def.error && entry.cluster.is_object() && entry.cluster.contains(k))
        fail(makeError(ErrorCode::kInvalidArgument,
                       "{}.cluster.{}: not allowed here (the service gives it)", path, k));
    if (!def.error) {
      auto snap = loadPieces(entry.cluster, name, entry.routes);
      if (!snap.ok()) {
        fail(renameError(snap.error(), path + ".cluster", path + ".routes", path));
      } else {
        def.cluster = (*snap)->clusters[0];
        def.cluster.endpoints.clear();
        if (!entry.cluster.is_object() || !entry.cluster.contains("outlier_detection"))
          def.cluster.outlier_detection = defaultOutlierDetection();
        const Listener& l = (*snap)->listeners[0];
        if (l.protocol == Protocol::kHttp)
          def.routes = l.routes;
        else if (def.protocol == Protocol::kHttp)
          def.routes.push_back(defaultRoute(name));
      }
    }
  }
  if (def.error)
    return *def.error;
  ParsedEndpoints& eps = cache.eps;
  if (eps.rev != entry.endpoints_rev && !editEndpoints(entry, cache)) {
    eps = ParsedEndpoints{};
    eps.rev = entry.endpoints_rev;
    auto parsed = parseEndpoints(entry.endpoints, "services." + name + ".endpoints", &cache.texts);
    if (parsed.ok()) {
      eps.endpoints = std::move(parsed).value();
      auto lineage = std::make_shared<EndpointLineage>();
      lineage->id = nextEndpointLineageId();
      eps.lineage = std::move(lineage);
    } else {
      eps.error = parsed.error();
    }
  }
  if (eps.error)
    return *eps.error;
  return okStatus();
}

bool ConfigBuilder::editEndpoints(const ServiceEntry& entry, ServiceCache& cache) {
  const EndpointOrigins& origins = entry.origins;
  const AssembledCluster& a = cache.assembled;
  if (origins.base_rev == 0 || !origins.edited || !a.cluster ||
      a.endpoints_rev != origins.base_rev || cache.eps.rev != origins.base_rev ||
      !a.cluster->lineage.ptr || !entry.endpoints.is_array() ||
      entry.endpoints.size() != origins.index.size())
    return false;
  const std::vector<Endpoint>& base = a.cluster->endpoints;
  const json::array_t& list = entry.endpoints.get_ref<const json::array_t&>();
  auto lineage = std::make_shared<EndpointLineage>();
  lineage->id = nextEndpointLineageId();
  lineage->base = a.cluster->lineage.ptr->id;
  lineage->origin.reserve(list.size());
  std::vector<Endpoint> out;
  out.reserve(list.size());
  std::vector<size_t> read; // indexes of the elements read (not copied)
  const std::string path;   // errors are not reported from here: the full parse names them
  // The base endpoints kept, in order (both lists are ordered by address, so they are): those
  // skipped between two kept ones were removed. `ascending` turns false if not, and then the
  // full parse below does the work (it cannot happen for lists this state keeps in order).
  uint32_t next_base = 0;
  bool ascending = true;
  auto keep = [&](uint32_t at, size_t n) {
    if (at < next_base) {
      ascending = false;
      return;
    }
    for (uint32_t k = next_base; k < at; ++k)
      lineage->removed.push_back(k);
    next_base = at + static_cast<uint32_t>(n);
  };
  for (size_t i = 0; i < list.size(); ++i) {
    const uint32_t o = origins.index[i];
    const uint32_t at = o == EndpointOrigins::kNew ? o : (o & ~EndpointOrigins::kChanged);
    if (at != EndpointOrigins::kNew && at >= base.size())
      return false;
    if (o == at && at != EndpointOrigins::kNew) {
      // Unchanged: the run of those that follow it in the base list too, copied at once.
      size_t n = 1;
      while (i + n < list.size() && at + n < base.size() && origins.index[i + n] == at + n)
        ++n;
      out.insert(out.end(), base.begin() + at, base.begin() + at + n);
      const size_t from = lineage->origin.size();
      lineage->origin.resize(from + n);
      std::iota(lineage->origin.begin() + from, lineage->origin.end(), static_cast<uint32_t>(at));
      keep(at, n);
      i += n - 1;
      continue;
    }
    auto element = readElement(list[i], path, i);
    if (!element.ok())
      return false;
    auto sa = parseElementAddress(list[i], *element->text, path, i);
    if (!sa.ok())
      return false;
    out.push_back(Endpoint{*sa, element->weight});
    // A changed element keeps its place's state only if it kept its address.
    const bool same = at != EndpointOrigins::kNew && base[at].address == *sa;
    lineage->origin.push_back(same ? at : EndpointLineage::kNew);
    if (same)
      keep(at, 1);
    else
      lineage->added.push_back(static_cast<uint32_t>(i));
    read.push_back(i);
  }
  if (!ascending)
    return false;
  for (uint32_t k = next_base; k < base.size(); ++k)
    lineage->removed.push_back(k);
  // The copied ones are distinct (they were in a valid list): compare the read ones with all.
  if (read.size() > kDirectRepeatCheck ? firstRepeated(out).has_value() : repeatsOneOf(out, read))
    return false;
  cache.eps = ParsedEndpoints{};
  cache.eps.rev = entry.endpoints_rev;
  cache.eps.endpoints = std::move(out);
  cache.eps.lineage = std::move(lineage);
  return true;
}

Result<std::shared_ptr<const Snapshot>> ConfigBuilder::build(const MeshState& state) {
  // A delta that changed a few services' endpoints costs those services only.
  if (auto fast = buildChanged(state))
    return std::move(*fast);
  full_builds_++;
  const bool sidecar = spec_.kind == ProxySpec::Kind::kSidecar;
  // Refresh what changed. The state and the cache are both ordered by name, so the cache
  // entry of each service is found by walking a cursor along, without a lookup per service
  // (a delta touches one service; every update still visits all of them).
  auto cursor = services_.begin();
  for (const auto& [name, entry] : state.services()) {
    while (cursor != services_.end() && cursor->first < name)
      ++cursor; // a service gone from the state: erased below
    if (cursor == services_.end() || cursor->first != name) {
      // New names are checked once; a cached one was valid.
      if (!isConfigName(name))
        return makeError(ErrorCode::kInvalidArgument,
                         "services: \"{}\" is not a valid name (1..128 of letters, digits, "
                         "'-', '_', '.')",
                         name);
      if (sidecar && name == kLocalAppCluster)
        return makeError(ErrorCode::kInvalidArgument,
                         "services.{}: the name is reserved for the sidecar's local app cluster",
                         name);
      cursor = services_.emplace_hint(cursor, name, ServiceCache{});
      layout_valid_ = false;
    }
    ServiceCache& cache = (cursor++)->second;
    TRELLIS_RETURN_IF_ERROR(refresh(name, entry, cache));
  }
  if (services_.size() != state.services().size()) {
    std::erase_if(services_, [&](const auto& kv) { return !state.services().count(kv.first); });
    layout_valid_ = false;
  }

  const std::vector<Route>* gateway_routes = nullptr;
  uint64_t gateway_rev = 0;
  if (!sidecar) {
    std::erase_if(gateways_, [&](const auto& kv) { return kv.first != spec_.gateway; });
    if (auto g = state.gateways().find(spec_.gateway); g != state.gateways().end()) {
      ParsedGateway& pg = gateways_[spec_.gateway];
      const std::string path = "gateways." + spec_.gateway;
      if (pg.rev != g->second.rev) {
        pg = ParsedGateway{};
        pg.rev = g->second.rev;
        if (!g->second.routes.is_null() &&
            !(g->second.routes.is_array() && g->second.routes.empty())) {
          auto snap = loadPieces(json::object(), "_gateway", g->second.routes);
          if (!snap.ok())
            pg.error = renameError(snap.error(), "", path + ".routes", path);
          else
            pg.routes = (*snap)->listeners[0].routes;
        }
      }
      if (pg.error)
        return *pg.error;
      gateway_routes = &pg.routes;
      gateway_rev = pg.rev;
    } else {
      gateways_.clear();
    }
    if (gateway_rev != layout_gateway_rev_)
      layout_valid_ = false;
  }

  auto snap = std::make_shared<Snapshot>();
  snap->source = state.hasSnapshot() ? fmt::format("mesh version {}", state.version())
                                     : std::string("mesh (no state received yet)");
  snap->admin = spec_.admin;
  snap->concurrency = spec_.concurrency;
  snap->access_log = spec_.access_log;

  // One cluster per service, in name order; only a service whose definition or endpoints
  // changed gets a new one.
  snap->clusters.reserve(state.services().size() + layout_clusters_.size() + 1);
  // services_ now has exactly the state's names, in the same order.
  auto cached = services_.begin();
  for (const auto& [name, entry] : state.services()) {
    ServiceCache& cache = (cached++)->second;
    TRELLIS_RETURN_IF_ERROR(assemble(name, entry, cache));
    cache.index = snap->clusters.size();
    snap->clusters.push_back(cache.assembled.cluster);
  }
  if (!layout_valid_) {
    assembleLayout(state, gateway_routes);
    layout_gateway_rev_ = gateway_rev;
    layout_valid_ = true;
  }
  for (const auto& c : layout_clusters_)
    snap->clusters.push_back(c);
  for (const auto& l : layout_listeners_)
    snap->listeners.push_back(l);
  return remember(state, std::move(snap));
}

Status ConfigBuilder::assemble(const std::string& name, const ServiceEntry& entry,
                               ServiceCache& cache) {
  AssembledCluster& a = cache.assembled;
  if (a.cluster && a.definition_rev == entry.definition_rev &&
      a.endpoints_rev == entry.endpoints_rev)
    return okStatus();
  // New endpoints move from the parse into the cluster (kept once, there); a new definition
  // of the same endpoints copies them from the cluster it replaces.
  const bool new_endpoints = !a.cluster || a.endpoints_rev != entry.endpoints_rev;
  const std::vector<Endpoint>& eps = new_endpoints ? cache.eps.endpoints : a.cluster->endpoints;
  const Cluster& def = cache.def.cluster;
  if (def.lb.policy == LbPolicy::kMaglev && eps.size() >= def.lb.maglev_table_size)
    return makeError(ErrorCode::kInvalidArgument,
                     "services.{}.cluster.maglev.table_size: {} is not above the {} endpoints",
                     name, def.lb.maglev_table_size, eps.size());
  Cluster c = def;
  c.name = name;
  if (new_endpoints) {
    c.endpoints = std::move(cache.eps.endpoints);
    c.lineage.ptr = cache.eps.lineage;
  } else {
    c.endpoints = eps;
    c.lineage = a.cluster->lineage; // the same list
  }
  a.definition_rev = entry.definition_rev;
  a.endpoints_rev = entry.endpoints_rev;
  a.cluster = std::make_shared<const Cluster>(std::move(c));
  return okStatus();
}

std::shared_ptr<const Snapshot> ConfigBuilder::remember(const MeshState& state,
                                                        std::shared_ptr<Snapshot> snap) {
  last_ = std::move(snap);
  seen_rev_ = state.nextRev();
  return last_;
}

std::optional<Result<std::shared_ptr<const Snapshot>>>
ConfigBuilder::buildChanged(const MeshState& state) {
  if (!last_ || !layout_valid_ || !state.hasSnapshot())
    return std::nullopt;
  auto named = state.servicesNamedSince(seen_rev_);
  if (!named)
    return std::nullopt;
  // In name order, as a full build visits them, so that of several errors the same is named.
  std::sort(named->begin(), named->end());
  named->erase(std::unique(named->begin(), named->end()), named->end());
  if (spec_.kind == ProxySpec::Kind::kGateway) {
    auto g = state.gateways().find(spec_.gateway);
    if ((g == state.gateways().end() ? 0 : g->second.rev) != layout_gateway_rev_)
      return std::nullopt; // its routes are part of the layout
  }
  // The set of names is the one services_ was last brought in line with: each named service
  // is in both. Its index in the cluster list is where the last full assembly put it.
  struct Changed {
    const std::string* name;
    const ServiceEntry* entry;
    ServiceCache* cache;
  };
  std::vector<Changed> changed;
  changed.reserve(named->size());
  for (std::string_view name : *named) {
    auto entry = state.services().find(name);
    auto cache = services_.find(name);
    if (entry == state.services().end() || cache == services_.end())
      return std::nullopt;
    if (Status st = refresh(cache->first, entry->second, cache->second); !st.ok())
      return Result<std::shared_ptr<const Snapshot>>(st.error());
    if (!layout_valid_)
      return std::nullopt; // a definition changed: listeners and routes are rebuilt too
    changed.push_back(Changed{&cache->first, &entry->second, &cache->second});
  }
  auto snap = std::make_shared<Snapshot>(*last_);
  snap->source = fmt::format("mesh version {}", state.version());
  for (const Changed& c : changed) {
    if (Status st = assemble(*c.name, *c.entry, *c.cache); !st.ok())
      return Result<std::shared_ptr<const Snapshot>>(st.error());
    snap->clusters.set(c.cache->index, c.cache->assembled.cluster);
  }
  return Result<std::shared_ptr<const Snapshot>>(remember(state, std::move(snap)));
}

void ConfigBuilder::assembleLayout(const MeshState& state,
                                   const std::vector<Route>* gateway_routes) {
  const bool sidecar = spec_.kind == ProxySpec::Kind::kSidecar;
  layout_listeners_.clear();
  layout_clusters_.clear();
  // Cluster positions: the services first (as build() puts them), then the trailing ones.
  std::map<std::string, size_t, std::less<>> index;
  for (const auto& [name, entry] : state.services())
    index.emplace(name, index.size());
  const size_t services = index.size();
  auto addCluster = [&](Cluster c) {
    index.emplace(c.name, services + layout_clusters_.size());
    layout_clusters_.push_back(std::make_shared<const Cluster>(std::move(c)));
  };
  // Routes of a known service, or the default route when the server has not described it.
  auto routesOf = [&](const std::string& svc) -> std::vector<Route> {
    auto d = services_.find(svc);
    if (d == services_.end())
      return {defaultRoute(svc)};
    return d->second.def.routes;
  };
  auto protocolOf = [&](const std::string& svc) {
    auto d = services_.find(svc);
    return d == services_.end() ? Protocol::kHttp : d->second.def.protocol;
  };

  std::vector<Listener> listeners;
  if (sidecar) {
    Cluster app = defaultCluster(kLocalAppCluster);
    app.outlier_detection.reset();  // the one app: nothing to eject it in favour of
    app.trust_proxy_errors = false; // the app is no proxy: its answers are passed as they are
    app.endpoints.push_back(Endpoint{spec_.app, 1});
    addCluster(std::move(app));
    Listener in;
    in.name = kInboundListener;
    in.address = spec_.inbound;
    in.protocol = protocolOf(spec_.service);
    if (in.protocol == Protocol::kTcp) {
      in.cluster = kLocalAppCluster;
    } else {
      Route r;
      r.match.path = "/";
      r.clusters.push_back(WeightedCluster{kLocalAppCluster, 1, 0});
      r.total_weight = 1;
      // The calling side's route bounds the request; a second clock here would only add a
      // way to fail that the caller did not ask for.
      r.timeout = Duration::zero();
      in.routes.push_back(std::move(r));
    }
    listeners.push_back(std::move(in));
    for (const auto& up : spec_.upstreams) {
      Listener l;
      l.name = "upstream-" + up.service;
      l.address = up.address;
      l.protocol = protocolOf(up.service);
      if (l.protocol == Protocol::kTcp)
        l.cluster = up.service;
      else
        l.routes = routesOf(up.service);
      listeners.push_back(std::move(l));
    }
    if (spec_.http_proxy) {
      Listener l;
      l.name = kHttpProxyListener;
      l.address = *spec_.http_proxy;
      for (const auto& [name, cache] : services_) {
        const ParsedDefinition& def = cache.def;
        if (def.protocol != Protocol::kHttp)
          continue;
        for (Route r : def.routes) {
          // An app using HTTP_PROXY sends `GET http://orders/x`: the Host names the service.
          r.match.headers.push_back(HeaderMatcher{"host", name, nullptr});
          l.routes.push_back(std::move(r));
        }
      }
      listeners.push_back(std::move(l));
    }
  } else {
    Listener l;
    l.name = kGatewayListener;
    l.address = spec_.listen;
    if (gateway_routes)
      l.routes = *gateway_routes;
    listeners.push_back(std::move(l));
  }

  // Services named by a route or an upstream but absent from the state get a cluster without
  // endpoints (503 until instances arrive), so one missing service never rejects the rest.
  for (auto& l : listeners) {
    auto resolve = [&](const std::string& name) {
      auto it = index.find(name);
      if (it != index.end())
        return it->second;
      addCluster(defaultCluster(name));
      return services + layout_clusters_.size() - 1;
    };
    if (l.protocol == Protocol::kTcp)
      l.cluster_index = resolve(l.cluster);
    for (auto& r : l.routes)
      for (auto& wc : r.clusters)
        wc.cluster_index = resolve(wc.cluster);
    layout_listeners_.push_back(std::make_shared<const Listener>(std::move(l)));
  }
}

} // namespace trellis::proxy::mesh
