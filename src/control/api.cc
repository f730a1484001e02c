#include "control/api.h"

#include <charconv>

#include <fmt/format.h>

#include "base/log.h"
#include "control/filter.h"
#include "control/json.h"
#include "http/uri.h"

namespace trellis::control {

using registry::CheckStatus;
using registry::WatchScope;

namespace {

bool consume(std::string_view& s, std::string_view prefix) {
  if (s.substr(0, prefix.size()) != prefix)
    return false;
  s.remove_prefix(prefix.size());
  return true;
}

Result<uint64_t> parseUint(std::string_view text, std::string_view what) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || text.empty())
    return makeError(ErrorCode::kInvalidArgument, "Invalid {}: \"{}\" is not an integer", what,
                     text);
  return v;
}

// ?node-meta=key:value (repeatable).
Result<std::map<std::string, std::string>> nodeMetaParams(const http::ServerRequest& req) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : req.query_params) {
    if (k != "node-meta")
      continue;
    size_t colon = v.find(':');
    if (colon == std::string::npos)
      return makeError(ErrorCode::kInvalidArgument,
                       "node-meta: \"{}\" is not in the form key:value", v);
    out[v.substr(0, colon)] = v.substr(colon + 1);
  }
  return out;
}

std::vector<std::string> tagParams(const http::ServerRequest& req) {
  std::vector<std::string> tags;
  for (const auto& [k, v] : req.query_params)
    if (k == "tag")
      tags.push_back(v);
  return tags;
}

FieldValue metaField(const std::map<std::string, std::string>& m, std::string_view rest) {
  if (rest.empty())
    return FieldValue::ofMap(m);
  auto it = m.find(std::string(rest));
  return it == m.end() ? FieldValue{} : FieldValue::string(it->second);
}

// Selectors of a service instance, in the catalog form ("ServiceMeta.x") and the health form
// ("Service.Meta.x", "Node.Node").
FieldValue instanceField(const registry::Node& n, const registry::Service& s,
                         std::string_view sel) {
  std::string_view rest = sel;
  if (consume(rest, "ServiceMeta"))
    return rest.empty() || consume(rest, ".") ? metaField(s.meta, rest) : FieldValue{};
  if (consume(rest, "NodeMeta"))
    return rest.empty() || consume(rest, ".") ? metaField(n.meta, rest) : FieldValue{};
  if (consume(rest, "Service.Meta"))
    return rest.empty() || consume(rest, ".") ? metaField(s.meta, rest) : FieldValue{};
  if (consume(rest, "Node.Meta"))
    return rest.empty() || consume(rest, ".") ? metaField(n.meta, rest) : FieldValue{};
  if (sel == "ServiceTags" || sel == "Service.Tags" || sel == "Tags")
    return FieldValue::ofList(s.tags);
  if (sel == "ServiceID" || sel == "Service.ID" || sel == "ID")
    return FieldValue::string(s.id);
  if (sel == "ServiceName" || sel == "Service.Service" || sel == "Service")
    return FieldValue::string(s.name);
  if (sel == "ServiceAddress" || sel == "Service.Address")
    return FieldValue::string(s.address);
  if (sel == "ServicePort" || sel == "Service.Port" || sel == "Port")
    return FieldValue::string(std::to_string(s.port));
  if (sel == "Node" || sel == "Node.Node")
    return FieldValue::string(n.name);
  if (sel == "Address" || sel == "Node.Address")
    return FieldValue::string(n.address);
  if (sel == "Datacenter" || sel == "Node.Datacenter")
    return FieldValue::string("dc1");
  return FieldValue{};
}

bool knownInstanceSelector(std::string_view sel) {
  for (std::string_view p : {"ServiceMeta", "NodeMeta", "Service.Meta", "Node.Meta"}) {
    std::string_view rest = sel;
    if (consume(rest, p) && (rest.empty() || rest[0] == '.'))
      return true;
  }
  for (std::string_view s :
       {"ServiceTags", "Service.Tags", "Tags", "ServiceID", "Service.ID", "ID", "ServiceName",
        "Service.Service", "Service", "ServiceAddress", "Service.Address", "ServicePort",
        "Service.Port", "Port", "Node", "Node.Node", "Address", "Node.Address", "Datacenter",
        "Node.Datacenter"})
    if (sel == s)
      return true;
  return false;
}

