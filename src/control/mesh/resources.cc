#include "control/mesh/resources.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/log.h"
#include "manifest/manifest.h"

namespace trellis::control::mesh {

std::string resourceKey(const manifest::ResourceId& id) {
  return fmt::format("{}{}/{}/{}", kResourcePrefix, manifest::kindName(id.kind),
                     id.namespace_name, id.name);
}

namespace {

// "default" first, then by namespace and name: the resource that wins a conflict.
bool preferred(const manifest::Resource& a, const manifest::Resource& b) {
  const bool ad = a.metadata.namespace_name == "default";
  const bool bd = b.metadata.namespace_name == "default";
  if (ad != bd)
    return ad;
  return a.id() < b.id();
}

std::string lower(std::string_view s) { return registry::foldName(s); }

} // namespace

void MeshResources::load(const registry::Catalog& catalog) {
  resources_.clear();
  policies_.clear();
  services_.clear();
  service_routes_.clear();
  gateway_routes_.clear();
  defined_services_.clear();
  gateways_.clear();
  errors_.clear();

  auto entries = catalog.kvList(kResourcePrefix);
  for (const auto& e : entries.value) {
    auto doc = nlohmann::json::parse(e->value, nullptr, false);
    if (doc.is_discarded()) {
      errors_.push_back(fmt::format("{}: not JSON", e->key));
      continue;
    }
    auto r = manifest::fromJson(doc);
    if (!r) {
      errors_.push_back(fmt::format("{}: {}", e->key, r.error().message()));
      continue;
    }
    if (resourceKey(r->id()) != e->key) {
      errors_.push_back(fmt::format("{}: holds {}, which belongs under {}", e->key,
                                    r->id().toString(), resourceKey(r->id())));
      continue;
    }
    resources_.emplace(r->id(), std::move(*r));
  }
  for (const auto& err : errors_)
    TLOG_WARN("mesh: skipping resource {}", err);

  for (const auto& [id, res] : resources_) {
    if (const auto* tp = std::get_if<manifest::TrafficPolicy>(&res.spec)) {
      auto& slot = policies_[lower(tp->target_service)];
      if (slot == nullptr || preferred(res, *slot))
        slot = &res;
    } else if (std::get_if<manifest::Service>(&res.spec)) {
      auto& slot = services_[lower(res.metadata.name)];
      if (slot == nullptr || preferred(res, *slot))
        slot = &res;
      defined_services_.insert(lower(res.metadata.name));
    } else if (const auto* rt = std::get_if<manifest::HttpRoute>(&res.spec)) {
      for (const auto& p : rt->parent_refs) {
        if (p.kind == manifest::ParentKind::kService) {
          auto& v = service_routes_[lower(p.name)];
          if (v.empty() || v.back() != &res)
            v.push_back(&res);
          defined_services_.insert(lower(p.name));
        } else {
          auto& v = gateway_routes_[p.name];
          if (v.empty() || v.back() != &res)
            v.push_back(&res);
          gateways_.insert(p.name);
        }
      }
      for (const auto& rule : rt->rules)
        for (const auto& b : rule.backend_refs)
          defined_services_.insert(lower(b.name));
    }
  }
}

const manifest::TrafficPolicy* MeshResources::policyFor(std::string_view service) const {
  auto it = policies_.find(std::string(service));
  return it == policies_.end() ? nullptr : &std::get<manifest::TrafficPolicy>(it->second->spec);
}

const manifest::Service* MeshResources::serviceFor(std::string_view service) const {
  auto it = services_.find(std::string(service));
  return it == services_.end() ? nullptr : &std::get<manifest::Service>(it->second->spec);
}

std::vector<const manifest::Resource*>
MeshResources::routesForService(std::string_view service) const {
  auto it = service_routes_.find(std::string(service));
  return it == service_routes_.end() ? std::vector<const manifest::Resource*>{} : it->second;
}

std::vector<const manifest::Resource*>
MeshResources::routesForGateway(std::string_view gateway) const {
  auto it = gateway_routes_.find(std::string(gateway));
  return it == gateway_routes_.end() ? std::vector<const manifest::Resource*>{} : it->second;
}

} // namespace trellis::control::mesh
