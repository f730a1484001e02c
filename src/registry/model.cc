#include "registry/model.h"

#include <cctype>

namespace trellis::registry {

std::string_view checkStatusName(CheckStatus s) {
  switch (s) {
  case CheckStatus::kPassing:
    return "passing";
  case CheckStatus::kWarning:
    return "warning";
  case CheckStatus::kCritical:
    return "critical";
  }
  return "critical";
}

Result<CheckStatus> parseCheckStatus(std::string_view text) {
  if (text == "passing")
    return CheckStatus::kPassing;
  if (text == "warning")
    return CheckStatus::kWarning;
  if (text == "critical")
    return CheckStatus::kCritical;
  return makeError(ErrorCode::kInvalidArgument,
                   "invalid check status \"{}\" (use passing, warning or critical)", text);
}

std::string_view checkTypeName(CheckType t) {
  switch (t) {
  case CheckType::kNone:
    return "none";
  case CheckType::kHttp:
    return "http";
  case CheckType::kTcp:
    return "tcp";
  case CheckType::kTtl:
    return "ttl";
  }
  return "none";
}

bool sameContent(const Node& a, const Node& b) {
  return a.name == b.name && a.id == b.id && a.address == b.address &&
         a.tagged_addresses == b.tagged_addresses && a.meta == b.meta;
}

bool sameContent(const Service& a, const Service& b) {
  return a.node == b.node && a.id == b.id && a.name == b.name && a.tags == b.tags &&
         a.address == b.address && a.port == b.port && a.meta == b.meta && a.weights == b.weights &&
         a.enable_tag_override == b.enable_tag_override;
}

bool sameContent(const Check& a, const Check& b) {
  return a.node == b.node && a.id == b.id && a.name == b.name && a.status == b.status &&
         a.output == b.output && a.notes == b.notes && a.service_id == b.service_id &&
         a.service_name == b.service_name && a.definition == b.definition;
}

std::string foldName(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

namespace {

bool hasControlChar(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f)
      return true;
  return false;
}

// Names and IDs appear in URL paths (/v1/catalog/node/<name>) and DNS labels, so they are
// non-empty, bounded, and free of control characters and '/'.
Status checkIdentifier(std::string_view field, std::string_view value, const Limits& l) {
  if (value.empty())
    return makeError(ErrorCode::kInvalidArgument, "{}: missing", field);
  if (value.size() > l.max_name_length)
    return makeError(ErrorCode::kInvalidArgument, "{}: {} bytes long, the limit is {}", field,
                     value.size(), l.max_name_length);
  if (hasControlChar(value))
    return makeError(ErrorCode::kInvalidArgument, "{} \"{}\": contains a control character", field,
                     value);
  if (value.find('/') != std::string_view::npos)
    return makeError(ErrorCode::kInvalidArgument, "{} \"{}\": must not contain '/'", field, value);
  return okStatus();
}

Status checkText(std::string_view field, std::string_view value, size_t limit) {
  if (value.size() > limit)
    return makeError(ErrorCode::kInvalidArgument, "{}: {} bytes long, the limit is {}", field,
                     value.size(), limit);
  if (hasControlChar(value))
    return makeError(ErrorCode::kInvalidArgument, "{}: contains a control character", field);
  return okStatus();
}

bool isMetaKeyChar(unsigned char c) {
  return std::isalnum(c) || c == '_' || c == '-';
}

// Consul's meta rules: at most 64 pairs, keys [A-Za-z0-9_-]{1,128}, values up to 512 bytes.
Status checkMeta(std::string_view field, const std::map<std::string, std::string>& meta,
                 const Limits& l) {
  if (meta.size() > l.max_meta_pairs)
    return makeError(ErrorCode::kInvalidArgument, "{}: {} pairs, the limit is {}", field,
                     meta.size(), l.max_meta_pairs);
  for (const auto& [k, v] : meta) {
    if (k.empty())
      return makeError(ErrorCode::kInvalidArgument, "{}: empty key", field);
    if (k.size() > l.max_meta_key_length)
      return makeError(ErrorCode::kInvalidArgument, "{}: key \"{}\" is longer than {} bytes", field,
                       k.substr(0, 32), l.max_meta_key_length);
    for (unsigned char c : k)
      if (!isMetaKeyChar(c))
        return makeError(ErrorCode::kInvalidArgument,
                         "{}: key \"{}\" may contain only letters, digits, '_' and '-'", field, k);
    if (v.size() > l.max_meta_value_length)
      return makeError(ErrorCode::kInvalidArgument,
                       "{}: value of \"{}\" is {} bytes long, the limit is {}", field, k, v.size(),
                       l.max_meta_value_length);
  }
  return okStatus();
}

bool isUuid(std::string_view s) {
  if (s.size() != 36)
    return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-')
        return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(s[i]))) {
      return false;
    }
  }
  return true;
}

Status checkDuration(std::string_view field, Duration d) {
  if (d.count() < 0)
    return makeError(ErrorCode::kInvalidArgument, "{}: must not be negative", field);
  return okStatus();
}

