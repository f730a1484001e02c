#include "registry/store/codec.h"

#include <nlohmann/json.hpp>

namespace trellis::registry::codec {

using nlohmann::json;

namespace {

// A small JSON writer for the hot write path (every stored object is encoded at commit).
// Strings are escaped per RFC 8259; bytes that are not valid UTF-8 (check outputs may carry
// anything) become U+FFFD, so the result always parses back.
class JsonWriter {
public:
  JsonWriter() { out_.push_back('{'); }

  void key(std::string_view k) {
    if (out_.size() > 1)
      out_.push_back(',');
    string(k);
    out_.push_back(':');
  }
  void raw(std::string_view json) { out_.append(json); }
  void field(std::string_view k, std::string_view v) {
    key(k);
    string(v);
  }
  void field(std::string_view k, const std::string& v) { field(k, std::string_view(v)); }
  void field(std::string_view k, const char* v) { field(k, std::string_view(v)); }
  void field(std::string_view k, uint64_t v) {
    key(k);
    out_.append(std::to_string(v));
  }
  void field(std::string_view k, int64_t v) {
    key(k);
    out_.append(std::to_string(v));
  }
  void field(std::string_view k, bool v) {
    key(k);
    out_.append(v ? "true" : "false");
  }
  void field(std::string_view k, const std::vector<std::string>& v) {
    key(k);
    out_.push_back('[');
    for (size_t i = 0; i < v.size(); ++i) {
      if (i)
        out_.push_back(',');
      string(v[i]);
    }
    out_.push_back(']');
  }
  void field(std::string_view k, const std::map<std::string, std::string>& m) {
    key(k);
    out_.push_back('{');
    bool first = true;
    for (const auto& [mk, mv] : m) {
      if (!first)
        out_.push_back(',');
      first = false;
      string(mk);
      out_.push_back(':');
      string(mv);
    }
    out_.push_back('}');
  }
  void field(std::string_view k, const std::map<std::string, std::vector<std::string>>& m) {
    key(k);
    out_.push_back('{');
    bool first = true;
    for (const auto& [mk, mv] : m) {
      if (!first)
        out_.push_back(',');
      first = false;
      string(mk);
      out_.push_back(':');
      out_.push_back('[');
      for (size_t i = 0; i < mv.size(); ++i) {
        if (i)
          out_.push_back(',');
        string(mv[i]);
      }
      out_.push_back(']');
    }
    out_.push_back('}');
  }
  std::string finish() {
    out_.push_back('}');
    return std::move(out_);
  }

private:
  // Length of the valid UTF-8 sequence at s[i] (RFC 3629), or 0 if it is not one.
  static size_t utf8Length(std::string_view s, size_t i) {
    auto at = [&](size_t j) { return static_cast<unsigned char>(s[j]); };
    const unsigned char c = at(i);
    auto cont = [&](size_t j, unsigned char lo, unsigned char hi) {
      return j < s.size() && at(j) >= lo && at(j) <= hi;
    };
    if (c >= 0xc2 && c <= 0xdf)
      return cont(i + 1, 0x80, 0xbf) ? 2 : 0;
    if (c == 0xe0)
      return cont(i + 1, 0xa0, 0xbf) && cont(i + 2, 0x80, 0xbf) ? 3 : 0;
    if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef)
      return cont(i + 1, 0x80, 0xbf) && cont(i + 2, 0x80, 0xbf) ? 3 : 0;
    if (c == 0xed)
      return cont(i + 1, 0x80, 0x9f) && cont(i + 2, 0x80, 0xbf) ? 3 : 0;
    if (c == 0xf0)
      return cont(i + 1, 0x90, 0xbf) && cont(i + 2, 0x80, 0xbf) && cont(i + 3, 0x80, 0xbf) ? 4 : 0;
    if (c >= 0xf1 && c <= 0xf3)
      return cont(i + 1, 0x80, 0xbf) && cont(i + 2, 0x80, 0xbf) && cont(i + 3, 0x80, 0xbf) ? 4 : 0;
    if (c == 0xf4)
      return cont(i + 1, 0x80, 0x8f) && cont(i + 2, 0x80, 0xbf) && cont(i + 3, 0x80, 0xbf) ? 4 : 0;
    return 0;
  }