Result<std::optional<Filter>> filterParam(const http::ServerRequest& req) {
  auto f = req.query("filter");
  if (!f || f->empty())
    return std::optional<Filter>();
  auto parsed = Filter::parse(*f, knownInstanceSelector);
  if (!parsed)
    return parsed.error();
  return std::optional<Filter>(std::move(*parsed));
}

uint16_t statusFor(const Error& e) {
  switch (e.code()) {
  case ErrorCode::kInvalidArgument:
  case ErrorCode::kFailedPrecondition:
    return 400;
  case ErrorCode::kNotFound:
    return 404;
  case ErrorCode::kResourceExhausted:
    return 429;
  case ErrorCode::kUnavailable:
    return 503;
  default:
    return 500;
  }
}

std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

} // namespace

Api::Api(Dispatcher& loop, registry::Registry& registry, registry::HealthScheduler& health,
         telemetry::Registry& metrics, registry::RandomSource& random, ApiSettings settings)
    : loop_(loop), registry_(registry), health_(health), metrics_(metrics),
      settings_(std::move(settings)),
      blocking_(loop, registry.catalog(), random, settings_.blocking) {
  if (auto f = metrics_.counter("trellis_api_requests_total",
                                "HTTP API requests by endpoint and status code",
                                {"endpoint", "code"}))
    requests_ = *f;
  if (auto h = metrics_.histogram(
          "trellis_registry_write_duration_seconds",
          "Time from submitting a registry write to its durable commit (store group commit)",
          {}, {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}))
    write_latency_ = (*h)->handle(0);
  if (auto r = metrics_.gaugeCallback("trellis_api_blocking_queries",
                                      "Blocking queries parked waiting for a change",
                                      [this] { return double(blocking_.parked()); }))
    callbacks_.push_back(std::move(*r));
}

Api::~Api() { *alive_ = false; }

void Api::countRequest(const std::string& endpoint, uint16_t status) {
  if (requests_ == nullptr)
    return;
  auto key = std::make_pair(endpoint, status);
  auto it = request_handles_.find(key);
  if (it == request_handles_.end())
    it = request_handles_
             .emplace(key, requests_->handle(0, {endpoint, std::to_string(status)}))
             .first;
  it->second.inc();
}

void Api::reply(const Writer& w, const std::string& endpoint, uint16_t status,
                std::string_view body, std::string_view content_type, uint64_t index) {
  countRequest(endpoint, status);
  http::HeaderMap h;
  h.add("Content-Type", content_type);
  if (index != 0) {
    h.add("X-Consul-Index", std::to_string(index));
    h.add("X-Consul-KnownLeader", "true");
    h.add("X-Consul-LastContact", "0");
  }
  w->send(status, h, body);
}

void Api::replyError(const Writer& w, const std::string& endpoint, const Error& e) {
  reply(w, endpoint, statusFor(e), e.message() + "\n");
}

bool Api::requireMethod(http::ServerRequest& req, const Writer& w, const std::string& endpoint,
                        http::Method m) {
  if (req.method == m || (m == http::Method::kGet && req.method == http::Method::kHead))
    return true;
  reply(w, endpoint, 405, fmt::format("method {} not allowed\n", req.method_name));
  return false;
}

// Consul before 1.0 also took GET for the agent writes whose argument is in the path, and
// python-consul (0.7) still sends GET for them.
bool Api::legacyPut(http::ServerRequest& req, const Writer& w, const std::string& endpoint) {
  if (req.method == http::Method::kGet)
    return true;
  return requireMethod(req, w, endpoint, http::Method::kPut);
}

void Api::handle(http::ServerRequest& req, std::shared_ptr<http::ResponseWriter> w) {
  route(req, w);
}

