// HTTPRoute, gateway.networking.k8s.io/v1: field names, defaults and limits follow the Gateway
// API specification (its CRD validation and CEL rules); where trellis supports less, the error
// says so.

#include <algorithm>
#include <cctype>
#include <cstring>

#include "manifest/kinds.h"
#include "manifest/reader.h"

namespace trellis::manifest::detail {

namespace {

constexpr std::string_view kGatewayGroup = "gateway.networking.k8s.io";

// Header names the proxy owns (framing, connection management); filters may not touch them.
constexpr std::string_view kReservedHeaders[] = {
    "connection", "content-length", "host",    "keep-alive",       "proxy-connection",
    "te",         "trailer",        "upgrade", "transfer-encoding"};

constexpr std::string_view kMethods[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                         "CONNECT", "OPTIONS", "TRACE", "PATCH"};

// A Hostname: optional "*." then RFC 1123 labels, lowercase; not an IP address.
std::string hostnameError(std::string_view h, bool wildcard_ok) {
  std::string_view rest = h;
  if (wildcard_ok && rest.substr(0, 2) == "*.")
    rest.remove_prefix(2);
  if (h.size() > kMaxHostnameLength || !isDnsSubdomain(rest)) {
    return fmt::format("invalid hostname \"{}\" (lowercase DNS labels{}, at most {} characters)", h,
                       wildcard_ok ? ", optionally prefixed with \"*.\"" : "", kMaxHostnameLength);
  }
  if (std::all_of(rest.begin(), rest.end(),
                  [](char c) { return c == '.' || (c >= '0' && c <= '9'); }))
    return fmt::format("invalid hostname \"{}\": IP addresses are not allowed", h);
  return "";
}

bool isPathChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) ||
         (c != '\0' && std::strchr("-/._~!$&'()*+,;=:@%", c) != nullptr);
}

// The Gateway API's rules for Exact and PathPrefix values (and redirect paths).
std::string pathValueError(std::string_view v) {
  if (v.empty() || v.front() != '/')
    return fmt::format("must be an absolute path starting with '/', got \"{}\"", v);
  for (size_t i = 0; i < v.size(); ++i) {
    if (!isPathChar(v[i]))
      return fmt::format("invalid character '{}' in path \"{}\"", printable(v.substr(i, 1)),
                         printable(v, kMaxPathLength));
    if (v[i] == '%' && (i + 2 >= v.size() || !std::isxdigit(static_cast<unsigned char>(v[i + 1])) ||
                        !std::isxdigit(static_cast<unsigned char>(v[i + 2]))))
      return fmt::format("'%' must start a percent-encoded byte in path \"{}\"", v);
  }
  for (std::string_view bad : {"//", "/./", "/../", "%2f", "%2F"}) {
    if (v.find(bad) != std::string_view::npos)
      return fmt::format("must not contain \"{}\", got \"{}\"", bad, v);
  }
  auto endsWith = [&](std::string_view suffix) {
    return v.size() >= suffix.size() && v.substr(v.size() - suffix.size()) == suffix;
  };
  if (endsWith("/..") || endsWith("/."))
    return fmt::format("must not end with \"/.\" or \"/..\", got \"{}\"", v);
  return "";
}

Result<std::string> readHeaderName(const json& j, const std::string& path) {
  auto s = readString(j, path, kMaxHeaderNameLength);
  if (!s.ok())
    return s;
  if (!isHttpToken(*s))
    return fieldError(path, fmt::format("invalid header name \"{}\"", *s));
  return s;
}

Result<std::string> readHeaderValue(const json& j, const std::string& path, size_t max) {
  auto s = readString(j, path, max);
  if (!s.ok())
    return s;
  if (hasControlChar(*s))
    return fieldError(path, "contains a control character (CR, LF, NUL ...)");
  return s;
}

Result<ValueMatchType> readValueMatchType(const json& obj, const std::string& path) {
  const json* t = find(obj, "type");
  if (!t)
    return ValueMatchType::kExact;
  auto s = readString(*t, path + ".type", 64);
  if (!s.ok())
    return s.error();
  if (*s == "Exact")
    return ValueMatchType::kExact;
  if (*s == "RegularExpression")
    return ValueMatchType::kRegularExpression;
  return fieldError(path + ".type",
                    fmt::format("unknown type \"{}\" (expected Exact or RegularExpression)", *s));
}

