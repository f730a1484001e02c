#include "control/mesh/compiler.h"

#include <algorithm>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/log.h"
#include "net/address.h"
#include "proxy/resilience/retry.h"

namespace trellis::control::mesh {

using nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string fold(std::string_view s) { return registry::foldName(s); }

// The proxy's own serialisation (proxy::toJson) is the schema the proxy parses back, so the
// cluster and route objects are produced by it rather than by a second copy of that code.
json clusterJson(const proxy::Cluster& c) {
  proxy::Snapshot s;
  s.clusters.push_back(c);
  json j = proxy::toJson(s)["clusters"][0];
  j.erase("name");
  j.erase("endpoints");
  return j;
}

void applyPolicy(const manifest::TrafficPolicy* p, proxy::Cluster& c) {
  if (p == nullptr)
    return;
  if (p->load_balancer) {
    const uint32_t panic = c.lb.panic_threshold;
    c.lb = p->load_balancer->config;
    c.lb.panic_threshold = panic;
    c.hash_on = p->load_balancer->hash_on;
  }
  if (p->panic_threshold)
    c.lb.panic_threshold = *p->panic_threshold;
  if (p->connect_timeout)
    c.connect_timeout = *p->connect_timeout;
  if (p->outlier_detection)
    c.outlier_detection = *p->outlier_detection;
  if (p->circuit_breakers)
    c.circuit_breakers = *p->circuit_breakers;
  if (p->health_check)
    c.health_check = *p->health_check;
}

void applyPolicy(const manifest::TrafficPolicy* p, proxy::Route& r) {
  if (p == nullptr)
    return;
  if (p->timeout)
    r.timeout = *p->timeout;
  if (p->retries)
    r.retries = *p->retries;
  if (p->fault)
    r.fault = *p->fault;
  if (p->rate_limit)
    r.rate_limit = *p->rate_limit;
}

// The Gateway API's precedence among matches (most specific first): exact path, then the
// longest prefix, then regular expressions; then a method; then more header matches. Equal
// ones keep their order (routes by namespace/name, rules and matches as written).
struct Ranked {
  proxy::Route route;
  int kind_rank;
  size_t path_length;
  bool has_method;
  size_t headers;
};

bool morePrecise(const Ranked& a, const Ranked& b) {
  if (a.kind_rank != b.kind_rank)
    return a.kind_rank < b.kind_rank;
  if (a.kind_rank == 1 && a.path_length != b.path_length)
    return a.path_length > b.path_length;
  if (a.has_method != b.has_method)
    return a.has_method;
  return a.headers > b.headers;
}

// Routes from HTTPRoutes. `parent_service`: the Service the routes attach to (backendRefs
// default to it), empty for a gateway (then `hostnames` become Host matchers).
std::vector<proxy::Route> compileHttpRoutes(const MeshResources& res,
                                            const std::vector<const manifest::Resource*>& routes,
                                            const std::string& parent_service) {
  std::vector<Ranked> out;
  for (const manifest::Resource* r : routes) {
    const auto& hr = std::get<manifest::HttpRoute>(r->spec);
    for (size_t ri = 0; ri < hr.rules.size(); ++ri) {
      const auto& rule = hr.rules[ri];
      // Backends: weights of repeated names add up (the proxy wants each cluster once).
      std::vector<proxy::WeightedCluster> clusters;
      for (const auto& b : rule.backend_refs) {
        const std::string name = fold(b.name);
        auto it = std::find_if(clusters.begin(), clusters.end(),
                               [&](const auto& w) { return w.cluster == name; });
        if (it != clusters.end())
          it->weight += b.weight;
        else
          clusters.push_back({name, b.weight, 0});
      }
      if (clusters.empty() && !parent_service.empty())
        clusters.push_back({parent_service, 1, 0});
      uint64_t total = 0;
      for (const auto& w : clusters)
        total += w.weight;
      const bool redirects = std::any_of(rule.filters.begin(), rule.filters.end(), [](auto& f) {
        return std::holds_alternative<manifest::RequestRedirect>(f);
      });
      if (redirects) {
        clusters.clear(); // the redirect answers the request: no backend
      } else if (clusters.empty() || total == 0) {
        TLOG_WARN("mesh: {} rule {}: no backend with a weight above 0; rule skipped",
                  r->id().toString(), ri);
        continue;
      }
      const std::string destination = clusters.empty() ? "" : clusters.front().cluster;
      const manifest::TrafficPolicy* policy =
          destination.empty() ? nullptr : res.policyFor(destination);

      proxy::Route base;
      base.clusters = clusters;
      base.weighted = clusters.size() > 1;
      base.total_weight = total;
      base.timeout = 15s;
      base.retries = proxy::meshDefaultRetries();
      applyPolicy(policy, base);
      const manifest::RequestRedirect* redirect = nullptr;
      for (const auto& f : rule.filters) {
        if (const auto* m = std::get_if<manifest::RequestHeaderModifier>(&f)) {
          for (const auto& h : m->set)
            base.request_headers_to_add.push_back(h);
          for (const auto& h : m->add)
            base.request_headers_to_append.push_back(h);
          for (const auto& h : m->remove)
            base.request_headers_to_remove.push_back(h);
        } else {
          redirect = &std::get<manifest::RequestRedirect>(f);
        }
      }
      if (redirect) {
        // The request is answered with the redirect: nothing of forwarding applies (the
        // manifest loader rejects a redirect beside backendRefs or header changes).
        base.clusters.clear();
        base.weighted = false;
        base.total_weight = 0;
        base.retries = proxy::RetryPolicy{};
        base.fault = proxy::FaultConfig{};
        base.rate_limit.reset();
        base.request_headers_to_add.clear();
        base.request_headers_to_append.clear();
        base.request_headers_to_remove.clear();
        base.redirect.emplace();
        base.redirect->scheme = redirect->scheme;
        base.redirect->host = redirect->hostname;
        base.redirect->port = redirect->port;
        base.redirect->status = redirect->status_code;
        if (redirect->path && redirect->path->type == manifest::RedirectPathType::kReplaceFullPath)
          base.redirect->path = redirect->path->value;
      }
      if (rule.timeouts.request)
        base.timeout = *rule.timeouts.request;
      if (rule.timeouts.backend_request)
        base.retries.per_try_timeout = *rule.timeouts.backend_request;

      std::vector<std::string> hosts;
      if (parent_service.empty()) {
        for (const auto& h : hr.hostnames)
          if (h.find('*') == std::string::npos)
            hosts.push_back(h);
        if (!hr.hostnames.empty() && hosts.empty()) {
          TLOG_WARN("mesh: {}: wildcard hostnames are not supported yet; route skipped",
                    r->id().toString());
          break;
        }
        if (hosts.empty())
          hosts.push_back(""); // any host
      } else {
        hosts.push_back("");
      }

      for (const auto& m : rule.matches) {
        // Gateway API prefixes match whole path elements: /api matches /api and /api/x but
        // not /apis; the proxy's prefix is a plain string prefix, so /api becomes two matches.
        std::vector<std::pair<proxy::PathMatchKind, std::string>> paths;
        switch (m.path.type) {
        case manifest::PathMatchType::kExact:
          paths.emplace_back(proxy::PathMatchKind::kExact, m.path.value);
          break;
        case manifest::PathMatchType::kRegularExpression:
          paths.emplace_back(proxy::PathMatchKind::kRegex, m.path.value);
          break;
        case manifest::PathMatchType::kPathPrefix: {
          std::string p = m.path.value;
          while (p.size() > 1 && p.back() == '/')
            p.pop_back();
          if (p == "/") {
            paths.emplace_back(proxy::PathMatchKind::kPrefix, "/");
          } else {
            paths.emplace_back(proxy::PathMatchKind::kExact, p);
            paths.emplace_back(proxy::PathMatchKind::kPrefix, p + "/");
          }
          break;
        }
        }
        for (const auto& host : hosts) {
          for (const auto& [kind, path] : paths) {
            Ranked rk{base, 0, 0, !m.method.empty(), m.headers.size()};
            proxy::RouteMatch& rm = rk.route.match;
            rm.kind = kind;
            rm.path = path;
            rm.regex = kind == proxy::PathMatchKind::kRegex ? m.path.regex : nullptr;
            if (!m.method.empty())
              rm.methods.push_back(m.method);
            for (const auto& h : m.headers)
              rm.headers.push_back({h.name, h.value, h.regex});
            for (const auto& q : m.query_params)
              rm.query.push_back({q.name, q.value, q.regex});
            if (!host.empty())
              rm.headers.push_back({"host", host, nullptr});
            // ReplacePrefixMatch: the Gateway prefix /api becomes an exact /api and a prefix
            // /api/, and the replacement follows each half (/v2 and /v2/).
            if (rk.route.redirect && redirect->path &&
                redirect->path->type == manifest::RedirectPathType::kReplacePrefixMatch) {
              std::string with = redirect->path->value;
              if (kind == proxy::PathMatchKind::kPrefix && path.back() == '/' &&
                  (with.empty() || with.back() != '/'))
                with.push_back('/');
              rk.route.redirect->prefix_rewrite = with;
            }
            // The exact half of a split prefix ranks as the prefix it came from.
            const bool from_prefix = m.path.type == manifest::PathMatchType::kPathPrefix;
            rk.kind_rank = from_prefix ? 1 : kind == proxy::PathMatchKind::kExact ? 0 : 2;
            rk.path_length = from_prefix ? m.path.value.size() : path.size();
            rk.route.name = r->metadata.name;
            out.push_back(std::move(rk));
          }
        }
      }
    }
  }
  std::stable_sort(out.begin(), out.end(), morePrecise);
  std::vector<proxy::Route> result;
  result.reserve(out.size());
  for (auto& rk : out)
    result.push_back(std::move(rk.route));
  return result;
}

std::string jsonString(std::string_view s) { return dump(json(s)); }

// An endpoint address as a JSON string: it is SocketAddress::toString() (digits, hex, '.',
// ':', '[', ']'), which needs no escaping.
void appendAddress(std::string& out, std::string_view address) {
  out += '"';
  out += address;
  out += '"';
}

// One endpoint as the protocol carries it (docs/protocol.md "Services"): the address string
// when the weight is the default 1, the common case (16 bytes for "10.0.1.23:8080" instead of
// 39, and a string rather than an object for every client to parse), else the object
// {"address":..,"weight":..} as nlohmann would print it (keys sorted).
void appendEndpoint(std::string& out, std::string_view address, uint32_t weight) {
  if (weight == 1) {
    appendAddress(out, address);
    return;
  }
  out += "{\"address\":";
  appendAddress(out, address);
  out += ",\"weight\":";
  out += std::to_string(weight);
  out += '}';
}

// The length of `"endpoints":` + the full list of `e`: what endpoint-level changes must beat.
size_t fullEndpointsSize(const ServiceEntry& e) {
  return e.endpointsJsonSize() + sizeof("\"endpoints\":") - 1;
}

// The length appendEndpoint gives.
size_t endpointItemSize(std::string_view address, uint32_t weight) {
  if (weight == 1)
    return address.size() + 2;
  return address.size() + 2 + sizeof("{\"address\":,\"weight\":}") - 1 +
         std::to_string(weight).size();
}

void setWeight(ServiceEntry& e, Endpoint& ep, std::string_view address, uint32_t weight) {
  e.endpoint_items_size += endpointItemSize(address, weight);
  e.endpoint_items_size -= endpointItemSize(address, ep.weight);
  ep.weight = weight;
}

// One more instance at `address` with `weight`.
void addMember(ServiceEntry& e, const std::string& address, uint32_t weight) {
  auto [it, fresh] = e.endpoints.try_emplace(address);
  Endpoint& ep = it->second;
  if (fresh) {
    ep.weight = weight;
    e.endpoint_items_size += endpointItemSize(address, weight);
    return;
  }
  if (ep.shared.empty())
    ep.shared.push_back(ep.weight);
  ep.shared.push_back(weight);
  setWeight(e, ep, address, std::min(ep.weight, weight));
}

// One instance fewer at `address` (which had `weight`).
void removeMember(ServiceEntry& e, const std::string& address, uint32_t weight) {
  auto it = e.endpoints.find(address);
  if (it == e.endpoints.end())
    return;
  Endpoint& ep = it->second;
  if (ep.shared.empty()) {
    e.endpoint_items_size -= endpointItemSize(address, ep.weight);
    e.endpoints.erase(it);
    return;
  }
  if (auto w = std::find(ep.shared.begin(), ep.shared.end(), weight); w != ep.shared.end())
    ep.shared.erase(w);
  const uint32_t lowest = *std::min_element(ep.shared.begin(), ep.shared.end());
  if (ep.shared.size() == 1)
    ep.shared.clear();
  setWeight(e, ep, address, lowest);
}

// `"endpoints_added":[added],"endpoints_removed":[removed]` (an empty one left out), or empty
// when both are empty or the text would not be shorter than `full`.
std::string endpointChanges(const std::string& added, const std::string& removed, size_t full) {
  std::string out;
  if (!added.empty())
    out = "\"endpoints_added\":[" + added + "]";
  if (!removed.empty())
    out += (out.empty() ? "" : ",") + std::string("\"endpoints_removed\":[") + removed + "]";
  if (out.empty() || out.size() >= full)
    return std::string();
  return out;
}

} // namespace

