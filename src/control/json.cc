#include "control/json.h"

#include <fmt/format.h>

namespace trellis::control {

using registry::Check;
using registry::CheckType;
using registry::Node;
using registry::Service;

namespace {

// Consul's decoder ignores case; its agent endpoints also accept snake_case.
bool keyMatches(std::string_view key, std::string_view want) {
  size_t j = 0;
  for (char c : key) {
    if (c == '_')
      continue;
    if (j >= want.size())
      return false;
    char a = (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c;
    char b = want[j];
    b = (b >= 'A' && b <= 'Z') ? char(b - 'A' + 'a') : b;
    if (a != b)
      return false;
    ++j;
  }
  return j == want.size();
}

const Json* field(const Json& obj, std::string_view name) {
  if (!obj.is_object())
    return nullptr;
  for (auto it = obj.begin(); it != obj.end(); ++it)
    if (keyMatches(it.key(), name) && !it.value().is_null())
      return &it.value();
  return nullptr;
}

std::string path(std::string_view prefix, std::string_view name) {
  return prefix.empty() ? std::string(name) : fmt::format("{}.{}", prefix, name);
}

Status getString(const Json& obj, std::string_view prefix, std::string_view name,
                 std::string& out) {
  const Json* v = field(obj, name);
  if (v == nullptr)
    return okStatus();
  if (!v->is_string())
    return makeError(ErrorCode::kInvalidArgument, "{}: expected a string",
                     path(prefix, name));
  out = v->get<std::string>();
  return okStatus();
}

template <typename Int>
Status getInt(const Json& obj, std::string_view prefix, std::string_view name, Int& out,
              int64_t lo, int64_t hi) {
  const Json* v = field(obj, name);
  if (v == nullptr)
    return okStatus();
  if (!v->is_number_integer())
    return makeError(ErrorCode::kInvalidArgument, "{}: expected an integer", path(prefix, name));
  int64_t n = v->is_number_unsigned() ? int64_t(std::min<uint64_t>(v->get<uint64_t>(), INT64_MAX))
                                      : v->get<int64_t>();
  if (n < lo || n > hi)
    return makeError(ErrorCode::kInvalidArgument, "{}: {} is out of range [{}, {}]",
                     path(prefix, name), n, lo, hi);
  out = static_cast<Int>(n);
  return okStatus();
}

Status getBool(const Json& obj, std::string_view prefix, std::string_view name, bool& out) {
  const Json* v = field(obj, name);
  if (v == nullptr)
    return okStatus();
  if (!v->is_boolean())
    return makeError(ErrorCode::kInvalidArgument, "{}: expected true or false",
                     path(prefix, name));
  out = v->get<bool>();
  return okStatus();
}

Status getStringList(const Json& obj, std::string_view prefix, std::string_view name,
                     std::vector<std::string>& out) {
  const Json* v = field(obj, name);
  if (v == nullptr)
    return okStatus();
  if (!v->is_array())
    return makeError(ErrorCode::kInvalidArgument, "{}: expected an array of strings",
                     path(prefix, name));
  out.clear();
  for (const auto& e : *v) {
    if (!e.is_string())
      return makeError(ErrorCode::kInvalidArgument, "{}: expected an array of strings",
                       path(prefix, name));
    out.push_back(e.get<std::string>());
  }
  return okStatus();
}

Status getStringMap(const Json& obj, std::string_view prefix, std::string_view name,
                    std::map<std::string, std::string>& out) {
  const Json* v = field(obj, name);
  if (v == nullptr)
    return okStatus();
  if (!v->is_object())
    return makeError(ErrorCode::kInvalidArgument, "{}: expected an object of strings",
                     path(prefix, name));
  out.clear();
  for (auto it = v->begin(); it != v->end(); ++it) {
    if (!it.value().is_string())
      return makeError(ErrorCode::kInvalidArgument, "{}.{}: expected a string",
                       path(prefix, name), it.key());
    out[it.key()] = it.value().get<std::string>();
  }
  return okStatus();
}

Status getDuration(const Json& obj, std::string_view prefix, std::string_view name,
                   Duration& out) {
  const Json* v = field(obj, name);
  if (v == nullptr)
    return okStatus();
  auto d = parseJsonDuration(*v, path(prefix, name));
  if (!d)
    return d.error();
  out = *d;
  return okStatus();
}

Status parseService(const Json& obj, std::string_view prefix, Service& s, bool catalog_form) {
  if (!obj.is_object())
    return makeError(ErrorCode::kInvalidArgument, "{}: expected an object",
                     prefix.empty() ? "body" : prefix);
  TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, "ID", s.id));
  TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, catalog_form ? "Service" : "Name", s.name));
  if (s.name.empty() && !catalog_form)
    TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, "Service", s.name));
  if (s.name.empty() && catalog_form)
    TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, "Name", s.name));
  TRELLIS_RETURN_IF_ERROR(getStringList(obj, prefix, "Tags", s.tags));
  TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, "Address", s.address));
  TRELLIS_RETURN_IF_ERROR(getInt(obj, prefix, "Port", s.port, 0, 65535));
  TRELLIS_RETURN_IF_ERROR(getStringMap(obj, prefix, "Meta", s.meta));
  TRELLIS_RETURN_IF_ERROR(getBool(obj, prefix, "EnableTagOverride", s.enable_tag_override));
  if (const Json* w = field(obj, "Weights")) {
    std::string wp = path(prefix, "Weights");
    if (!w->is_object())
      return makeError(ErrorCode::kInvalidArgument, "{}: expected an object", wp);
    TRELLIS_RETURN_IF_ERROR(getInt(*w, wp, "Passing", s.weights.passing, 1, 65535));
    TRELLIS_RETURN_IF_ERROR(getInt(*w, wp, "Warning", s.weights.warning, 0, 65535));
  }
  if (s.name.empty())
    return makeError(ErrorCode::kInvalidArgument, "{}: missing",
                     path(prefix, catalog_form ? "Service" : "Name"));
  return okStatus();
}