Status parseParentRef(const json& j, const std::string& path, const ObjectMeta& meta,
                      ParentRef& out) {
  TRELLIS_RETURN_IF_ERROR(
      checkKeys(j, path, {"group", "kind", "namespace", "name", "port", "sectionName"}));
  if (find(j, "sectionName"))
    return fieldError(path + ".sectionName",
                      "not supported: trellis gateways and services have no named sections "
                      "(use port)");
  std::string group(kGatewayGroup), kind = "Gateway";
  if (const json* g = find(j, "group")) {
    auto s = readString(*g, path + ".group", 253, true);
    if (!s.ok())
      return s.error();
    group = *s == "core" ? "" : *s;
  }
  if (const json* k = find(j, "kind")) {
    auto s = readString(*k, path + ".kind", 63);
    if (!s.ok())
      return s.error();
    kind = *s;
  }
  if (kind == "Service" && group.empty()) {
    out.kind = ParentKind::kService;
  } else if (kind == "Gateway" && group == kGatewayGroup) {
    out.kind = ParentKind::kGateway;
  } else {
    return fieldError(path, fmt::format("unsupported parent {} (group \"{}\"): expected kind "
                                        "Service (group \"\" or \"core\") for a mesh route, or "
                                        "Gateway (group {}) for a trellis gateway",
                                        kind, group, kGatewayGroup));
  }
  const json* name = find(j, "name");
  if (!name)
    return missing(path, "name");
  auto n = readString(*name, path + ".name", 253);
  if (!n.ok())
    return n.error();
  const bool valid = out.kind == ParentKind::kService ? isDns1035Label(*n) : isDnsSubdomain(*n);
  if (!valid)
    return fieldError(path + ".name",
                      fmt::format("invalid {} name \"{}\"",
                                  out.kind == ParentKind::kService ? "Service" : "Gateway", *n));
  out.name = *n;
  out.namespace_name = meta.namespace_name;
  if (const json* ns = find(j, "namespace")) {
    auto s = readString(*ns, path + ".namespace", 63);
    if (!s.ok())
      return s.error();
    if (!isDnsLabel(*s))
      return fieldError(path + ".namespace", fmt::format("invalid namespace \"{}\"", *s));
    out.namespace_name = *s;
  }
  if (const json* p = find(j, "port")) {
    auto v = readInt(*p, path + ".port", 1, 65535);
    if (!v.ok())
      return v.error();
    out.port = static_cast<uint16_t>(*v);
  }
  return okStatus();
}

Status parsePathMatch(const json& j, const std::string& path, PathMatch& out) {
  TRELLIS_RETURN_IF_ERROR(checkKeys(j, path, {"type", "value"}));
  if (const json* t = find(j, "type")) {
    auto s = readString(*t, path + ".type", 64);
    if (!s.ok())
      return s.error();
    if (*s == "Exact")
      out.type = PathMatchType::kExact;
    else if (*s == "PathPrefix")
      out.type = PathMatchType::kPathPrefix;
    else if (*s == "RegularExpression")
      out.type = PathMatchType::kRegularExpression;
    else
      return fieldError(path + ".type", fmt::format("unknown type \"{}\" (expected Exact, "
                                                    "PathPrefix or RegularExpression)",
                                                    *s));
  }
  if (const json* v = find(j, "value")) {
    auto s = readString(*v, path + ".value", kMaxPathLength);
    if (!s.ok())
      return s.error();
    out.value = *s;
  }
  if (out.type == PathMatchType::kRegularExpression) {
    auto re = compileRegex(out.value, path + ".value");
    if (!re.ok())
      return re.error();
    out.regex = *re;
  } else if (std::string why = pathValueError(out.value); !why.empty()) {
    return fieldError(path + ".value", why);
  }
  return okStatus();
}