// "host:port" with a numeric port, as a TCP check target.
Status checkHostPort(std::string_view field, std::string_view v, const Limits& l) {
  if (v.empty())
    return makeError(ErrorCode::kInvalidArgument, "{}: missing", field);
  TRELLIS_RETURN_IF_ERROR(checkText(field, v, l.max_address_length));
  size_t colon = v.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == v.size())
    return makeError(ErrorCode::kInvalidArgument, "{} \"{}\": expected host:port", field, v);
  std::string_view port = v.substr(colon + 1);
  uint32_t n = 0;
  for (char c : port) {
    if (c < '0' || c > '9')
      return makeError(ErrorCode::kInvalidArgument, "{} \"{}\": port \"{}\" is not a number", field,
                       v, port);
    n = n * 10 + static_cast<uint32_t>(c - '0');
    if (n > 65535)
      break;
  }
  if (n == 0 || n > 65535 || port.size() > 5)
    return makeError(ErrorCode::kInvalidArgument, "{} \"{}\": port must be 1-65535", field, v);
  return okStatus();
}

Status checkDefinition(const Check& c, const Limits& l) {
  const CheckDefinition& d = c.definition;
  TRELLIS_RETURN_IF_ERROR(checkDuration("Check.Interval", d.interval));
  TRELLIS_RETURN_IF_ERROR(checkDuration("Check.Timeout", d.timeout));
  TRELLIS_RETURN_IF_ERROR(checkDuration("Check.TTL", d.ttl));
  TRELLIS_RETURN_IF_ERROR(
      checkDuration("Check.DeregisterCriticalServiceAfter", d.deregister_critical_service_after));

  const bool has_http = !d.http.empty() || !d.method.empty() || !d.header.empty();
  const bool has_tcp = !d.tcp.empty();
  const bool has_ttl = d.ttl.count() > 0;
  const bool has_interval = d.interval.count() > 0 || d.timeout.count() > 0;
  auto conflict = [&](std::string_view what) {
    return makeError(ErrorCode::kInvalidArgument, "Check \"{}\": {} is not allowed on a {} check",
                     c.id, what, checkTypeName(d.type));
  };
  auto requireInterval = [&]() -> Status {
    if (d.interval.count() == 0)
      return makeError(ErrorCode::kInvalidArgument,
                       "Check \"{}\": Interval is required for {} "
                       "checks",
                       c.id, checkTypeName(d.type));
    if (d.interval < l.min_check_interval)
      return makeError(ErrorCode::kInvalidArgument,
                       "Check \"{}\": Interval {} is below the minimum {}", c.id,
                       formatDuration(d.interval), formatDuration(l.min_check_interval));
    return okStatus();
  };

  switch (d.type) {
  case CheckType::kNone:
    if (has_http)
      return conflict("HTTP");
    if (has_tcp)
      return conflict("TCP");
    if (has_ttl)
      return conflict("TTL");
    if (has_interval)
      return conflict("Interval/Timeout");
    break;
  case CheckType::kHttp: {
    if (has_tcp)
      return conflict("TCP");
    if (has_ttl)
      return conflict("TTL");
    if (d.http.empty())
      return makeError(ErrorCode::kInvalidArgument, "Check \"{}\": HTTP URL is missing", c.id);
    TRELLIS_RETURN_IF_ERROR(checkText("Check.HTTP", d.http, l.max_url_length));
    if (d.http.rfind("http://", 0) != 0 && d.http.rfind("https://", 0) != 0)
      return makeError(ErrorCode::kInvalidArgument,
                       "Check.HTTP \"{}\": must start with http:// or https://", d.http);
    for (char ch : d.method)
      if (ch < 'A' || ch > 'Z')
        return makeError(ErrorCode::kInvalidArgument,
                         "Check.Method \"{}\": must be an upper-case HTTP method", d.method);
    if (d.method.size() > 32)
      return makeError(ErrorCode::kInvalidArgument, "Check.Method: longer than 32 bytes");
    size_t values = 0;
    for (const auto& [name, vals] : d.header) {
      if (name.empty())
        return makeError(ErrorCode::kInvalidArgument, "Check.Header: empty header name");
      TRELLIS_RETURN_IF_ERROR(checkText("Check.Header name", name, l.max_meta_key_length));
      for (const auto& v : vals)
        TRELLIS_RETURN_IF_ERROR(checkText("Check.Header value", v, l.max_url_length));
      values += vals.empty() ? 1 : vals.size();
    }
    if (values > l.max_headers)
      return makeError(ErrorCode::kInvalidArgument, "Check.Header: {} values, the limit is {}",
                       values, l.max_headers);
    TRELLIS_RETURN_IF_ERROR(requireInterval());
    break;
  }
  case CheckType::kTcp:
    if (has_http)
      return conflict("HTTP");
    if (has_ttl)
      return conflict("TTL");
    TRELLIS_RETURN_IF_ERROR(checkHostPort("Check.TCP", d.tcp, l));
    TRELLIS_RETURN_IF_ERROR(requireInterval());
    break;
  case CheckType::kTtl:
    if (has_http)
      return conflict("HTTP");
    if (has_tcp)
      return conflict("TCP");
    if (has_interval)
      return conflict("Interval/Timeout");
    if (!has_ttl)
      return makeError(ErrorCode::kInvalidArgument, "Check \"{}\": TTL is missing", c.id);
    break;
  }

  if (d.deregister_critical_service_after.count() > 0) {
    if (c.service_id.empty())
      return makeError(ErrorCode::kInvalidArgument,
                       "Check \"{}\": DeregisterCriticalServiceAfter needs a ServiceID (it "
                       "removes a service)",
                       c.id);
    if (d.deregister_critical_service_after < l.min_deregister_critical_after)
      return makeError(ErrorCode::kInvalidArgument,
                       "Check \"{}\": DeregisterCriticalServiceAfter {} is below the minimum {}",
                       c.id, formatDuration(d.deregister_critical_service_after),
                       formatDuration(l.min_deregister_critical_after));
  }
  return okStatus();
}

} // namespace