proxy::Cluster meshDefaultCluster() {
  proxy::Cluster c;
  c.lb.policy = proxy::LbPolicy::kLeastRequest;
  c.connect_timeout = 1s;
  c.trust_proxy_errors = true; // a service's endpoints are its instances' sidecars
  return c;
}

proxy::Route meshDefaultRoute(std::string_view service) {
  proxy::Route r;
  r.match.kind = proxy::PathMatchKind::kPrefix;
  r.match.path = "/";
  r.clusters.push_back({std::string(service), 1, 0});
  r.total_weight = 1;
  r.timeout = 15s;
  r.retries = proxy::meshDefaultRetries();
  return r;
}

bool ServiceEntry::operator==(const ServiceEntry& other) const {
  return protocol == other.protocol && cluster == other.cluster && routes == other.routes &&
         std::equal(endpoints.begin(), endpoints.end(), other.endpoints.begin(),
                    other.endpoints.end(), [](const auto& a, const auto& b) {
                      return a.first == b.first && a.second.weight == b.second.weight;
                    });
}

std::string ServiceEntry::endpointsJson() const {
  std::string out;
  out.reserve(endpointsJsonSize());
  out += '[';
  for (const auto& [address, ep] : endpoints) {
    if (out.size() > 1)
      out += ',';
    appendEndpoint(out, address, ep.weight);
  }
  out += ']';
  return out;
}