Status parseMatch(const json& j, const std::string& path, HttpRouteMatch& out) {
  TRELLIS_RETURN_IF_ERROR(checkKeys(j, path, {"path", "headers", "queryParams", "method"}));
  if (const json* p = find(j, "path"))
    TRELLIS_RETURN_IF_ERROR(parsePathMatch(*p, path + ".path", out.path));
  if (const json* hs = find(j, "headers")) {
    const std::string hpath = path + ".headers";
    TRELLIS_RETURN_IF_ERROR(expectList(*hs, hpath, 0, kMaxHeaderMatches));
    for (size_t i = 0; i < hs->size(); ++i) {
      const std::string p = indexPath(hpath, i);
      const json& h = (*hs)[i];
      TRELLIS_RETURN_IF_ERROR(checkKeys(h, p, {"type", "name", "value"}));
      HeaderMatch m;
      auto type = readValueMatchType(h, p);
      if (!type.ok())
        return type.error();
      m.type = *type;
      if (!find(h, "name"))
        return missing(p, "name");
      auto name = readHeaderName(h["name"], p + ".name");
      if (!name.ok())
        return name.error();
      m.name = toLower(*name);
      if (!find(h, "value"))
        return missing(p, "value");
      auto value = readHeaderValue(h["value"], p + ".value", kMaxHeaderValueLength);
      if (!value.ok())
        return value.error();
      m.value = *value;
      if (m.type == ValueMatchType::kRegularExpression) {
        auto re = compileRegex(m.value, p + ".value");
        if (!re.ok())
          return re.error();
        m.regex = *re;
      }
      for (size_t k = 0; k < out.headers.size(); ++k) {
        if (out.headers[k].name == m.name)
          return fieldError(p + ".name",
                            fmt::format("header \"{}\" is matched twice (also headers[{}]; names "
                                        "are case-insensitive)",
                                        m.name, k));
      }
      out.headers.push_back(std::move(m));
    }
  }
  if (const json* qs = find(j, "queryParams")) {
    const std::string qpath = path + ".queryParams";
    TRELLIS_RETURN_IF_ERROR(expectList(*qs, qpath, 0, kMaxQueryParamMatches));
    for (size_t i = 0; i < qs->size(); ++i) {
      const std::string p = indexPath(qpath, i);
      const json& q = (*qs)[i];
      TRELLIS_RETURN_IF_ERROR(checkKeys(q, p, {"type", "name", "value"}));
      QueryParamMatch m;
      auto type = readValueMatchType(q, p);
      if (!type.ok())
        return type.error();
      m.type = *type;
      if (!find(q, "name"))
        return missing(p, "name");
      auto name = readHeaderName(q["name"], p + ".name");
      if (!name.ok())
        return name.error();
      m.name = *name;
      if (!find(q, "value"))
        return missing(p, "value");
      auto value = readHeaderValue(q["value"], p + ".value", kMaxQueryParamValueLength);
      if (!value.ok())
        return value.error();
      m.value = *value;
      if (m.type == ValueMatchType::kRegularExpression) {
        auto re = compileRegex(m.value, p + ".value");
        if (!re.ok())
          return re.error();
        m.regex = *re;
      }
      for (size_t k = 0; k < out.query_params.size(); ++k) {
        if (out.query_params[k].name == m.name)
          return fieldError(p + ".name",
                            fmt::format("query parameter \"{}\" is matched twice (also "
                                        "queryParams[{}])",
                                        m.name, k));
      }
      out.query_params.push_back(std::move(m));
    }
  }
  if (const json* m = find(j, "method")) {
    auto s = readString(*m, path + ".method", 16);
    if (!s.ok())
      return s.error();
    if (std::find(std::begin(kMethods), std::end(kMethods), *s) == std::end(kMethods))
      return fieldError(path + ".method",
                        fmt::format("unknown method \"{}\" (expected GET, HEAD, POST, PUT, "
                                    "DELETE, CONNECT, OPTIONS, TRACE or PATCH)",
                                    *s));
    out.method = *s;
  }
  return okStatus();
}

Status parseHeaderList(const json& j, const std::string& path,
                       std::vector<proxy::HeaderValue>& out) {
  TRELLIS_RETURN_IF_ERROR(expectList(j, path, 0, kMaxHeaderModifications));
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string p = indexPath(path, i);
    TRELLIS_RETURN_IF_ERROR(checkKeys(j[i], p, {"name", "value"}));
    if (!find(j[i], "name"))
      return missing(p, "name");
    auto name = readHeaderName(j[i]["name"], p + ".name");
    if (!name.ok())
      return name.error();
    const std::string lower = toLower(*name);
    if (std::find(std::begin(kReservedHeaders), std::end(kReservedHeaders), lower) !=
        std::end(kReservedHeaders))
      return fieldError(p + ".name", fmt::format("header \"{}\" is managed by the proxy", lower));
    if (!find(j[i], "value"))
      return missing(p, "value");
    auto value = readHeaderValue(j[i]["value"], p + ".value", kMaxHeaderValueLength);
    if (!value.ok())
      return value.error();
    for (size_t k = 0; k < out.size(); ++k) {
      if (out[k].name == lower)
        return fieldError(p + ".name",
                          fmt::format("header \"{}\" is listed twice (also [{}]; names are "
                                      "case-insensitive)",
                                      lower, k));
    }
    out.push_back({lower, *value});
  }
  return okStatus();
}

