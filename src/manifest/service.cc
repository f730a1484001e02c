// Service, v1: the Kubernetes shape, reduced to what the mesh uses (selector and ports), and
// each port's mesh protocol chosen as Istio does.

#include <algorithm>

#include "manifest/kinds.h"
#include "manifest/manifest.h"
#include "manifest/reader.h"

namespace trellis::manifest {

Result<proxy::Protocol> selectProtocol(std::string_view port_name, std::string_view app_protocol) {
  if (!app_protocol.empty()) {
    const std::string ap = detail::toLower(app_protocol);
    if (ap == "http" || ap == "kubernetes.io/ws")
      return proxy::Protocol::kHttp;
    for (std::string_view h2 : {"kubernetes.io/h2c", "h2c", "http2", "grpc", "grpc-web"}) {
      if (ap == h2)
        return makeError(ErrorCode::kInvalidArgument,
                         "appProtocol \"{}\" is not supported yet (HTTP/2 between proxies is "
                         "not implemented; use http, or tcp to forward the bytes as they are)",
                         app_protocol);
    }
    // tcp, and anything the proxy cannot read as HTTP/1.1 (https, tls, kubernetes.io/wss,
    // database protocols, ...): forwarded as bytes, which always works.
    return proxy::Protocol::kTcp;
  }
  const std::string name = detail::toLower(port_name);
  if (name == "http" || name.rfind("http-", 0) == 0)
    return proxy::Protocol::kHttp;
  return proxy::Protocol::kTcp;
}

namespace detail {

namespace {

// The Kubernetes fields of a Service spec trellis does not use, so their error is specific.
constexpr std::string_view kUnsupportedSpecFields[] = {
    "clusterIP",
    "clusterIPs",
    "externalIPs",
    "externalName",
    "externalTrafficPolicy",
    "internalTrafficPolicy",
    "healthCheckNodePort",
    "ipFamilies",
    "ipFamilyPolicy",
    "loadBalancerClass",
    "loadBalancerIP",
    "loadBalancerSourceRanges",
    "allocateLoadBalancerNodePorts",
    "publishNotReadyAddresses",
    "sessionAffinity",
    "sessionAffinityConfig",
    "trafficDistribution",
};

// IANA service name, as Kubernetes checks named ports: 1..15 of [a-z0-9-], at least one
// letter, no leading, trailing or doubled '-'.
bool isIanaServiceName(std::string_view s) {
  if (s.empty() || s.size() > 15 || s.front() == '-' || s.back() == '-' ||
      s.find("--") != std::string_view::npos)
    return false;
  bool letter = false;
  for (char c : s) {
    if (c >= 'a' && c <= 'z')
      letter = true;
    else if (!(c >= '0' && c <= '9') && c != '-')
      return false;
  }
  return letter;
}

Status parsePort(const json& j, const std::string& path, ServicePort& out) {
  TRELLIS_RETURN_IF_ERROR(
      checkKeys(j, path, {"name", "port", "targetPort", "protocol", "appProtocol", "nodePort"}));
  if (find(j, "nodePort"))
    return fieldError(path + ".nodePort", "not supported by trellis (there are no nodes; expose "
                                          "services through a trellis gateway)");
  if (const json* n = find(j, "name")) {
    auto s = readString(*n, path + ".name", 63);
    if (!s.ok())
      return s.error();
    if (!isDnsLabel(*s))
      return fieldError(path + ".name", fmt::format("invalid port name \"{}\" (lowercase "
                                                    "letters, digits and '-', at most 63)",
                                                    *s));
    out.name = *s;
  }
  const json* port = find(j, "port");
  if (!port)
    return missing(path, "port");
  auto p = readInt(*port, path + ".port", 1, 65535);
  if (!p.ok())
    return p.error();
  out.port = static_cast<uint16_t>(*p);
  out.target_port = out.port;
  if (const json* t = find(j, "targetPort")) {
    const std::string tpath = path + ".targetPort";
    if (t->is_string()) {
      const std::string& s = t->get_ref<const std::string&>();
      if (!isIanaServiceName(s))
        return fieldError(tpath, fmt::format("invalid port name \"{}\" (1 to 15 lowercase "
                                             "letters, digits and '-', with a letter)",
                                             s));
      out.target_port = 0;
      out.target_port_name = s;
    } else {
      auto v = readInt(*t, tpath, 1, 65535);
      if (!v.ok())
        return fieldError(
            tpath,
            fmt::format("expected a port number 1..65535 or a port name, got {}", t->dump()));
      out.target_port = static_cast<uint16_t>(*v);
    }
  }
  if (const json* pr = find(j, "protocol")) {
    auto s = readString(*pr, path + ".protocol", 16);
    if (!s.ok())
      return s.error();
    if (*s == "UDP" || *s == "SCTP")
      return fieldError(path + ".protocol",
                        fmt::format("{} is not supported: the mesh carries TCP only", *s));
    if (*s != "TCP")
      return fieldError(path + ".protocol",
                        fmt::format("unknown protocol \"{}\" (expected TCP)", *s));
  }
  if (const json* a = find(j, "appProtocol")) {
    auto s = readString(*a, path + ".appProtocol", 316);
    if (!s.ok())
      return s.error();
    if (std::string why = qualifiedNameError(*s); !why.empty())
      return fieldError(path + ".appProtocol", why);
    out.app_protocol = *s;
  }
  auto protocol = selectProtocol(out.name, out.app_protocol);
  if (!protocol.ok())
    return fieldError(out.app_protocol.empty() ? path : path + ".appProtocol",
                      protocol.error().message());
  out.protocol = *protocol;
  return okStatus();
}

} // namespace

Result<Service> parseService(const json& spec, const ObjectMeta& /*meta*/) {
  TRELLIS_RETURN_IF_ERROR(expectObject(spec, "spec"));
  for (const auto& [key, value] : spec.items()) {
    if (std::find(std::begin(kUnsupportedSpecFields), std::end(kUnsupportedSpecFields), key) !=
        std::end(kUnsupportedSpecFields))
      return fieldError(joinPath("spec", key),
                        "a Kubernetes field trellis does not support (remove it)");
  }
  TRELLIS_RETURN_IF_ERROR(checkKeys(spec, "spec", {"selector", "ports", "type"}));
  Service out;
  if (const json* t = find(spec, "type")) {
    auto s = readString(*t, "spec.type", 64);
    if (!s.ok())
      return s.error();
    if (*s != "ClusterIP")
      return fieldError("spec.type",
                        fmt::format("type {} is not supported: every trellis Service is reached "
                                    "through the mesh (ClusterIP); expose it with an HTTPRoute "
                                    "on a trellis gateway",
                                    *s));
  }
  if (const json* sel = find(spec, "selector")) {
    auto m = readStringMap(*sel, "spec.selector");
    if (!m.ok())
      return m.error();
    for (const auto& [k, v] : *m) {
      const std::string p = joinPath("spec.selector", k);
      if (std::string why = qualifiedNameError(k); !why.empty())
        return fieldError(p, why);
      if (!isLabelValue(v))
        return fieldError(p, fmt::format("invalid label value \"{}\" (at most 63 letters, "
                                         "digits, '-', '_' or '.', starting and ending with a "
                                         "letter or digit)",
                                         printable(v)));
    }
    out.selector = std::move(*m);
  }
  const json* ports = find(spec, "ports");
  if (!ports)
    return missing("spec", "ports");
  TRELLIS_RETURN_IF_ERROR(expectList(*ports, "spec.ports", 1, kMaxServicePorts));
  for (size_t i = 0; i < ports->size(); ++i) {
    const std::string p = indexPath("spec.ports", i);
    ServicePort sp;
    TRELLIS_RETURN_IF_ERROR(parsePort((*ports)[i], p, sp));
    if (ports->size() > 1 && sp.name.empty())
      return fieldError(p + ".name", "required when a Service has more than one port");
    for (size_t k = 0; k < out.ports.size(); ++k) {
      if (out.ports[k].port == sp.port)
        return fieldError(p + ".port", fmt::format("port {} is also spec.ports[{}]", sp.port, k));
      if (!sp.name.empty() && out.ports[k].name == sp.name)
        return fieldError(p + ".name",
                          fmt::format("port name \"{}\" is also spec.ports[{}]", sp.name, k));
    }
    out.ports.push_back(std::move(sp));
  }
  return out;
}

json serviceJson(const Service& s) {
  json spec;
  if (!s.selector.empty())
    spec["selector"] = s.selector;
  json ports = json::array();
  for (const ServicePort& p : s.ports) {
    json j;
    if (!p.name.empty())
      j["name"] = p.name;
    j["port"] = p.port;
    if (p.target_port_name.empty())
      j["targetPort"] = p.target_port;
    else
      j["targetPort"] = p.target_port_name;
    j["protocol"] = "TCP";
    if (!p.app_protocol.empty())
      j["appProtocol"] = p.app_protocol;
    ports.push_back(std::move(j));
  }
  spec["ports"] = ports;
  return spec;
}

} // namespace detail
} // namespace trellis::manifest