std::string ServiceEntry::json() const {
  std::string out;
  out.reserve(protocol.size() + cluster.size() + endpointsJsonSize() + routes.size() + 64);
  out += "{\"protocol\":";
  out += protocol;
  out += ",\"cluster\":";
  out += cluster;
  out += ",\"endpoints\":";
  out += endpointsJson();
  out += ",\"routes\":";
  out += routes;
  out += '}';
  return out;
}

std::string GatewayEntry::json() const { return "{\"routes\":" + routes + "}"; }

namespace {

// A service's definition (protocol, cluster, routes: made from the resources alone) into `e`.
void compileDefinition(const MeshResources& resources, const std::string& name, ServiceEntry& e) {
  proxy::Protocol protocol = proxy::Protocol::kHttp;
  if (const manifest::Service* s = resources.serviceFor(name); s && !s->ports.empty())
    protocol = s->ports.front().protocol;
  e.protocol = jsonString(proxy::protocolName(protocol));
  const manifest::TrafficPolicy* policy = resources.policyFor(name);
  proxy::Cluster cluster = meshDefaultCluster();
  applyPolicy(policy, cluster);
  e.cluster = dump(clusterJson(cluster));

  std::vector<proxy::Route> routes;
  auto attached = resources.routesForService(name);
  if (!attached.empty())
    routes = compileHttpRoutes(resources, attached, name);
  if (attached.empty()) {
    proxy::Route r = meshDefaultRoute(name);
    applyPolicy(policy, r);
    routes.push_back(std::move(r));
  }
  e.routes = dump(proxy::routesToJson(routes));
}

std::string instanceKey(const std::string& node, const std::string& id) {
  std::string key;
  key.reserve(node.size() + 1 + id.size());
  key += node;
  key += '\0';
  key += id;
  return key;
}

} // namespace