void Api::route(http::ServerRequest& req, const Writer& w) {
  std::string_view path = req.path;
  if (path == "/metrics") {
    if (!requireMethod(req, w, "metrics", http::Method::kGet))
      return;
    reply(w, "metrics", 200, metrics_.renderPrometheus(), telemetry::kPrometheusContentType);
    return;
  }
  if (consume(path, "/v1/agent/"))
    return agent(req, w, path);
  if (consume(path, "/v1/catalog/"))
    return catalog(req, w, path);
  if (consume(path, "/v1/health/"))
    return health(req, w, path);
  if (consume(path, "/v1/kv/") || path == "/v1/kv")
    return kv(req, w, path == "/v1/kv" ? std::string_view() : path);
  if (consume(path, "/v1/status/"))
    return status(req, w, path);
  reply(w, "unknown", 404, fmt::format("no such endpoint: {}\n", req.path));
}

void Api::read(http::ServerRequest& req, const Writer& w, const std::string& endpoint,
               const WatchScope& scope, Render render) {
  auto params = parseBlockingParams(req.query("index"), req.query("wait"), blocking_.settings());
  if (!params)
    return replyError(w, endpoint, params.error());
  auto alive = alive_;
  auto respond = [this, alive, w, endpoint, render = std::move(render)] {
    if (!*alive || !w->isOpen())
      return;
    auto r = render();
    if (!r)
      return replyError(w, endpoint, r.error());
    reply(w, endpoint, r->status, r->body, r->content_type, std::max<uint64_t>(r->index, 1));
  };
  uint64_t id = blocking_.wait(scope, *params, std::move(respond));
  if (id != 0)
    w->onClosed([this, alive, id] {
      if (*alive)
        blocking_.cancel(id);
    });
}

void Api::write(const Writer& w, const std::string& endpoint, registry::WriteRequest req,
                std::string ok_body) {
  auto alive = alive_;
  auto start = loop_.now();
  registry_.submit(std::move(req), [this, alive, w, endpoint, ok_body = std::move(ok_body),
                                    start](Result<registry::WriteResult> r) {
    if (!*alive)
      return;
    write_latency_.observe(loop_.now() - start);
    if (!r)
      return replyError(w, endpoint, r.error());
    reply(w, endpoint, 200, ok_body, "application/json", r->index);
  });
}

// KV writes answer `true`, or `false` when a check-and-set precondition failed.
void Api::writeKv(const Writer& w, const std::string& endpoint, registry::WriteRequest req) {
  auto alive = alive_;
  auto start = loop_.now();
  registry_.submit(std::move(req), [this, alive, w, endpoint,
                                    start](Result<registry::WriteResult> r) {
    if (!*alive)
      return;
    write_latency_.observe(loop_.now() - start);
    if (!r && r.error().code() == ErrorCode::kFailedPrecondition)
      return reply(w, endpoint, 200, "false", "application/json");
    if (!r)
      return replyError(w, endpoint, r.error());
    reply(w, endpoint, 200, "true", "application/json", r->index);
  });
}

void Api::ttlUpdate(const Writer& w, const std::string& endpoint, std::string check_id,
                    CheckStatus status, std::string output) {
  auto alive = alive_;
  health_.updateTtl(settings_.node_name, check_id, status, std::move(output),
                    [this, alive, w, endpoint](Result<registry::WriteResult> r) {
                      if (!*alive)
                        return;
                      if (!r)
                        return replyError(w, endpoint, r.error());
                      reply(w, endpoint, 200, "", "text/plain; charset=utf-8", r->index);
                    });
}

// ---------------------------------------------------------------------------------------------
// /v1/agent/

