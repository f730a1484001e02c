#include "registry/store/codec.h"

#include <nlohmann/json.hpp>

namespace trellis::registry::codec {

using nlohmann::json;

namespace {

json durationJson(Duration d) { return static_cast<int64_t>(d.count()); }

std::string dump(const json& j) {
  // Replace invalid UTF-8 instead of throwing: names are validated, but outputs and KV-like
  // free text may carry arbitrary bytes.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Reads optional fields with type checks; the first problem is kept as the error.
class Reader {
public:
  explicit Reader(const json& j) : j_(j) {}

  void str(const char* field, std::string& out) {
    auto it = j_.find(field);
    if (it == j_.end() || it->is_null())
      return;
    if (!it->is_string())
      return fail(field, "a string");
    out = it->get<std::string>();
  }
  template <typename T> void uint(const char* field, T& out) {
    auto it = j_.find(field);
    if (it == j_.end() || it->is_null())
      return;
    if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<int64_t>() >= 0))
      return fail(field, "a non-negative integer");
    uint64_t v = it->get<uint64_t>();
    if (v > std::numeric_limits<T>::max())
      return fail(field, "in range");
    out = static_cast<T>(v);
  }
  void int32(const char* field, int32_t& out) {
    auto it = j_.find(field);
    if (it == j_.end() || it->is_null())
      return;
    if (!it->is_number_integer())
      return fail(field, "an integer");
    int64_t v = it->get<int64_t>();
    if (v < INT32_MIN || v > INT32_MAX)
      return fail(field, "in range");
    out = static_cast<int32_t>(v);
  }
  void boolean(const char* field, bool& out) {
    auto it = j_.find(field);
    if (it == j_.end() || it->is_null())
      return;
    if (!it->is_boolean())
      return fail(field, "a boolean");
    out = it->get<bool>();
  }
  void duration(const char* field, Duration& out) {
    auto it = j_.find(field);
    if (it == j_.end() || it->is_null())
      return;
    if (!it->is_number_integer())
      return fail(field, "an integer (nanoseconds)");
    out = Duration(it->get<int64_t>());
  }
  void strMap(const char* field, std::map<std::string, std::string>& out) {
    auto it = j_.find(field);
    if (it == j_.end() || it->is_null())
      return;
    if (!it->is_object())
      return fail(field, "an object");
    for (const auto& [k, v] : it->items()) {
      if (!v.is_string())
        return fail(field, "an object of strings");
      out[k] = v.get<std::string>();
    }
  }
  void strList(const char* field, std::vector<std::string>& out) {
    auto it = j_.find(field);
    if (it == j_.end() || it->is_null())
      return;
    if (!it->is_array())
      return fail(field, "an array");
    for (const auto& v : *it) {
      if (!v.is_string())
        return fail(field, "an array of strings");
      out.push_back(v.get<std::string>());
    }
  }
  void headers(const char* field, std::map<std::string, std::vector<std::string>>& out) {
    auto it = j_.find(field);
    if (it == j_.end() || it->is_null())
      return;
    if (!it->is_object())
      return fail(field, "an object");
    for (const auto& [k, v] : it->items()) {
      if (!v.is_array())
        return fail(field, "an object of string arrays");
      auto& vals = out[k];
      for (const auto& s : v) {
        if (!s.is_string())
          return fail(field, "an object of string arrays");
        vals.push_back(s.get<std::string>());
      }
    }
  }
  const json* object(const char* field) {
    auto it = j_.find(field);
    if (it == j_.end() || it->is_null())
      return nullptr;
    if (!it->is_object()) {
      fail(field, "an object");
      return nullptr;
    }
    return &*it;
  }
  void fail(const char* field, const char* what) {
    if (error_.empty())
      error_ = fmt::format("field {} is not {}", field, what);
  }
  void merge(const Reader& other) {
    if (error_.empty())
      error_ = other.error_;
  }
  const std::string& error() const { return error_; }

private:
  const json& j_;
  std::string error_;
};

Result<json> parse(std::string_view text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded())
    return makeError(ErrorCode::kIo, "not valid JSON");
  if (!j.is_object())
    return makeError(ErrorCode::kIo, "not a JSON object");
  return j;
}

} // namespace

std::string encodeNode(const Node& n) {
  json j;
  j["Node"] = n.name;
  if (!n.id.empty())
    j["ID"] = n.id;
  j["Address"] = n.address;
  if (!n.tagged_addresses.empty())
    j["TaggedAddresses"] = n.tagged_addresses;
  if (!n.meta.empty())
    j["Meta"] = n.meta;
  j["CreateIndex"] = n.create_index;
  j["ModifyIndex"] = n.modify_index;
  return dump(j);
}

std::string encodeService(const Service& s) {
  json j;
  j["Node"] = s.node;
  j["ID"] = s.id;
  j["Service"] = s.name;
  if (!s.tags.empty())
    j["Tags"] = s.tags;
  if (!s.address.empty())
    j["Address"] = s.address;
  j["Port"] = s.port;
  if (!s.meta.empty())
    j["Meta"] = s.meta;
  j["Weights"] = {{"Passing", s.weights.passing}, {"Warning", s.weights.warning}};
  if (s.enable_tag_override)
    j["EnableTagOverride"] = true;
  j["CreateIndex"] = s.create_index;
  j["ModifyIndex"] = s.modify_index;
  return dump(j);
}