// The fields that say how a check runs, from `obj` (the check itself in the agent form, its
// "Definition" in the catalog form).
Status parseDefinition(const Json& obj, std::string_view prefix, Check& c) {
  auto& d = c.definition;
  std::string ttl_text;
  TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, "HTTP", d.http));
  TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, "TCP", d.tcp));
  TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, "Method", d.method));
  TRELLIS_RETURN_IF_ERROR(getDuration(obj, prefix, "TTL", d.ttl));
  TRELLIS_RETURN_IF_ERROR(getDuration(obj, prefix, "Interval", d.interval));
  TRELLIS_RETURN_IF_ERROR(getDuration(obj, prefix, "Timeout", d.timeout));
  TRELLIS_RETURN_IF_ERROR(getDuration(obj, prefix, "DeregisterCriticalServiceAfter",
                                      d.deregister_critical_service_after));
  TRELLIS_RETURN_IF_ERROR(
      getInt(obj, prefix, "SuccessBeforePassing", d.success_before_passing, 0, 1000000));
  TRELLIS_RETURN_IF_ERROR(
      getInt(obj, prefix, "FailuresBeforeWarning", d.failures_before_warning, 0, 1000000));
  TRELLIS_RETURN_IF_ERROR(
      getInt(obj, prefix, "FailuresBeforeCritical", d.failures_before_critical, 0, 1000000));
  if (const Json* h = field(obj, "Header")) {
    std::string hp = path(prefix, "Header");
    if (!h->is_object())
      return makeError(ErrorCode::kInvalidArgument, "{}: expected an object of string arrays",
                       hp);
    for (auto it = h->begin(); it != h->end(); ++it) {
      std::vector<std::string> values;
      if (it.value().is_string()) {
        values.push_back(it.value().get<std::string>());
      } else if (it.value().is_array()) {
        for (const auto& e : it.value()) {
          if (!e.is_string())
            return makeError(ErrorCode::kInvalidArgument, "{}.{}: expected strings", hp,
                             it.key());
          values.push_back(e.get<std::string>());
        }
      } else {
        return makeError(ErrorCode::kInvalidArgument, "{}.{}: expected an array of strings", hp,
                         it.key());
      }
      d.header[it.key()] = std::move(values);
    }
  }
  for (std::string_view unsupported : {"Args", "Script", "DockerContainerID", "GRPC", "H2PING",
                                       "AliasService", "AliasNode", "OSService", "UDP"}) {
    if (field(obj, unsupported) != nullptr)
      return makeError(ErrorCode::kInvalidArgument, "{}: {} checks are not supported",
                       path(prefix, unsupported), unsupported);
  }
  int kinds = int(!d.http.empty()) + int(!d.tcp.empty()) + int(d.ttl.count() > 0);
  if (kinds > 1)
    return makeError(ErrorCode::kInvalidArgument, "{}: only one of HTTP, TCP and TTL may be set",
                     prefix.empty() ? "check" : prefix);
  if (!d.http.empty())
    d.type = CheckType::kHttp;
  else if (!d.tcp.empty())
    d.type = CheckType::kTcp;
  else if (d.ttl.count() > 0)
    d.type = CheckType::kTtl;
  if ((d.type == CheckType::kHttp || d.type == CheckType::kTcp) && d.interval.count() <= 0)
    return makeError(ErrorCode::kInvalidArgument, "{}: missing (required for HTTP and TCP checks)",
                     path(prefix, "Interval"));
  if (d.type == CheckType::kHttp && d.method.empty())
    d.method = "GET";
  return okStatus();
}

} // namespace