void Api::agent(http::ServerRequest& req, const Writer& w, std::string_view rest) {
  const std::string& node = settings_.node_name;
  registry::Catalog& cat = registry_.catalog();
  if (rest == "services") {
    const std::string ep = "agent.services";
    if (!requireMethod(req, w, ep, http::Method::kGet))
      return;
    auto filter = filterParam(req);
    if (!filter)
      return replyError(w, ep, filter.error());
    return read(req, w, ep, WatchScope::node(node), [&cat, node, f = *filter]() -> Result<ReadResult> {
      auto ns = cat.nodeServices(node);
      Json out = Json::object();
      if (ns.value)
        for (const auto& s : ns.value->services)
          if (!f || f->matches([&](std::string_view sel) {
                return instanceField(*ns.value->node, *s, sel);
              }))
            out[s->id] = agentServiceJson(*s);
      return ReadResult{ns.index, dump(out)};
    });
  }
  if (rest == "checks") {
    const std::string ep = "agent.checks";
    if (!requireMethod(req, w, ep, http::Method::kGet))
      return;
    return read(req, w, ep, WatchScope::node(node), [&cat, node]() -> Result<ReadResult> {
      auto checks = cat.nodeChecks(node);
      Json out = Json::object();
      for (const auto& c : checks.value)
        out[c->id] = checkJson(*c);
      return ReadResult{checks.index, dump(out)};
    });
  }
  if (rest == "self") {
    const std::string ep = "agent.self";
    if (!requireMethod(req, w, ep, http::Method::kGet))
      return;
    auto n = cat.node(node);
    Json self{{"Config",
               {{"Datacenter", "dc1"},
                {"NodeName", node},
                {"NodeID", n ? n->id : ""},
                {"Server", true},
                {"Version", "trellis"}}},
              {"Member",
               {{"Name", node},
                {"Addr", n ? n->address : ""},
                {"Tags", {{"role", "consul"}, {"dc", "dc1"}}},
                {"Status", 1}}},
              {"Meta", n ? Json(n->meta) : Json::object()}};
    return reply(w, ep, 200, dump(self), "application/json");
  }
  if (rest == "metrics") {
    const std::string ep = "agent.metrics";
    if (!requireMethod(req, w, ep, http::Method::kGet))
      return;
    if (req.query("format") != std::optional<std::string_view>("prometheus"))
      return reply(w, ep, 400, "only ?format=prometheus is supported\n");
    return reply(w, ep, 200, metrics_.renderPrometheus(), telemetry::kPrometheusContentType);
  }
  if (rest == "service/register") {
    const std::string ep = "agent.service.register";
    if (!requireMethod(req, w, ep, http::Method::kPut))
      return;
    auto body = parseBody(req.body);
    if (!body)
      return replyError(w, ep, body.error());
    auto r = parseAgentService(*body, node);
    if (!r)
      return replyError(w, ep, r.error());
    return write(w, ep, std::move(*r), "");
  }
  if (consume(rest, "service/deregister/")) {
    const std::string ep = "agent.service.deregister";
    if (!legacyPut(req, w, ep))
      return;
    return write(w, ep, registry::AgentServiceDeregister{node, std::string(rest)}, "");
  }
  if (rest == "check/register") {
    const std::string ep = "agent.check.register";
    if (!requireMethod(req, w, ep, http::Method::kPut))
      return;
    auto body = parseBody(req.body);
    if (!body)
      return replyError(w, ep, body.error());
    auto r = parseAgentCheck(*body, node);
    if (!r)
      return replyError(w, ep, r.error());
    return write(w, ep, std::move(*r), "");
  }
  if (consume(rest, "check/deregister/")) {
    const std::string ep = "agent.check.deregister";
    if (!legacyPut(req, w, ep))
      return;
    return write(w, ep, registry::AgentCheckDeregister{node, std::string(rest)}, "");
  }
  for (auto [verb, st] : {std::pair{"check/pass/", CheckStatus::kPassing},
                          std::pair{"check/warn/", CheckStatus::kWarning},
                          std::pair{"check/fail/", CheckStatus::kCritical}}) {
    std::string_view id = rest;
    if (consume(id, verb)) {
      const std::string ep = fmt::format("agent.check.{}", std::string_view(verb).substr(6, 4));
      if (!legacyPut(req, w, ep))
        return;
      return ttlUpdate(w, ep, std::string(id), st, std::string(req.query("note").value_or("")));
    }
  }
  if (consume(rest, "check/update/")) {
    const std::string ep = "agent.check.update";
    if (!requireMethod(req, w, ep, http::Method::kPut))
      return;
    auto body = parseBody(req.body);
    if (!body)
      return replyError(w, ep, body.error());
    std::string status_text, output;
    if (!body->is_object())
      return reply(w, ep, 400, "body: expected an object\n");
    for (auto it = body->begin(); it != body->end(); ++it) {
      if (!it.value().is_string())
        return reply(w, ep, 400, fmt::format("{}: expected a string\n", it.key()));
      std::string k = it.key();
      for (auto& c : k)
        c = char(std::tolower(static_cast<unsigned char>(c)));
      if (k == "status")
        status_text = it.value().get<std::string>();
      else if (k == "output")
        output = it.value().get<std::string>();
    }
    auto st = registry::parseCheckStatus(status_text);
    if (!st)
      return reply(w, ep, 400,
                   fmt::format("Status: \"{}\" is not one of passing, warning, critical\n",
                               status_text));
    return ttlUpdate(w, ep, std::string(rest), *st, std::move(output));
  }
  reply(w, "agent.unknown", 404, fmt::format("no such endpoint: {}\n", req.path));
}