Status parseHeaderModifier(const json& j, const std::string& path, RequestHeaderModifier& out) {
  TRELLIS_RETURN_IF_ERROR(checkKeys(j, path, {"set", "add", "remove"}));
  if (const json* s = find(j, "set"))
    TRELLIS_RETURN_IF_ERROR(parseHeaderList(*s, path + ".set", out.set));
  if (const json* a = find(j, "add"))
    TRELLIS_RETURN_IF_ERROR(parseHeaderList(*a, path + ".add", out.add));
  if (const json* r = find(j, "remove")) {
    const std::string rpath = path + ".remove";
    TRELLIS_RETURN_IF_ERROR(expectList(*r, rpath, 0, kMaxHeaderModifications));
    for (size_t i = 0; i < r->size(); ++i) {
      const std::string p = indexPath(rpath, i);
      auto name = readHeaderName((*r)[i], p);
      if (!name.ok())
        return name.error();
      const std::string lower = toLower(*name);
      if (std::find(std::begin(kReservedHeaders), std::end(kReservedHeaders), lower) !=
          std::end(kReservedHeaders))
        return fieldError(p, fmt::format("header \"{}\" is managed by the proxy", lower));
      if (std::find(out.remove.begin(), out.remove.end(), lower) != out.remove.end())
        return fieldError(p, fmt::format("header \"{}\" is listed twice", lower));
      out.remove.push_back(lower);
    }
  }
  return okStatus();
}

Status parseRedirect(const json& j, const std::string& path, RequestRedirect& out) {
  TRELLIS_RETURN_IF_ERROR(checkKeys(j, path, {"scheme", "hostname", "path", "port", "statusCode"}));
  if (const json* s = find(j, "scheme")) {
    auto v = readString(*s, path + ".scheme", 16);
    if (!v.ok())
      return v.error();
    if (*v != "http" && *v != "https")
      return fieldError(path + ".scheme",
                        fmt::format("unknown scheme \"{}\" (expected http or https)", *v));
    out.scheme = *v;
  }
  if (const json* h = find(j, "hostname")) {
    auto v = readString(*h, path + ".hostname", kMaxHostnameLength);
    if (!v.ok())
      return v.error();
    if (std::string why = hostnameError(*v, false); !why.empty())
      return fieldError(path + ".hostname", why);
    out.hostname = *v;
  }
  if (const json* p = find(j, "path")) {
    const std::string ppath = path + ".path";
    TRELLIS_RETURN_IF_ERROR(
        checkKeys(*p, ppath, {"type", "replaceFullPath", "replacePrefixMatch"}));
    const json* t = find(*p, "type");
    if (!t)
      return missing(ppath, "type");
    auto type = readString(*t, ppath + ".type", 64);
    if (!type.ok())
      return type.error();
    RedirectPath rp;
    std::string_view key, other;
    if (*type == "ReplaceFullPath") {
      rp.type = RedirectPathType::kReplaceFullPath;
      key = "replaceFullPath";
      other = "replacePrefixMatch";
    } else if (*type == "ReplacePrefixMatch") {
      rp.type = RedirectPathType::kReplacePrefixMatch;
      key = "replacePrefixMatch";
      other = "replaceFullPath";
    } else {
      return fieldError(ppath + ".type", fmt::format("unknown type \"{}\" (expected "
                                                     "ReplaceFullPath or ReplacePrefixMatch)",
                                                     *type));
    }
    if (find(*p, other))
      return fieldError(joinPath(ppath, other),
                        fmt::format("must not be set when type is {}", *type));
    const json* v = find(*p, key);
    if (!v)
      return fieldError(joinPath(ppath, key), fmt::format("required when type is {}", *type));
    auto value = readString(*v, joinPath(ppath, key), kMaxPathLength);
    if (!value.ok())
      return value.error();
    if (std::string why = pathValueError(*value); !why.empty())
      return fieldError(joinPath(ppath, key), why);
    rp.value = *value;
    out.path = std::move(rp);
  }
  if (const json* p = find(j, "port")) {
    auto v = readInt(*p, path + ".port", 1, 65535);
    if (!v.ok())
      return v.error();
    out.port = static_cast<uint16_t>(*v);
  }
  if (const json* c = find(j, "statusCode")) {
    auto v = readInt(*c, path + ".statusCode", 301, 302);
    if (!v.ok())
      return fieldError(path + ".statusCode", fmt::format("must be 301 or 302, got {}", c->dump()));
    out.status_code = static_cast<uint16_t>(*v);
  }
  return okStatus();
}

