#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "manifest/resource.h"
#include "registry/catalog.h"

// The mesh resources (HTTPRoute, TrafficPolicy, v1 Service) as the server holds them: stored
// in the KV store under kResourcePrefix as their canonical JSON (manifest::toJson), one key
// per resource identity. This is the indexed, parsed view the compiler reads.
namespace trellis::control::mesh {

// trellis/resources/<Kind>/<namespace>/<name>
inline constexpr std::string_view kResourcePrefix = "trellis/resources/";
std::string resourceKey(const manifest::ResourceId& id);

// The KV entries under kResourcePrefix, parsed and indexed by the service or gateway they
// concern. Catalog service names have no namespace: a resource names a service by its
// (lowercased) name whatever namespace the resource itself lives in. Where several resources
// compete (two TrafficPolicies for one service), the one in namespace "default" wins, then
// the first by (namespace, name), so every server picks the same.
class MeshResources {
public:
  // Re-reads every resource from the catalog. Entries that do not parse or validate (written
  // around the resource API, straight into the KV store) are skipped and listed in errors().
  void load(const registry::Catalog& catalog);

  const manifest::TrafficPolicy* policyFor(std::string_view service) const;
  const manifest::Service* serviceFor(std::string_view service) const;
  // The HTTPRoutes with a parentRef naming this Service (resp. gateway), by (namespace, name).
  std::vector<const manifest::Resource*> routesForService(std::string_view service) const;
  std::vector<const manifest::Resource*> routesForGateway(std::string_view gateway) const;

  // Services that exist because a resource defines them (a v1 Service) or routes to them
  // (a backendRef or a Service parentRef), even while no instance is registered.
  const std::set<std::string>& definedServices() const { return defined_services_; }
  // Gateways some HTTPRoute names as parent.
  const std::set<std::string>& gateways() const { return gateways_; }

  const std::vector<std::string>& errors() const { return errors_; }
  size_t size() const { return resources_.size(); }

private:
  // By identity: ordered by kind, namespace, name.
  std::map<manifest::ResourceId, manifest::Resource> resources_;
  std::map<std::string, const manifest::Resource*> policies_;
  std::map<std::string, const manifest::Resource*> services_;
  std::map<std::string, std::vector<const manifest::Resource*>> service_routes_;
  std::map<std::string, std::vector<const manifest::Resource*>> gateway_routes_;
  std::set<std::string> defined_services_;
  std::set<std::string> gateways_;
  std::vector<std::string> errors_;
};

} // namespace trellis::control::mesh