// ---------------------------------------------------------------------------------------------
// /v1/catalog/

void Api::catalog(http::ServerRequest& req, const Writer& w, std::string_view rest) {
  registry::Catalog& cat = registry_.catalog();
  if (rest == "register" || rest == "deregister") {
    const std::string ep = fmt::format("catalog.{}", rest);
    if (!requireMethod(req, w, ep, http::Method::kPut))
      return;
    auto body = parseBody(req.body);
    if (!body)
      return replyError(w, ep, body.error());
    if (rest == "register") {
      auto r = parseCatalogRegister(*body);
      if (!r)
        return replyError(w, ep, r.error());
      return write(w, ep, std::move(*r), "true");
    }
    auto r = parseCatalogDeregister(*body);
    if (!r)
      return replyError(w, ep, r.error());
    return write(w, ep, std::move(*r), "true");
  }
  auto meta = nodeMetaParams(req);
  if (rest == "services") {
    const std::string ep = "catalog.services";
    if (!requireMethod(req, w, ep, http::Method::kGet))
      return;
    if (!meta)
      return replyError(w, ep, meta.error());
    return read(req, w, ep, WatchScope::services(), [&cat, m = *meta]() -> Result<ReadResult> {
      auto s = cat.services(m);
      Json out = Json::object();
      for (const auto& [name, tags] : s.value)
        out[name] = tags;
      return ReadResult{s.index, dump(out)};
    });
  }
  if (rest == "nodes") {
    const std::string ep = "catalog.nodes";
    if (!requireMethod(req, w, ep, http::Method::kGet))
      return;
    if (!meta)
      return replyError(w, ep, meta.error());
    return read(req, w, ep, WatchScope::nodes(), [&cat, m = *meta]() -> Result<ReadResult> {
      auto ns = cat.nodes(m);
      Json out = Json::array();
      for (const auto& n : ns.value)
        out.push_back(nodeJson(*n));
      return ReadResult{ns.index, dump(out)};
    });
  }
  if (consume(rest, "service/")) {
    const std::string ep = "catalog.service";
    if (!requireMethod(req, w, ep, http::Method::kGet))
      return;
    if (!meta)
      return replyError(w, ep, meta.error());
    auto filter = filterParam(req);
    if (!filter)
      return replyError(w, ep, filter.error());
    registry::InstanceQuery q;
    q.tags = tagParams(req);
    q.node_meta = *meta;
    std::string name(rest);
    return read(req, w, ep, WatchScope::service(name),
                [&cat, name, q, f = *filter]() -> Result<ReadResult> {
                  auto entries = cat.serviceInstances(name, q);
                  Json out = Json::array();
                  for (const auto& e : entries.value)
                    if (!f || f->matches([&](std::string_view sel) {
                          return instanceField(*e.node, *e.service, sel);
                        }))
                      out.push_back(catalogServiceJson(*e.node, *e.service));
                  return ReadResult{entries.index, dump(out)};
                });
  }
  if (consume(rest, "node/")) {
    const std::string ep = "catalog.node";
    if (!requireMethod(req, w, ep, http::Method::kGet))
      return;
    std::string name(rest);
    return read(req, w, ep, WatchScope::node(name), [&cat, name]() -> Result<ReadResult> {
      auto ns = cat.nodeServices(name);
      if (!ns.value)
        return ReadResult{ns.index, "null"};
      Json services = Json::object();
      for (const auto& s : ns.value->services)
        services[s->id] = agentServiceJson(*s);
      Json out{{"Node", nodeJson(*ns.value->node)}, {"Services", std::move(services)}};
      return ReadResult{ns.index, dump(out)};
    });
  }
  reply(w, "catalog.unknown", 404, fmt::format("no such endpoint: {}\n", req.path));
}