std::string encodeCheck(const Check& c) {
  json j;
  j["Node"] = c.node;
  j["CheckID"] = c.id;
  j["Name"] = c.name;
  j["Status"] = std::string(checkStatusName(c.status));
  if (!c.output.empty())
    j["Output"] = c.output;
  if (!c.notes.empty())
    j["Notes"] = c.notes;
  if (!c.service_id.empty()) {
    j["ServiceID"] = c.service_id;
    j["ServiceName"] = c.service_name;
  }
  const CheckDefinition& d = c.definition;
  if (d.type != CheckType::kNone) {
    json def;
    def["Type"] = std::string(checkTypeName(d.type));
    if (d.interval.count())
      def["Interval"] = durationJson(d.interval);
    if (d.timeout.count())
      def["Timeout"] = durationJson(d.timeout);
    if (!d.http.empty())
      def["HTTP"] = d.http;
    if (!d.method.empty())
      def["Method"] = d.method;
    if (!d.header.empty())
      def["Header"] = d.header;
    if (!d.tcp.empty())
      def["TCP"] = d.tcp;
    if (d.ttl.count())
      def["TTL"] = durationJson(d.ttl);
    if (d.success_before_passing)
      def["SuccessBeforePassing"] = d.success_before_passing;
    if (d.failures_before_warning)
      def["FailuresBeforeWarning"] = d.failures_before_warning;
    if (d.failures_before_critical)
      def["FailuresBeforeCritical"] = d.failures_before_critical;
    j["Definition"] = std::move(def);
  }
  if (d.deregister_critical_service_after.count())
    j["DeregisterCriticalServiceAfter"] = durationJson(d.deregister_critical_service_after);
  j["CreateIndex"] = c.create_index;
  j["ModifyIndex"] = c.modify_index;
  return dump(j);
}

Result<NodePtr> decodeNode(std::string_view text) {
  auto j = parse(text);
  if (!j.ok())
    return j.error();
  auto n = std::make_shared<Node>();
  Reader r(*j);
  r.str("Node", n->name);
  r.str("ID", n->id);
  r.str("Address", n->address);
  r.strMap("TaggedAddresses", n->tagged_addresses);
  r.strMap("Meta", n->meta);
  r.uint("CreateIndex", n->create_index);
  r.uint("ModifyIndex", n->modify_index);
  if (!r.error().empty())
    return makeError(ErrorCode::kIo, "{}", r.error());
  if (n->name.empty())
    return makeError(ErrorCode::kIo, "field Node is missing");
  return NodePtr(std::move(n));
}

Result<ServicePtr> decodeService(std::string_view text) {
  auto j = parse(text);
  if (!j.ok())
    return j.error();
  auto s = std::make_shared<Service>();
  Reader r(*j);
  r.str("Node", s->node);
  r.str("ID", s->id);
  r.str("Service", s->name);
  r.strList("Tags", s->tags);
  r.str("Address", s->address);
  r.uint("Port", s->port);
  r.strMap("Meta", s->meta);
  if (const json* w = r.object("Weights")) {
    Reader wr(*w);
    wr.int32("Passing", s->weights.passing);
    wr.int32("Warning", s->weights.warning);
    r.merge(wr);
  }
  r.boolean("EnableTagOverride", s->enable_tag_override);
  r.uint("CreateIndex", s->create_index);
  r.uint("ModifyIndex", s->modify_index);
  if (!r.error().empty())
    return makeError(ErrorCode::kIo, "{}", r.error());
  if (s->node.empty() || s->id.empty() || s->name.empty())
    return makeError(ErrorCode::kIo, "field Node, ID or Service is missing");
  return ServicePtr(std::move(s));
}

Result<CheckPtr> decodeCheck(std::string_view text) {
  auto j = parse(text);
  if (!j.ok())
    return j.error();
  auto c = std::make_shared<Check>();
  Reader r(*j);
  r.str("Node", c->node);
  r.str("CheckID", c->id);
  r.str("Name", c->name);
  std::string status;
  r.str("Status", status);
  r.str("Output", c->output);
  r.str("Notes", c->notes);
  r.str("ServiceID", c->service_id);
  r.str("ServiceName", c->service_name);
  r.duration("DeregisterCriticalServiceAfter", c->definition.deregister_critical_service_after);
  r.uint("CreateIndex", c->create_index);
  r.uint("ModifyIndex", c->modify_index);
  std::string type = "none";
  if (const json* def = r.object("Definition")) {
    CheckDefinition& d = c->definition;
    Reader dr(*def);
    dr.str("Type", type);
    dr.duration("Interval", d.interval);
    dr.duration("Timeout", d.timeout);
    dr.str("HTTP", d.http);
    dr.str("Method", d.method);
    dr.headers("Header", d.header);
    dr.str("TCP", d.tcp);
    dr.duration("TTL", d.ttl);
    dr.uint("SuccessBeforePassing", d.success_before_passing);
    dr.uint("FailuresBeforeWarning", d.failures_before_warning);
    dr.uint("FailuresBeforeCritical", d.failures_before_critical);
    r.merge(dr);
  }
  if (!r.error().empty())
    return makeError(ErrorCode::kIo, "{}", r.error());
  if (c->node.empty() || c->id.empty())
    return makeError(ErrorCode::kIo, "field Node or CheckID is missing");
  auto st = parseCheckStatus(status);
  if (!st.ok())
    return makeError(ErrorCode::kIo, "field Status: {}", st.error().message());
  c->status = *st;
  if (type == "none")
    c->definition.type = CheckType::kNone;
  else if (type == "http")
    c->definition.type = CheckType::kHttp;
  else if (type == "tcp")
    c->definition.type = CheckType::kTcp;
  else if (type == "ttl")
    c->definition.type = CheckType::kTtl;
  else
    return makeError(ErrorCode::kIo, "field Definition.Type \"{}\" is unknown", type);
  return CheckPtr(std::move(c));
}

} // namespace trellis::registry::codec