  void string(std::string_view s) {
    static const char* kHex = "0123456789abcdef";
    out_.push_back('"');
    for (size_t i = 0; i < s.size();) {
      const unsigned char c = static_cast<unsigned char>(s[i]);
      if (c >= 0x80) {
        size_t n = utf8Length(s, i);
        if (n == 0) {
          out_.append("\\ufffd");
          ++i;
        } else {
          out_.append(s.substr(i, n));
          i += n;
        }
        continue;
      }
      switch (c) {
      case '"':
        out_.append("\\\"");
        break;
      case '\\':
        out_.append("\\\\");
        break;
      case '\n':
        out_.append("\\n");
        break;
      case '\r':
        out_.append("\\r");
        break;
      case '\t':
        out_.append("\\t");
        break;
      default:
        if (c < 0x20) {
          out_.append("\\u00");
          out_.push_back(kHex[c >> 4]);
          out_.push_back(kHex[c & 0xf]);
        } else {
          out_.push_back(static_cast<char>(c));
        }
      }
      ++i;
    }
    out_.push_back('"');
  }

  std::string out_;
};

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
  JsonWriter w;
  w.field("Node", n.name);
  if (!n.id.empty())
    w.field("ID", n.id);
  w.field("Address", n.address);
  if (!n.tagged_addresses.empty())
    w.field("TaggedAddresses", n.tagged_addresses);
  if (!n.meta.empty())
    w.field("Meta", n.meta);
  w.field("CreateIndex", n.create_index);
  w.field("ModifyIndex", n.modify_index);
  return w.finish();
}

std::string encodeService(const Service& s) {
  JsonWriter w;
  w.field("Node", s.node);
  w.field("ID", s.id);
  w.field("Service", s.name);
  if (!s.tags.empty())
    w.field("Tags", s.tags);
  if (!s.address.empty())
    w.field("Address", s.address);
  w.field("Port", uint64_t{s.port});
  if (!s.meta.empty())
    w.field("Meta", s.meta);
  w.key("Weights");
  JsonWriter weights;
  weights.field("Passing", int64_t{s.weights.passing});
  weights.field("Warning", int64_t{s.weights.warning});
  w.raw(weights.finish());
  if (s.enable_tag_override)
    w.field("EnableTagOverride", true);
  w.field("CreateIndex", s.create_index);
  w.field("ModifyIndex", s.modify_index);
  return w.finish();
}

std::string encodeCheck(const Check& c) {
  JsonWriter w;
  w.field("Node", c.node);
  w.field("CheckID", c.id);
  w.field("Name", c.name);
  w.field("Status", checkStatusName(c.status));
  if (!c.output.empty())
    w.field("Output", c.output);
  if (!c.notes.empty())
    w.field("Notes", c.notes);
  if (!c.service_id.empty()) {
    w.field("ServiceID", c.service_id);
    w.field("ServiceName", c.service_name);
  }
  const CheckDefinition& d = c.definition;
  if (d.type != CheckType::kNone) {
    JsonWriter def;
    def.field("Type", checkTypeName(d.type));
    if (d.interval.count())
      def.field("Interval", int64_t{d.interval.count()});
    if (d.timeout.count())
      def.field("Timeout", int64_t{d.timeout.count()});
    if (!d.http.empty())
      def.field("HTTP", d.http);
    if (!d.method.empty())
      def.field("Method", d.method);
    if (!d.header.empty())
      def.field("Header", d.header);
    if (!d.tcp.empty())
      def.field("TCP", d.tcp);
    if (d.ttl.count())
      def.field("TTL", int64_t{d.ttl.count()});
    if (d.success_before_passing)
      def.field("SuccessBeforePassing", uint64_t{d.success_before_passing});
    if (d.failures_before_warning)
      def.field("FailuresBeforeWarning", uint64_t{d.failures_before_warning});
    if (d.failures_before_critical)
      def.field("FailuresBeforeCritical", uint64_t{d.failures_before_critical});
    w.key("Definition");
    w.raw(def.finish());
  }
  if (d.deregister_critical_service_after.count())
    w.field("DeregisterCriticalServiceAfter", int64_t{d.deregister_critical_service_after.count()});
  w.field("CreateIndex", c.create_index);
  w.field("ModifyIndex", c.modify_index);
  return w.finish();
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