// ---------------------------------------------------------------------------------------------
// /v1/health/

void Api::health(http::ServerRequest& req, const Writer& w, std::string_view rest) {
  registry::Catalog& cat = registry_.catalog();
  if (consume(rest, "service/")) {
    const std::string ep = "health.service";
    if (!requireMethod(req, w, ep, http::Method::kGet))
      return;
    auto meta = nodeMetaParams(req);
    if (!meta)
      return replyError(w, ep, meta.error());
    auto filter = filterParam(req);
    if (!filter)
      return replyError(w, ep, filter.error());
    registry::InstanceQuery q;
    q.tags = tagParams(req);
    q.node_meta = *meta;
    if (req.hasQuery("passing")) {
      auto p = req.query("passing");
      if (!p || p->empty() || *p == "true" || *p == "1")
        q.health = registry::HealthFilter::kPassing;
      else if (*p != "false" && *p != "0")
        return reply(w, ep, 400, fmt::format("Invalid value for ?passing: \"{}\"\n", *p));
    }
    std::string name(rest);
    return read(req, w, ep, WatchScope::service(name),
                [&cat, name, q, f = *filter]() -> Result<ReadResult> {
                  auto entries = cat.serviceInstances(name, q);
                  Json out = Json::array();
                  for (const auto& e : entries.value)
                    if (!f || f->matches([&](std::string_view sel) {
                          return instanceField(*e.node, *e.service, sel);
                        }))
                      out.push_back(healthEntryJson(e));
                  return ReadResult{entries.index, dump(out)};
                });
  }
  if (consume(rest, "checks/")) {
    const std::string ep = "health.checks";
    if (!requireMethod(req, w, ep, http::Method::kGet))
      return;
    std::string name(rest);
    return read(req, w, ep, WatchScope::service(name), [&cat, name]() -> Result<ReadResult> {
      auto checks = cat.serviceChecks(name);
      Json out = Json::array();
      for (const auto& c : checks.value)
        out.push_back(checkJson(*c));
      return ReadResult{checks.index, dump(out)};
    });
  }
  if (consume(rest, "state/")) {
    const std::string ep = "health.state";
    if (!requireMethod(req, w, ep, http::Method::kGet))
      return;
    std::optional<CheckStatus> state;
    if (rest != "any") {
      auto st = registry::parseCheckStatus(rest);
      if (!st)
        return reply(w, ep, 400,
                     fmt::format("Invalid state \"{}\": use any, passing, warning or critical\n",
                                 rest));
      state = *st;
    }
    return read(req, w, ep, WatchScope::checksInState(state),
                [&cat, state]() -> Result<ReadResult> {
                  auto checks = cat.checksInState(state);
                  Json out = Json::array();
                  for (const auto& c : checks.value)
                    out.push_back(checkJson(*c));
                  return ReadResult{checks.index, dump(out)};
                });
  }
  if (consume(rest, "node/")) {
    const std::string ep = "health.node";
    if (!requireMethod(req, w, ep, http::Method::kGet))
      return;
    std::string name(rest);
    return read(req, w, ep, WatchScope::node(name), [&cat, name]() -> Result<ReadResult> {
      auto checks = cat.nodeChecks(name);
      Json out = Json::array();
      for (const auto& c : checks.value)
        out.push_back(checkJson(*c));
      return ReadResult{checks.index, dump(out)};
    });
  }
  reply(w, "health.unknown", 404, fmt::format("no such endpoint: {}\n", req.path));
}

// ---------------------------------------------------------------------------------------------
// /v1/kv/