Result<Json> parseBody(std::string_view body) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Parse again with exceptions for the position of the error (bodies are bounded).
    try {
      Json again = Json::parse(body);
      (void)again;
    } catch (const Json::parse_error& e) {
      return makeError(ErrorCode::kInvalidArgument, "Request decode failed: {}", e.what());
    }
    return makeError(ErrorCode::kInvalidArgument, "Request decode failed: invalid JSON");
  }
  return j;
}

Result<Duration> parseJsonDuration(const Json& v, std::string_view field_name) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() ? v.get<uint64_t>() > uint64_t(INT64_MAX) : v.get<int64_t>() < 0)
      return makeError(ErrorCode::kInvalidArgument, "{}: duration out of range", field_name);
    return Duration(v.get<int64_t>());
  }
  if (!v.is_string())
    return makeError(ErrorCode::kInvalidArgument, "{}: expected a duration like \"10s\"",
                     field_name);
  std::string text = v.get<std::string>();
  if (text.empty())
    return Duration(0);
  auto d = parseDuration(text);
  if (!d)
    return d.error().withContext(field_name);
  return *d;
}

Result<Check> parseCheck(const Json& obj, std::string_view prefix) {
  if (!obj.is_object())
    return makeError(ErrorCode::kInvalidArgument, "{}: expected an object",
                     prefix.empty() ? "body" : prefix);
  Check c;
  TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, "CheckID", c.id));
  if (c.id.empty())
    TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, "ID", c.id));
  TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, "Name", c.name));
  TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, "Notes", c.notes));
  TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, "ServiceID", c.service_id));
  TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, "Node", c.node));
  TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, "Output", c.output));
  std::string status;
  TRELLIS_RETURN_IF_ERROR(getString(obj, prefix, "Status", status));
  if (!status.empty()) {
    auto st = registry::parseCheckStatus(status);
    if (!st)
      return makeError(ErrorCode::kInvalidArgument,
                       "{}: \"{}\" is not one of passing, warning, critical",
                       path(prefix, "Status"), status);
    c.status = *st;
  }
  if (const Json* def = field(obj, "Definition")) {
    if (!def->is_object())
      return makeError(ErrorCode::kInvalidArgument, "{}: expected an object",
                       path(prefix, "Definition"));
    TRELLIS_RETURN_IF_ERROR(parseDefinition(*def, path(prefix, "Definition"), c));
  } else {
    TRELLIS_RETURN_IF_ERROR(parseDefinition(obj, prefix, c));
  }
  return c;
}

Result<registry::AgentServiceRequest> parseAgentService(const Json& body,
                                                        const std::string& node) {
  registry::AgentServiceRequest req;
  req.node = node;
  TRELLIS_RETURN_IF_ERROR(parseService(body, "", req.service, false));
  if (const Json* c = field(body, "Check")) {
    auto check = parseCheck(*c, "Check");
    if (!check)
      return check.error();
    req.checks.push_back(std::move(*check));
  }
  if (const Json* cs = field(body, "Checks")) {
    if (!cs->is_array())
      return makeError(ErrorCode::kInvalidArgument, "Checks: expected an array");
    for (size_t i = 0; i < cs->size(); ++i) {
      auto check = parseCheck((*cs)[i], fmt::format("Checks[{}]", i));
      if (!check)
        return check.error();
      req.checks.push_back(std::move(*check));
    }
  }
  for (auto& c : req.checks) {
    if (c.definition.type == CheckType::kNone)
      return makeError(ErrorCode::kInvalidArgument,
                       "Check: one of HTTP (with Interval), TCP (with Interval) or TTL is required");
    c.service_id.clear(); // the catalog binds embedded checks to this service
  }
  return req;
}