Status parseFilter(const json& j, const std::string& path, HttpRouteFilter& out) {
  TRELLIS_RETURN_IF_ERROR(
      checkKeys(j, path,
                {"type", "requestHeaderModifier", "responseHeaderModifier", "requestMirror",
                 "requestRedirect", "urlRewrite", "extensionRef"}));
  const json* t = find(j, "type");
  if (!t)
    return missing(path, "type");
  auto type = readString(*t, path + ".type", 64);
  if (!type.ok())
    return type.error();
  struct FilterType {
    std::string_view type;
    std::string_view field;
    bool supported;
  };
  constexpr FilterType kTypes[] = {
      {"RequestHeaderModifier", "requestHeaderModifier", true},
      {"RequestRedirect", "requestRedirect", true},
      {"ResponseHeaderModifier", "responseHeaderModifier", false},
      {"RequestMirror", "requestMirror", false},
      {"URLRewrite", "urlRewrite", false},
      {"ExtensionRef", "extensionRef", false},
  };
  const FilterType* ft = nullptr;
  for (const FilterType& f : kTypes) {
    if (f.type == *type)
      ft = &f;
  }
  if (!ft)
    return fieldError(path + ".type",
                      fmt::format("unknown filter type \"{}\" (expected RequestHeaderModifier or "
                                  "RequestRedirect)",
                                  *type));
  if (!ft->supported)
    return fieldError(path + ".type",
                      fmt::format("filter type {} is not supported by trellis (supported: "
                                  "RequestHeaderModifier, RequestRedirect)",
                                  *type));
  for (const FilterType& f : kTypes) {
    if (&f != ft && find(j, f.field))
      return fieldError(joinPath(path, f.field),
                        fmt::format("must not be set when type is {}", *type));
  }
  const json* body = find(j, ft->field);
  if (!body)
    return fieldError(joinPath(path, ft->field), fmt::format("required when type is {}", *type));
  if (ft->type == "RequestHeaderModifier") {
    RequestHeaderModifier m;
    TRELLIS_RETURN_IF_ERROR(parseHeaderModifier(*body, joinPath(path, ft->field), m));
    out = std::move(m);
  } else {
    RequestRedirect r;
    TRELLIS_RETURN_IF_ERROR(parseRedirect(*body, joinPath(path, ft->field), r));
    out = std::move(r);
  }
  return okStatus();
}

Status parseBackendRef(const json& j, const std::string& path, const ObjectMeta& meta,
                       BackendRef& out) {
  TRELLIS_RETURN_IF_ERROR(
      checkKeys(j, path, {"group", "kind", "name", "namespace", "port", "weight", "filters"}));
  std::string group, kind = "Service";
  if (const json* g = find(j, "group")) {
    auto s = readString(*g, path + ".group", 253, true);
    if (!s.ok())
      return s.error();
    group = *s == "core" ? "" : *s;
  }
  if (const json* k = find(j, "kind")) {
    auto s = readString(*k, path + ".kind", 63);
    if (!s.ok())
      return s.error();
    kind = *s;
  }
  if (kind != "Service" || !group.empty())
    return fieldError(path, fmt::format("unsupported backend {} (group \"{}\"): trellis routes "
                                        "to Services (group \"\" or \"core\") only",
                                        kind, group));
  if (find(j, "filters"))
    return fieldError(path + ".filters",
                      "per-backend filters are not supported by trellis (put filters on the rule)");
  const json* name = find(j, "name");
  if (!name)
    return missing(path, "name");
  auto n = readString(*name, path + ".name", 63);
  if (!n.ok())
    return n.error();
  if (!isDns1035Label(*n))
    return fieldError(path + ".name", fmt::format("invalid Service name \"{}\"", *n));
  out.name = *n;
  if (const json* ns = find(j, "namespace")) {
    auto s = readString(*ns, path + ".namespace", 63);
    if (!s.ok())
      return s.error();
    if (*s != meta.namespace_name)
      return fieldError(path + ".namespace",
                        fmt::format("backends must be in the route's namespace \"{}\" (trellis "
                                    "has no ReferenceGrant), got \"{}\"",
                                    meta.namespace_name, *s));
  }
  const json* port = find(j, "port");
  if (!port)
    return fieldError(path + ".port", "required for a Service backend");
  auto p = readInt(*port, path + ".port", 1, 65535);
  if (!p.ok())
    return p.error();
  out.port = static_cast<uint16_t>(*p);
  return intField(j, path, "weight", out.weight, 0, kMaxBackendWeight);
}