std::optional<GatewayEntry> compileGateway(const MeshResources& resources,
                                           std::string_view gateway) {
  auto attached = resources.routesForGateway(gateway);
  if (attached.empty())
    return std::nullopt;
  GatewayEntry g;
  g.routes = dump(proxy::routesToJson(compileHttpRoutes(resources, attached, "")));
  return g;
}

// ---------------------------------------------------------------------------------------------
// MeshCompiler

MeshCompiler::MeshCompiler(const registry::Catalog& catalog, size_t max_endpoint_tombstones)
    : catalog_(catalog), max_endpoint_tombstones_(max_endpoint_tombstones) {}

void MeshCompiler::indexInstance(const registry::Service& s) {
  instances_[fold(s.node)][fold(s.id)] = fold(s.name);
}

std::optional<std::string> MeshCompiler::indexCheck(const registry::Check& c) {
  auto [it, fresh] = check_owners_[fold(c.node)].try_emplace(fold(c.id));
  std::optional<std::string> before;
  if (!fresh)
    before = std::move(it->second);
  it->second = fold(c.service_id);
  return before;
}

void MeshCompiler::markOwner(const std::string& folded_node, const std::string& owner) {
  if (owner.empty())
    markNode(folded_node); // a node check gates every instance of the node
  else
    dirty_instances_.emplace(folded_node, owner);
}