Result<registry::AgentCheckRequest> parseAgentCheck(const Json& body, const std::string& node) {
  auto c = parseCheck(body, "");
  if (!c)
    return c.error();
  if (c->name.empty())
    return makeError(ErrorCode::kInvalidArgument, "Name: missing");
  if (c->definition.type == CheckType::kNone)
    return makeError(ErrorCode::kInvalidArgument,
                     "one of HTTP (with Interval), TCP (with Interval) or TTL is required");
  c->node = node;
  return registry::AgentCheckRequest{node, std::move(*c)};
}

Result<registry::RegisterRequest> parseCatalogRegister(const Json& body) {
  if (!body.is_object())
    return makeError(ErrorCode::kInvalidArgument, "body: expected an object");
  registry::RegisterRequest req;
  TRELLIS_RETURN_IF_ERROR(getString(body, "", "Node", req.node.name));
  TRELLIS_RETURN_IF_ERROR(getString(body, "", "ID", req.node.id));
  TRELLIS_RETURN_IF_ERROR(getString(body, "", "Address", req.node.address));
  TRELLIS_RETURN_IF_ERROR(getStringMap(body, "", "TaggedAddresses", req.node.tagged_addresses));
  TRELLIS_RETURN_IF_ERROR(getStringMap(body, "", "NodeMeta", req.node.meta));
  TRELLIS_RETURN_IF_ERROR(getBool(body, "", "SkipNodeUpdate", req.skip_node_update));
  if (req.node.name.empty())
    return makeError(ErrorCode::kInvalidArgument, "Node: missing");
  if (req.node.address.empty() && !req.skip_node_update)
    return makeError(ErrorCode::kInvalidArgument, "Address: missing");
  if (const Json* s = field(body, "Service")) {
    Service svc;
    TRELLIS_RETURN_IF_ERROR(parseService(*s, "Service", svc, true));
    svc.node = req.node.name;
    req.service = std::move(svc);
  }
  auto addCheck = [&](const Json& j, std::string prefix) -> Status {
    auto c = parseCheck(j, prefix);
    if (!c)
      return c.error();
    if (c->node.empty())
      c->node = req.node.name;
    req.checks.push_back(std::move(*c));
    return okStatus();
  };
  if (const Json* c = field(body, "Check"))
    TRELLIS_RETURN_IF_ERROR(addCheck(*c, "Check"));
  if (const Json* cs = field(body, "Checks")) {
    if (!cs->is_array())
      return makeError(ErrorCode::kInvalidArgument, "Checks: expected an array");
    for (size_t i = 0; i < cs->size(); ++i)
      TRELLIS_RETURN_IF_ERROR(addCheck((*cs)[i], fmt::format("Checks[{}]", i)));
  }
  return req;
}

Result<registry::DeregisterRequest> parseCatalogDeregister(const Json& body) {
  if (!body.is_object())
    return makeError(ErrorCode::kInvalidArgument, "body: expected an object");
  registry::DeregisterRequest req;
  TRELLIS_RETURN_IF_ERROR(getString(body, "", "Node", req.node));
  TRELLIS_RETURN_IF_ERROR(getString(body, "", "ServiceID", req.service_id));
  TRELLIS_RETURN_IF_ERROR(getString(body, "", "CheckID", req.check_id));
  if (req.node.empty())
    return makeError(ErrorCode::kInvalidArgument, "Node: missing");
  if (!req.service_id.empty() && !req.check_id.empty())
    return makeError(ErrorCode::kInvalidArgument, "ServiceID and CheckID: give at most one");
  return req;
}

// --- Encoders ---

namespace {
Json stringMap(const std::map<std::string, std::string>& m) {
  Json j = Json::object();
  for (const auto& [k, v] : m)
    j[k] = v;
  return j;
}
Json weightsJson(const registry::Weights& w) {
  return Json{{"Passing", w.passing}, {"Warning", w.warning}};
}
} // namespace

