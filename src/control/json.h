#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/result.h"
#include "registry/catalog.h"
#include "registry/model.h"
#include "registry/write.h"

// The Consul JSON mapping: request bodies into registry write requests, catalog objects into
// the JSON Consul's endpoints return. Body keys are matched as Consul's decoder matches them:
// case-insensitively and ignoring underscores ("ServiceID", "serviceid", "service_id"), so the
// lower-case bodies of python-consul and the snake_case of Consul's own docs both work. Keys of
// user maps (Meta, NodeMeta, Header) are data and kept exactly. Unknown keys are ignored.
namespace trellis::control {

using Json = nlohmann::json;

// Parses a body into a JSON value; errors say where the syntax broke.
Result<Json> parseBody(std::string_view body);

// Consul durations: a Go duration string ("10s", "1m30s") or a number of nanoseconds.
Result<Duration> parseJsonDuration(const Json& v, std::string_view field);

// PUT /v1/agent/service/register.
Result<registry::AgentServiceRequest> parseAgentService(const Json& body, const std::string& node);
// PUT /v1/agent/check/register.
Result<registry::AgentCheckRequest> parseAgentCheck(const Json& body, const std::string& node);
// PUT /v1/catalog/register.
Result<registry::RegisterRequest> parseCatalogRegister(const Json& body);
// PUT /v1/catalog/deregister.
Result<registry::DeregisterRequest> parseCatalogDeregister(const Json& body);
// One check definition (agent form: HTTP/TCP/TTL at the top level; catalog form: under
// "Definition"). `prefix` names the field in errors ("Check", "Checks[1]").
Result<registry::Check> parseCheck(const Json& body, std::string_view prefix);

// --- Encoders (Consul's response shapes) ---
Json nodeJson(const registry::Node& n);
// AgentService: /v1/agent/services values, /v1/catalog/node Services values, health "Service".
Json agentServiceJson(const registry::Service& s);
// /v1/catalog/service/<name> entries.
Json catalogServiceJson(const registry::Node& n, const registry::Service& s);
// HealthCheck.
Json checkJson(const registry::Check& c);
// /v1/health/service/<name> entries.
Json healthEntryJson(const registry::ServiceEntry& e);
// KV DirEntry, the value base64-encoded (null when empty, as Consul).
Json kvJson(const registry::KvEntry& e);

std::string base64Encode(std::string_view in);
Result<std::string> base64Decode(std::string_view in);

} // namespace trellis::control