std::optional<MeshCompiler::Contribution> MeshCompiler::contributionOf(const std::string& node,
                                                                       const std::string& id) {
  ++stats_.instances_compiled;
  auto inst = catalog_.instance(node, id);
  if (!inst || inst->aggregateStatus() != registry::CheckStatus::kPassing)
    return std::nullopt;
  const registry::Service& s = *inst->service;
  const std::string& addr = s.address.empty() ? inst->node->address : s.address;
  asio::error_code ec;
  auto ip = asio::ip::make_address(addr, ec);
  if (ec || s.port == 0) {
    // A proxy endpoint is an IP and a port; a host name would make the proxy reject the whole
    // update, so such an instance is left out (and counted).
    ++stats_.endpoints_skipped;
    return std::nullopt;
  }
  return Contribution{fold(s.name), net::SocketAddress{ip, s.port}.toString(),
                      uint32_t(std::clamp<int32_t>(s.weights.passing, 1, 1000000))};
}

void MeshCompiler::updateInstance(const std::string& node, const std::string& id, Before* before,
                                  std::set<std::string>* created) {
  const std::string key = instanceKey(node, id);
  std::optional<Contribution> now = contributionOf(node, id);
  auto old = contributions_.find(key);
  if (old == contributions_.end() && !now)
    return;
  if (old != contributions_.end() && now && old->second == *now)
    return;
  auto entry = [&](const std::string& service) -> ServiceEntry& {
    auto [it, fresh] = services_.try_emplace(service);
    if (fresh && created != nullptr)
      created->insert(service);
    return it->second;
  };
  auto record = [&](const std::string& service, const std::string& address) {
    if (before == nullptr)
      return;
    const ServiceEntry& e = entry(service);
    auto ep = e.endpoints.find(address);
    (*before)[service].try_emplace(
        address, ep == e.endpoints.end() ? Was{} : Was{ep->second.weight, ep->second.changed});
  };
  if (old != contributions_.end()) {
    const Contribution& c = old->second;
    record(c.service, c.address);
    removeMember(entry(c.service), c.address, c.weight);
    contributions_.erase(old);
  }
  if (now) {
    record(now->service, now->address);
    addMember(entry(now->service), now->address, now->weight);
    contributions_.emplace(key, std::move(*now));
  }
}

void MeshCompiler::rebuild() {
  instances_.clear();
  check_owners_.clear();
  node_addresses_.clear();
  contributions_.clear();
  services_.clear();
  gateways_.clear();
  dirty_instances_.clear();
  dirty_services_.clear();
  resources_dirty_ = false;
  version_ = std::max<uint64_t>(catalog_.index(), 1);
  for (const auto& n : catalog_.nodes().value) {
    const std::string node = fold(n->name);
    node_addresses_[node] = n->address;
    auto ns = catalog_.nodeServices(n->name);
    if (ns.value)
      for (const auto& s : ns.value->services) {
        indexInstance(*s);
        updateInstance(node, fold(s->id), nullptr, nullptr);
      }
    for (const auto& c : catalog_.nodeChecks(n->name).value)
      indexCheck(*c);
  }
  resources_.load(catalog_);
  std::set<std::string> names = resources_.definedServices();
  for (const auto& [name, tags] : catalog_.services().value)
    names.insert(fold(name));
  for (const auto& name : names) {
    ++stats_.services_compiled;
    compileDefinition(resources_, name, services_[name]);
  }
  for (const auto& g : resources_.gateways())
    if (auto e = compileGateway(resources_, g))
      gateways_.emplace(g, std::move(*e));
  ++stats_.full_rebuilds;
  snapshot_.reset();
  service_versions_.clear();
  gateway_versions_.clear();
  service_tombstones_.clear();
  gateway_tombstones_.clear();
  endpoint_history_.clear();
  for (auto& [name, e] : services_) {
    service_versions_[name] = {version_, version_, version_};
    resetHistory(endpoint_history_[name], version_);
    for (auto& [address, ep] : e.endpoints)
      ep.changed = version_;
  }
  for (const auto& [name, g] : gateways_)
    gateway_versions_[name] = {version_, version_, version_};
  horizon_ = version_;
}

void MeshCompiler::noteCreated(std::map<std::string, Versions>& live,
                               std::map<std::string, Versions>& tombstones,
                               const std::string& name, uint64_t v) {
  auto t = tombstones.find(name);
  live[name] = {v, v, t != tombstones.end() ? t->second.since : v};
  if (t != tombstones.end())
    tombstones.erase(t);
}