Json nodeJson(const Node& n) {
  return Json{{"ID", n.id},
              {"Node", n.name},
              {"Address", n.address},
              {"Datacenter", "dc1"},
              {"TaggedAddresses", stringMap(n.tagged_addresses)},
              {"Meta", stringMap(n.meta)},
              {"CreateIndex", n.create_index},
              {"ModifyIndex", n.modify_index}};
}

Json agentServiceJson(const Service& s) {
  return Json{{"ID", s.id},
              {"Service", s.name},
              {"Tags", s.tags},
              {"Meta", stringMap(s.meta)},
              {"Port", s.port},
              {"Address", s.address},
              {"Weights", weightsJson(s.weights)},
              {"EnableTagOverride", s.enable_tag_override},
              {"Datacenter", "dc1"},
              {"CreateIndex", s.create_index},
              {"ModifyIndex", s.modify_index}};
}

Json catalogServiceJson(const Node& n, const Service& s) {
  return Json{{"ID", n.id},
              {"Node", n.name},
              {"Address", n.address},
              {"Datacenter", "dc1"},
              {"TaggedAddresses", stringMap(n.tagged_addresses)},
              {"NodeMeta", stringMap(n.meta)},
              {"ServiceID", s.id},
              {"ServiceName", s.name},
              {"ServiceTags", s.tags},
              {"ServiceAddress", s.address},
              {"ServiceMeta", stringMap(s.meta)},
              {"ServicePort", s.port},
              {"ServiceWeights", weightsJson(s.weights)},
              {"ServiceEnableTagOverride", s.enable_tag_override},
              {"CreateIndex", s.create_index},
              {"ModifyIndex", s.modify_index}};
}

Json checkJson(const Check& c) {
  const auto& d = c.definition;
  Json def = Json::object();
  if (d.type == CheckType::kHttp) {
    def["HTTP"] = d.http;
    def["Method"] = d.method;
    Json h = Json::object();
    for (const auto& [k, v] : d.header)
      h[k] = v;
    def["Header"] = h;
  }
  if (d.type == CheckType::kTcp)
    def["TCP"] = d.tcp;
  if (d.type == CheckType::kTtl)
    def["TTL"] = formatDuration(d.ttl);
  if (d.interval.count() > 0)
    def["Interval"] = formatDuration(d.interval);
  if (d.timeout.count() > 0)
    def["Timeout"] = formatDuration(d.timeout);
  if (d.deregister_critical_service_after.count() > 0)
    def["DeregisterCriticalServiceAfter"] = formatDuration(d.deregister_critical_service_after);
  return Json{{"Node", c.node},
              {"CheckID", c.id},
              {"Name", c.name},
              {"Status", registry::checkStatusName(c.status)},
              {"Notes", c.notes},
              {"Output", c.output},
              {"ServiceID", c.service_id},
              {"ServiceName", c.service_name},
              {"ServiceTags", Json::array()},
              {"Type", d.type == CheckType::kNone ? "" : registry::checkTypeName(d.type)},
              {"Definition", def},
              {"CreateIndex", c.create_index},
              {"ModifyIndex", c.modify_index}};
}

Json healthEntryJson(const registry::ServiceEntry& e) {
  Json checks = Json::array();
  for (const auto& c : e.checks)
    checks.push_back(checkJson(*c));
  return Json{{"Node", nodeJson(*e.node)},
              {"Service", agentServiceJson(*e.service)},
              {"Checks", std::move(checks)}};
}

Json kvJson(const registry::KvEntry& e) {
  Json j{{"LockIndex", e.lock_index},
         {"Key", e.key},
         {"Flags", e.flags},
         {"Value", e.value.empty() ? Json(nullptr) : Json(base64Encode(e.value))},
         {"CreateIndex", e.create_index},
         {"ModifyIndex", e.modify_index}};
  if (!e.session.empty())
    j["Session"] = e.session;
  return j;
}

namespace {
constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64Encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

Result<std::string> base64Decode(std::string_view in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z')
      return c - 'A';
    if (c >= 'a' && c <= 'z')
      return c - 'a' + 26;
    if (c >= '0' && c <= '9')
      return c - '0' + 52;
    if (c == '+')
      return 62;
    if (c == '/')
      return 63;
    return -1;
  };
  while (!in.empty() && in.back() == '=')
    in.remove_suffix(1);
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = val(c);
    if (v < 0)
      return makeError(ErrorCode::kInvalidArgument, "invalid base64 character");
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  return out;
}

} // namespace trellis::control