Result<Duration> readGatewayDuration(const json& j, const std::string& path) {
  if (!j.is_string())
    return fieldError(
        path, fmt::format("expected a duration such as \"10s\" or \"500ms\", got {}", typeName(j)));
  auto d = parseGatewayDuration(j.get_ref<const std::string&>());
  if (!d.ok())
    return fieldError(path, d.error().message());
  return d;
}

Status parseRule(const json& j, const std::string& path, const ObjectMeta& meta,
                 HttpRouteRule& out) {
  TRELLIS_RETURN_IF_ERROR(checkKeys(j, path, {"matches", "filters", "backendRefs", "timeouts"}));
  if (const json* ms = find(j, "matches")) {
    const std::string mpath = path + ".matches";
    TRELLIS_RETURN_IF_ERROR(expectList(*ms, mpath, 0, kMaxMatchesPerRule));
    for (size_t i = 0; i < ms->size(); ++i) {
      HttpRouteMatch m;
      TRELLIS_RETURN_IF_ERROR(parseMatch((*ms)[i], indexPath(mpath, i), m));
      out.matches.push_back(std::move(m));
    }
  }
  // The Gateway API's default: a rule without matches matches every path.
  if (out.matches.empty())
    out.matches.emplace_back();

  if (const json* fs = find(j, "filters")) {
    const std::string fpath = path + ".filters";
    TRELLIS_RETURN_IF_ERROR(expectList(*fs, fpath, 0, kMaxFiltersPerRule));
    for (size_t i = 0; i < fs->size(); ++i) {
      const std::string p = indexPath(fpath, i);
      HttpRouteFilter f;
      TRELLIS_RETURN_IF_ERROR(parseFilter((*fs)[i], p, f));
      for (size_t k = 0; k < out.filters.size(); ++k) {
        if (out.filters[k].index() == f.index())
          return fieldError(
              p, fmt::format("a {} filter is already given (filters[{}]); each "
                             "type may appear once per rule",
                             f.index() == 0 ? "RequestHeaderModifier" : "RequestRedirect", k));
      }
      out.filters.push_back(std::move(f));
    }
  }
  if (const json* bs = find(j, "backendRefs")) {
    const std::string bpath = path + ".backendRefs";
    TRELLIS_RETURN_IF_ERROR(expectList(*bs, bpath, 0, kMaxBackendRefs));
    for (size_t i = 0; i < bs->size(); ++i) {
      const std::string p = indexPath(bpath, i);
      BackendRef b;
      TRELLIS_RETURN_IF_ERROR(parseBackendRef((*bs)[i], p, meta, b));
      for (size_t k = 0; k < out.backend_refs.size(); ++k) {
        if (out.backend_refs[k].name == b.name && out.backend_refs[k].port == b.port)
          return fieldError(p, fmt::format("backend {}:{} is listed twice (also backendRefs[{}])",
                                           b.name, b.port, k));
      }
      out.backend_refs.push_back(std::move(b));
    }
  }
  for (size_t i = 0; i < out.filters.size(); ++i) {
    const auto* redirect = std::get_if<RequestRedirect>(&out.filters[i]);
    if (!redirect)
      continue;
    const std::string p = indexPath(path + ".filters", i);
    if (!out.backend_refs.empty())
      return fieldError(p, "a RequestRedirect filter must not be used together with backendRefs "
                           "(the redirect answers the request)");
    if (redirect->path && redirect->path->type == RedirectPathType::kReplacePrefixMatch &&
        (out.matches.size() != 1 || out.matches[0].path.type != PathMatchType::kPathPrefix))
      return fieldError(p + ".requestRedirect.path",
                        "ReplacePrefixMatch needs exactly one match, of type PathPrefix");
  }
  if (const json* t = find(j, "timeouts")) {
    const std::string tpath = path + ".timeouts";
    TRELLIS_RETURN_IF_ERROR(checkKeys(*t, tpath, {"request", "backendRequest"}));
    if (const json* r = find(*t, "request")) {
      auto d = readGatewayDuration(*r, tpath + ".request");
      if (!d.ok())
        return d.error();
      out.timeouts.request = *d;
    }
    if (const json* b = find(*t, "backendRequest")) {
      auto d = readGatewayDuration(*b, tpath + ".backendRequest");
      if (!d.ok())
        return d.error();
      out.timeouts.backend_request = *d;
    }
    const auto& req = out.timeouts.request;
    const auto& backend = out.timeouts.backend_request;
    if (req && backend && req->count() != 0 && (backend->count() == 0 || *backend > *req))
      return fieldError(
          tpath + ".backendRequest",
          fmt::format("{} is longer than the request timeout {}",
                      backend->count() == 0 ? "0s (no timeout)" : formatGatewayDuration(*backend),
                      formatGatewayDuration(*req)));
  }
  return okStatus();
}

