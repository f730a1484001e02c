#pragma once

#include <nlohmann/json.hpp>

#include "base/result.h"
#include "manifest/resource.h"

// Each kind's spec: validation from JSON and the canonical JSON. Internal to the manifest
// module; error paths start at "spec".

namespace trellis::manifest::detail {

Result<HttpRoute> parseHttpRoute(const nlohmann::json& spec, const ObjectMeta& meta);
Result<TrafficPolicy> parseTrafficPolicy(const nlohmann::json& spec, const ObjectMeta& meta);
Result<Service> parseService(const nlohmann::json& spec, const ObjectMeta& meta);

nlohmann::json httpRouteJson(const HttpRoute& route);
nlohmann::json trafficPolicyJson(const TrafficPolicy& policy);
nlohmann::json serviceJson(const Service& service);

// Gateway API durations (GEP-2257): 1 to 4 terms of 1 to 5 digits and a unit h, m, s or ms,
// such as "10s", "500ms", "1h30m"; "0s" is zero.
Result<Duration> parseGatewayDuration(std::string_view text);
std::string formatGatewayDuration(Duration d); // the shortest such form; d <= kMaxDuration

} // namespace trellis::manifest::detail