void MeshCompiler::noteRemoved(std::map<std::string, Versions>& live,
                               std::map<std::string, Versions>& tombstones,
                               const std::string& name, uint64_t v) {
  auto it = live.find(name);
  tombstones[name] =
      it != live.end() ? Versions{it->second.created, v, it->second.since} : Versions{v, v, v};
  if (it != live.end())
    live.erase(it);
  if (tombstones.size() <= kMaxTombstones)
    return;
  // Forget the oldest removal: a delta from before it can no longer be built.
  auto oldest = tombstones.begin();
  for (auto t = tombstones.begin(); t != tombstones.end(); ++t)
    if (t->second.changed < oldest->second.changed)
      oldest = t;
  horizon_ = std::max(horizon_, oldest->second.changed);
  tombstones.erase(oldest);
}

void MeshCompiler::resetHistory(EndpointHistory& h, uint64_t v) {
  h.definition = v;
  h.horizon = 0; // bases before `v` predate the service: they get its complete entry anyway
  h.removed.clear();
}

void MeshCompiler::pruneRemoved(EndpointHistory& h) const {
  if (h.removed.size() <= max_endpoint_tombstones_)
    return;
  // Forget the oldest removals, and with them every one at least as old (a base before the
  // newest forgotten one needs the full list anyway): that raises the service's horizon.
  std::vector<uint64_t> when;
  when.reserve(h.removed.size());
  for (const auto& [address, v] : h.removed)
    when.push_back(v);
  const size_t drop = h.removed.size() - max_endpoint_tombstones_;
  std::nth_element(when.begin(), when.begin() + ptrdiff_t(drop - 1), when.end());
  const uint64_t cutoff = when[drop - 1];
  std::erase_if(h.removed, [cutoff](const auto& t) { return t.second <= cutoff; });
  h.horizon = std::max(h.horizon, cutoff);
}

std::string MeshCompiler::endpointsSince(const ServiceEntry& e, const EndpointHistory& h,
                                         uint64_t base) {
  if (h.definition > base || h.horizon > base)
    return std::string();
  const size_t full = fullEndpointsSize(e);
  std::string added, removed;
  for (const auto& [address, ep] : e.endpoints) {
    if (ep.changed <= base)
      continue;
    if (!added.empty())
      added += ',';
    appendEndpoint(added, address, ep.weight);
    if (added.size() >= full)
      return std::string();
  }
  // An address added and removed again since `base` is among these: the receiver never had
  // it and ignores its removal (docs/protocol.md), cheaper than remembering when it came.
  for (const auto& [address, when] : h.removed) {
    if (when <= base)
      continue;
    if (!removed.empty())
      removed += ',';
    appendAddress(removed, address);
    if (added.size() + removed.size() >= full)
      return std::string();
  }
  return endpointChanges(added, removed, full);
}

std::shared_ptr<const std::string> MeshCompiler::deltaSince(uint64_t base) const {
  if (base < horizon_ || base >= version_)
    return nullptr;
  std::string changed, removed, changed_gw, removed_gw;
  auto append = [](std::string& list, std::string_view item) {
    if (!list.empty())
      list += ',';
    list += item;
  };
  for (const auto& [name, v] : service_versions_) {
    if (v.changed <= base)
      continue;
    const ServiceEntry& e = services_.at(name);
    std::string diff;
    if (v.created <= base) // the receiver has the service: its endpoint change may do
      if (auto h = endpoint_history_.find(name); h != endpoint_history_.end())
        diff = endpointsSince(e, h->second, base);
    append(changed, jsonString(name) + ":" + (diff.empty() ? e.json() : "{" + diff + "}"));
  }
  for (const auto& [name, t] : service_tombstones_)
    if (t.changed > base && t.since <= base)
      append(removed, jsonString(name));
  for (const auto& [name, v] : gateway_versions_)
    if (v.changed > base)
      append(changed_gw, jsonString(name) + ":" + gateways_.at(name).json());
  for (const auto& [name, t] : gateway_tombstones_)
    if (t.changed > base && t.since <= base)
      append(removed_gw, jsonString(name));
  return std::make_shared<const std::string>(
      fmt::format("{{\"type\":\"delta\",\"version\":{},\"services\":{{{}}},\"removed\":[{}],"
                  "\"gateways\":{{{}}},\"removed_gateways\":[{}]}}\n",
                  version_, changed, removed, changed_gw, removed_gw));
}

void MeshCompiler::markNode(const std::string& folded_node) {
  auto it = instances_.find(folded_node);
  if (it == instances_.end())
    return;
  for (const auto& [id, svc] : it->second)
    dirty_instances_.emplace(folded_node, id);
}