json matchJson(const HttpRouteMatch& m) {
  json j;
  j["path"] = {{"type", pathMatchTypeName(m.path.type)}, {"value", m.path.value}};
  if (!m.headers.empty()) {
    json hs = json::array();
    for (const HeaderMatch& h : m.headers)
      hs.push_back({{"type", valueMatchTypeName(h.type)}, {"name", h.name}, {"value", h.value}});
    j["headers"] = hs;
  }
  if (!m.query_params.empty()) {
    json qs = json::array();
    for (const QueryParamMatch& q : m.query_params)
      qs.push_back({{"type", valueMatchTypeName(q.type)}, {"name", q.name}, {"value", q.value}});
    j["queryParams"] = qs;
  }
  if (!m.method.empty())
    j["method"] = m.method;
  return j;
}

json headersJson(const std::vector<proxy::HeaderValue>& hs) {
  json out = json::array();
  for (const auto& h : hs)
    out.push_back({{"name", h.name}, {"value", h.value}});
  return out;
}

json filterJson(const HttpRouteFilter& f) {
  if (const auto* m = std::get_if<RequestHeaderModifier>(&f)) {
    json body = json::object();
    if (!m->set.empty())
      body["set"] = headersJson(m->set);
    if (!m->add.empty())
      body["add"] = headersJson(m->add);
    if (!m->remove.empty())
      body["remove"] = m->remove;
    return {{"type", "RequestHeaderModifier"}, {"requestHeaderModifier", body}};
  }
  const auto& r = std::get<RequestRedirect>(f);
  json body = {{"statusCode", r.status_code}};
  if (!r.scheme.empty())
    body["scheme"] = r.scheme;
  if (!r.hostname.empty())
    body["hostname"] = r.hostname;
  if (r.port)
    body["port"] = *r.port;
  if (r.path) {
    if (r.path->type == RedirectPathType::kReplaceFullPath)
      body["path"] = {{"type", "ReplaceFullPath"}, {"replaceFullPath", r.path->value}};
    else
      body["path"] = {{"type", "ReplacePrefixMatch"}, {"replacePrefixMatch", r.path->value}};
  }
  return {{"type", "RequestRedirect"}, {"requestRedirect", body}};
}

} // namespace

Result<HttpRoute> parseHttpRoute(const json& spec, const ObjectMeta& meta) {
  HttpRoute out;
  TRELLIS_RETURN_IF_ERROR(checkKeys(spec, "spec", {"parentRefs", "hostnames", "rules"}));
  const json* parents = find(spec, "parentRefs");
  if (!parents)
    return fieldError("spec.parentRefs",
                      "required: a route attaches to at least one Service (a mesh route) or "
                      "Gateway");
  TRELLIS_RETURN_IF_ERROR(expectList(*parents, "spec.parentRefs", 1, kMaxParentRefs));
  for (size_t i = 0; i < parents->size(); ++i) {
    const std::string p = indexPath("spec.parentRefs", i);
    ParentRef ref;
    TRELLIS_RETURN_IF_ERROR(parseParentRef((*parents)[i], p, meta, ref));
    for (size_t k = 0; k < out.parent_refs.size(); ++k) {
      if (out.parent_refs[k] == ref)
        return fieldError(p, fmt::format("the same parent as parentRefs[{}]", k));
    }
    out.parent_refs.push_back(std::move(ref));
  }
  if (const json* hs = find(spec, "hostnames")) {
    TRELLIS_RETURN_IF_ERROR(expectList(*hs, "spec.hostnames", 0, kMaxHostnames));
    for (size_t i = 0; i < hs->size(); ++i) {
      const std::string p = indexPath("spec.hostnames", i);
      auto h = readString((*hs)[i], p, kMaxHostnameLength);
      if (!h.ok())
        return h.error();
      if (std::string why = hostnameError(*h, true); !why.empty())
        return fieldError(p, why);
      out.hostnames.push_back(*h);
    }
  }
  if (const json* rules = find(spec, "rules")) {
    TRELLIS_RETURN_IF_ERROR(expectList(*rules, "spec.rules", 0, kMaxRules));
    size_t matches = 0;
    for (size_t i = 0; i < rules->size(); ++i) {
      HttpRouteRule r;
      TRELLIS_RETURN_IF_ERROR(parseRule((*rules)[i], indexPath("spec.rules", i), meta, r));
      matches += r.matches.size();
      out.rules.push_back(std::move(r));
    }
    if (matches > kMaxMatchesPerRoute)
      return fieldError("spec.rules", fmt::format("{} matches in all, at most {} allowed per "
                                                  "route",
                                                  matches, kMaxMatchesPerRoute));
  }
  // The Gateway API's default: one rule matching every path (with no backends it answers 500).
  if (out.rules.empty()) {
    out.rules.emplace_back();
    out.rules.back().matches.emplace_back();
  }
  return out;
}