void Api::kv(http::ServerRequest& req, const Writer& w, std::string_view key_view) {
  registry::Catalog& cat = registry_.catalog();
  std::string key(key_view);
  for (std::string_view unsupported : {"acquire", "release"})
    if (req.hasQuery(unsupported))
      return reply(w, "kv", 400,
                   fmt::format("?{}: sessions and locks are not supported\n", unsupported));
  std::optional<uint64_t> cas;
  if (auto c = req.query("cas")) {
    auto v = parseUint(*c, "cas");
    if (!v)
      return replyError(w, "kv", v.error());
    cas = *v;
  }
  if (req.method == http::Method::kGet || req.method == http::Method::kHead) {
    if (req.hasQuery("keys")) {
      const std::string ep = "kv.keys";
      std::string sep(req.query("separator").value_or(""));
      return read(req, w, ep, WatchScope::kvPrefix(key), [&cat, key, sep]() -> Result<ReadResult> {
        auto keys = cat.kvKeys(key, sep);
        if (keys.value.empty())
          return ReadResult{keys.index, "", 404, "text/plain; charset=utf-8"};
        return ReadResult{keys.index, dump(Json(keys.value))};
      });
    }
    if (req.hasQuery("recurse")) {
      const std::string ep = "kv.recurse";
      return read(req, w, ep, WatchScope::kvPrefix(key), [&cat, key]() -> Result<ReadResult> {
        auto entries = cat.kvList(key);
        if (entries.value.empty())
          return ReadResult{entries.index, "", 404, "text/plain; charset=utf-8"};
        Json out = Json::array();
        for (const auto& e : entries.value)
          out.push_back(kvJson(*e));
        return ReadResult{entries.index, dump(out)};
      });
    }
    const std::string ep = "kv.get";
    bool raw = req.hasQuery("raw");
    return read(req, w, ep, WatchScope::kvKey(key), [&cat, key, raw]() -> Result<ReadResult> {
      auto e = cat.kvGet(key);
      if (!e.value)
        return ReadResult{e.index, "", 404, "text/plain; charset=utf-8"};
      if (raw)
        return ReadResult{e.index, e.value->value, 200, "application/octet-stream"};
      return ReadResult{e.index, dump(Json::array({kvJson(*e.value)}))};
    });
  }
  if (req.method == http::Method::kPut) {
    const std::string ep = "kv.put";
    if (key.empty())
      return reply(w, ep, 400, "Missing key name\n");
    if (req.body.size() > settings_.max_kv_value_bytes)
      return reply(w, ep, 413,
                   fmt::format("Value exceeds {} byte limit\n", settings_.max_kv_value_bytes));
    registry::KvPutRequest put;
    put.key = key;
    put.value = req.body;
    put.cas = cas;
    if (auto f = req.query("flags")) {
      auto v = parseUint(*f, "flags");
      if (!v)
        return replyError(w, ep, v.error());
      put.flags = *v;
    }
    return writeKv(w, ep, std::move(put));
  }
  if (req.method == http::Method::kDelete) {
    const std::string ep = "kv.delete";
    registry::KvDeleteRequest del;
    del.key = key;
    del.recurse = req.hasQuery("recurse");
    del.cas = cas;
    if (del.recurse && cas)
      return reply(w, ep, 400, "Conflicting flags: cas cannot be used with recurse\n");
    if (key.empty() && !del.recurse)
      return reply(w, ep, 400, "Missing key name\n");
    return writeKv(w, ep, std::move(del));
  }
  reply(w, "kv", 405, fmt::format("method {} not allowed\n", req.method_name));
}

// ---------------------------------------------------------------------------------------------
// /v1/status/

void Api::status(http::ServerRequest& req, const Writer& w, std::string_view rest) {
  // One server: it is the leader and the only peer.
  if (rest == "leader") {
    if (!requireMethod(req, w, "status.leader", http::Method::kGet))
      return;
    return reply(w, "status.leader", 200, dump(Json(settings_.advertise)), "application/json");
  }
  if (rest == "peers") {
    if (!requireMethod(req, w, "status.peers", http::Method::kGet))
      return;
    return reply(w, "status.peers", 200, dump(Json::array({settings_.advertise})),
                 "application/json");
  }
  reply(w, "status.unknown", 404, fmt::format("no such endpoint: {}\n", req.path));
}

} // namespace trellis::control