void MeshCompiler::noteBatch(const registry::Batch& batch) {
  for (const auto& m : batch.mutations) {
    std::visit(
        [&](const auto& mu) {
          using T = std::decay_t<decltype(mu)>;
          if constexpr (std::is_same_v<T, registry::NodePut>) {
            // Only the address matters to endpoints (of the instances without their own).
            const std::string node = fold(mu.node->name);
            auto [it, fresh] = node_addresses_.try_emplace(node, mu.node->address);
            if (!fresh && it->second != mu.node->address) {
              it->second = mu.node->address;
              markNode(node);
            }
          } else if constexpr (std::is_same_v<T, registry::NodeDelete>) {
            const std::string node = fold(mu.node);
            markNode(node);
            if (auto n = instances_.find(node); n != instances_.end())
              for (const auto& [id, svc] : n->second)
                dirty_services_.insert(svc);
            instances_.erase(node);
            check_owners_.erase(node);
            node_addresses_.erase(node);
          } else if constexpr (std::is_same_v<T, registry::ServicePut>) {
            const std::string node = fold(mu.service->node), id = fold(mu.service->id);
            auto& slot = instances_[node][id];
            if (!slot.empty())
              dirty_services_.insert(slot); // the old name, when the instance was renamed
            slot = fold(mu.service->name);
            dirty_services_.insert(slot);
            dirty_instances_.emplace(node, id);
          } else if constexpr (std::is_same_v<T, registry::ServiceDelete>) {
            const std::string node = fold(mu.node), id = fold(mu.id);
            dirty_instances_.emplace(node, id);
            auto n = instances_.find(node);
            if (n != instances_.end()) {
              auto i = n->second.find(id);
              if (i != n->second.end()) {
                dirty_services_.insert(i->second);
                n->second.erase(i);
              }
              if (n->second.empty())
                instances_.erase(n);
            }
          } else if constexpr (std::is_same_v<T, registry::CheckPut>) {
            const registry::Check& c = *mu.check;
            const std::string node = fold(c.node);
            const std::optional<std::string> before = indexCheck(c);
            if (before && *before != fold(c.service_id))
              markOwner(node, *before); // moved: what it gated before is evaluated again
            markOwner(node, fold(c.service_id));
          } else if constexpr (std::is_same_v<T, registry::CheckDelete>) {
            // The check's owner is remembered; one not known might have gated anything of
            // the node.
            const std::string node = fold(mu.node);
            std::optional<std::string> owner;
            if (auto n = check_owners_.find(node); n != check_owners_.end()) {
              if (auto c = n->second.find(fold(mu.id)); c != n->second.end()) {
                owner = c->second;
                n->second.erase(c);
                if (n->second.empty())
                  check_owners_.erase(n);
              }
            }
            markOwner(node, owner.value_or(std::string()));
          } else if constexpr (std::is_same_v<T, registry::KvPut>) {
            if (mu.entry->key.rfind(kResourcePrefix, 0) == 0)
              resources_dirty_ = true;
          } else if constexpr (std::is_same_v<T, registry::KvDelete>) {
            if (mu.key.rfind(kResourcePrefix, 0) == 0)
              resources_dirty_ = true;
          }
        },
        m);
  }
}