json httpRouteJson(const HttpRoute& route) {
  json spec;
  json parents = json::array();
  for (const ParentRef& p : route.parent_refs) {
    json j;
    if (p.kind == ParentKind::kService)
      j = {{"group", ""}, {"kind", "Service"}};
    else
      j = {{"group", kGatewayGroup}, {"kind", "Gateway"}};
    j["namespace"] = p.namespace_name;
    j["name"] = p.name;
    if (p.port)
      j["port"] = *p.port;
    parents.push_back(std::move(j));
  }
  spec["parentRefs"] = parents;
  if (!route.hostnames.empty())
    spec["hostnames"] = route.hostnames;
  json rules = json::array();
  for (const HttpRouteRule& r : route.rules) {
    json rj;
    json ms = json::array();
    for (const HttpRouteMatch& m : r.matches)
      ms.push_back(matchJson(m));
    rj["matches"] = ms;
    if (!r.filters.empty()) {
      json fs = json::array();
      for (const HttpRouteFilter& f : r.filters)
        fs.push_back(filterJson(f));
      rj["filters"] = fs;
    }
    if (!r.backend_refs.empty()) {
      json bs = json::array();
      for (const BackendRef& b : r.backend_refs)
        bs.push_back({{"group", ""},
                      {"kind", "Service"},
                      {"name", b.name},
                      {"port", b.port},
                      {"weight", b.weight}});
      rj["backendRefs"] = bs;
    }
    if (r.timeouts.request || r.timeouts.backend_request) {
      json t = json::object();
      if (r.timeouts.request)
        t["request"] = formatGatewayDuration(*r.timeouts.request);
      if (r.timeouts.backend_request)
        t["backendRequest"] = formatGatewayDuration(*r.timeouts.backend_request);
      rj["timeouts"] = t;
    }
    rules.push_back(std::move(rj));
  }
  spec["rules"] = rules;
  return spec;
}

Result<Duration> parseGatewayDuration(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return makeError(ErrorCode::kInvalidArgument,
                     "invalid duration \"{}\": {} (Gateway API format: 1 to 4 terms of up to 5 "
                     "digits and a unit h, m, s or ms, such as \"10s\", \"1h30m\", \"500ms\")",
                     text, why);
  };
  if (text.empty())
    return bad("empty");
  int64_t total_ms = 0;
  size_t terms = 0;
  size_t i = 0;
  while (i < text.size()) {
    if (++terms > 4)
      return bad("more than 4 terms");
    const size_t start = i;
    int64_t n = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      if (i - start == 5)
        return bad("a term has more than 5 digits");
      n = n * 10 + (text[i++] - '0');
    }
    if (i == start)
      return bad(fmt::format("expected digits at \"{}\"", text.substr(start)));
    if (text.substr(i, 2) == "ms") {
      total_ms += n;
      i += 2;
    } else if (i < text.size() && (text[i] == 'h' || text[i] == 'm' || text[i] == 's')) {
      total_ms += n * (text[i] == 'h' ? 3600000 : text[i] == 'm' ? 60000 : 1000);
      ++i;
    } else {
      return bad(i == text.size() ? "missing unit" : "unknown unit");
    }
  }
  const Duration d = std::chrono::milliseconds(total_ms);
  if (d > kMaxDuration)
    return bad(fmt::format("longer than {}h", kMaxDuration.count() / 3600000000000LL));
  return d;
}

std::string formatGatewayDuration(Duration d) {
  int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  if (ms == 0)
    return "0s";
  std::string out;
  for (const auto& [unit, per] :
       {std::pair<const char*, int64_t>{"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}}) {
    if (ms >= per) {
      out += fmt::format("{}{}", ms / per, unit);
      ms %= per;
    }
  }
  return out;
}

} // namespace trellis::manifest::detail