Status validateNode(const Node& n, const Limits& l) {
  TRELLIS_RETURN_IF_ERROR(checkIdentifier("Node", n.name, l));
  if (!n.id.empty() && !isUuid(n.id))
    return makeError(ErrorCode::kInvalidArgument, "Node \"{}\": ID \"{}\" is not a UUID", n.name,
                     n.id);
  TRELLIS_RETURN_IF_ERROR(checkText("Address", n.address, l.max_address_length));
  TRELLIS_RETURN_IF_ERROR(checkMeta("NodeMeta", n.meta, l));
  if (n.tagged_addresses.size() > l.max_meta_pairs)
    return makeError(ErrorCode::kInvalidArgument, "TaggedAddresses: {} entries, the limit is {}",
                     n.tagged_addresses.size(), l.max_meta_pairs);
  for (const auto& [k, v] : n.tagged_addresses) {
    if (k.empty())
      return makeError(ErrorCode::kInvalidArgument, "TaggedAddresses: empty key");
    TRELLIS_RETURN_IF_ERROR(checkText("TaggedAddresses key", k, l.max_meta_key_length));
    TRELLIS_RETURN_IF_ERROR(checkText("TaggedAddresses value", v, l.max_address_length));
  }
  return okStatus();
}

Status validateService(const Service& s, const Limits& l) {
  TRELLIS_RETURN_IF_ERROR(checkIdentifier("Service.Name", s.name, l));
  TRELLIS_RETURN_IF_ERROR(checkIdentifier("Service.ID", s.id, l));
  if (s.tags.size() > l.max_tags)
    return makeError(ErrorCode::kInvalidArgument, "Service.Tags: {} tags, the limit is {}",
                     s.tags.size(), l.max_tags);
  for (const auto& t : s.tags)
    TRELLIS_RETURN_IF_ERROR(checkText("Service.Tags", t, l.max_tag_length));
  TRELLIS_RETURN_IF_ERROR(checkText("Service.Address", s.address, l.max_address_length));
  TRELLIS_RETURN_IF_ERROR(checkMeta("Service.Meta", s.meta, l));
  if (s.weights.passing < 1)
    return makeError(ErrorCode::kInvalidArgument,
                     "Service.Weights.Passing: must be at least 1, "
                     "got {}",
                     s.weights.passing);
  if (s.weights.warning < 0)
    return makeError(ErrorCode::kInvalidArgument,
                     "Service.Weights.Warning: must not be "
                     "negative, got {}",
                     s.weights.warning);
  return okStatus();
}

Status validateCheck(const Check& c, const Limits& l) {
  TRELLIS_RETURN_IF_ERROR(checkIdentifier("Check.CheckID", c.id, l));
  if (c.name.empty())
    return makeError(ErrorCode::kInvalidArgument, "Check \"{}\": Name is missing", c.id);
  TRELLIS_RETURN_IF_ERROR(checkText("Check.Name", c.name, l.max_name_length));
  if (c.notes.size() > l.max_notes_length)
    return makeError(ErrorCode::kInvalidArgument, "Check.Notes: {} bytes long, the limit is {}",
                     c.notes.size(), l.max_notes_length);
  if (!c.service_id.empty())
    TRELLIS_RETURN_IF_ERROR(checkIdentifier("Check.ServiceID", c.service_id, l));
  return checkDefinition(c, l);
}

Status validateKvKey(std::string_view key, const Limits& l) {
  if (key.empty())
    return makeError(ErrorCode::kInvalidArgument, "KV key: missing");
  if (key.size() > l.max_kv_key_length)
    return makeError(ErrorCode::kInvalidArgument, "KV key: {} bytes long, the limit is {}",
                     key.size(), l.max_kv_key_length);
  return okStatus();
}

Status validateKvEntry(const KvEntry& e, const Limits& l) {
  TRELLIS_RETURN_IF_ERROR(validateKvKey(e.key, l));
  if (e.value.size() > l.max_kv_value_size)
    return makeError(ErrorCode::kInvalidArgument,
                     "KV value of \"{}\": {} bytes, the limit is {} (kv_max_value_size)", e.key,
                     e.value.size(), l.max_kv_value_size);
  return okStatus();
}

} // namespace trellis::registry