std::shared_ptr<const std::string> MeshCompiler::flush() {
  const bool full = resources_dirty_;
  if (full) {
    resources_.load(catalog_);
    ++stats_.full_rebuilds;
  }
  resources_dirty_ = false;

  // The instances first: each one's endpoint is moved in (or out of) its service's entry,
  // remembering what every address touched had before.
  Before before;
  std::set<std::string> created; // entries made for a service that had none
  for (const auto& [node, id] : dirty_instances_)
    updateInstance(node, id, &before, &created);
  dirty_instances_.clear();

  std::set<std::string> names;
  names.swap(dirty_services_);
  for (const auto& [name, addresses] : before)
    names.insert(name);
  if (full) {
    const std::set<std::string>& defined = resources_.definedServices();
    names.insert(defined.begin(), defined.end());
    for (const auto& [name, tags] : catalog_.services().value)
      names.insert(fold(name));
    for (const auto& [name, e] : services_)
      names.insert(name);
  }

  // The version this flush produces if anything changed (nothing is recorded otherwise).
  const uint64_t next = std::max(version_ + 1, catalog_.index());
  std::string changed, removed, changed_gw, removed_gw;
  auto append = [](std::string& list, std::string_view item) {
    if (!list.empty())
      list += ',';
    list += item;
  };
  for (const auto& name : names) {
    ++stats_.services_compiled;
    auto it = services_.find(name);
    const bool existed = it != services_.end() && created.count(name) == 0;
    if (!catalog_.hasInstances(name) && resources_.definedServices().count(name) == 0) {
      // Gone: no instance (so no endpoint) is left and no resource defines it.
      if (it != services_.end())
        services_.erase(it);
      if (existed) {
        append(removed, jsonString(name));
        endpoint_history_.erase(name);
        noteRemoved(service_versions_, service_tombstones_, name, next);
      }
      continue;
    }
    if (!existed) {
      ServiceEntry& e = it != services_.end() ? it->second : services_[name];
      compileDefinition(resources_, name, e);
      for (auto& [address, ep] : e.endpoints)
        ep.changed = next;
      append(changed, jsonString(name) + ":" + e.json());
      resetHistory(endpoint_history_[name], next);
      noteCreated(service_versions_, service_tombstones_, name, next);
      continue;
    }
    ServiceEntry& e = it->second;
    EndpointHistory& h = endpoint_history_[name];
    // Field by field: a health change sends only the endpoints.
    std::string fields;
    if (full) {
      ServiceEntry def;
      compileDefinition(resources_, name, def);
      auto field = [&](const char* key, std::string& current, std::string& compiled) {
        if (current == compiled)
          return;
        append(fields, fmt::format("\"{}\":{}", key, compiled));
        current = std::move(compiled);
        h.definition = next;
      };
      field("protocol", e.protocol, def.protocol);
      field("cluster", e.cluster, def.cluster);
      field("routes", e.routes, def.routes);
    }
    if (auto b = before.find(name); b != before.end()) {
      std::string added, gone;
      for (const auto& [address, was] : b->second) {
        auto ep = e.endpoints.find(address);
        const uint32_t now = ep == e.endpoints.end() ? 0 : ep->second.weight;
        if (now == was.weight) {
          if (now != 0) // possibly taken out and put back within this flush: as it was
            ep->second.changed = was.changed;
          continue;
        }
        if (now != 0) {
          ep->second.changed = next;
          h.removed.erase(address); // back (or reweighted)
          if (!added.empty())
            added += ',';
          appendEndpoint(added, address, now);
        } else {
          h.removed[address] = next;
          if (!gone.empty())
            gone += ',';
          appendAddress(gone, address);
        }
      }
      pruneRemoved(h);
      if (!added.empty() || !gone.empty()) {
        std::string diff = endpointChanges(added, gone, fullEndpointsSize(e));
        append(fields, diff.empty() ? "\"endpoints\":" + e.endpointsJson() : diff);
      }
    }
    if (!fields.empty()) {
      append(changed, jsonString(name) + ":{" + fields + "}");
      service_versions_[name].changed = next;
    }
  }
  if (full) {
    std::set<std::string> gws = resources_.gateways();
    for (const auto& [name, g] : gateways_)
      gws.insert(name);
    for (const auto& name : gws) {
      auto g = compileGateway(resources_, name);
      auto old = gateways_.find(name);
      if (!g) {
        if (old != gateways_.end()) {
          append(removed_gw, jsonString(name));
          gateways_.erase(old);
          noteRemoved(gateway_versions_, gateway_tombstones_, name, next);
        }
      } else if (old == gateways_.end() || !(old->second == *g)) {
        append(changed_gw, jsonString(name) + ":" + g->json());
        if (old == gateways_.end())
          noteCreated(gateway_versions_, gateway_tombstones_, name, next);
        else
          gateway_versions_[name].changed = next;
        gateways_[name] = std::move(*g);
      }
    }
  }
  if (changed.empty() && removed.empty() && changed_gw.empty() && removed_gw.empty())
    return nullptr;
  version_ = next;
  snapshot_.reset();
  ++stats_.deltas;
  auto msg = std::make_shared<std::string>();
  *msg = fmt::format("{{\"type\":\"delta\",\"version\":{},\"services\":{{{}}},\"removed\":[{}],"
                     "\"gateways\":{{{}}},\"removed_gateways\":[{}]}}\n",
                     version_, changed, removed, changed_gw, removed_gw);
  return msg;
}

std::shared_ptr<const std::string> MeshCompiler::snapshotBody() {
  if (snapshot_)
    return snapshot_;
  std::string out = fmt::format("\"version\":{},\"services\":{{", version_);
  bool first = true;
  for (const auto& [name, e] : services_) {
    if (!first)
      out += ',';
    first = false;
    out += jsonString(name);
    out += ':';
    out += e.json();
  }
  out += "},\"gateways\":{";
  first = true;
  for (const auto& [name, g] : gateways_) {
    if (!first)
      out += ',';
    first = false;
    out += jsonString(name);
    out += ':';
    out += g.json();
  }
  out += "}}\n";
  snapshot_ = std::make_shared<const std::string>(std::move(out));
  return snapshot_;
}

} // namespace trellis::control::mesh
