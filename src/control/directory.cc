#include "control/directory.h"

#include <algorithm>

namespace trellis::control {

namespace {
std::optional<asio::ip::address> ipOf(const std::string& text) {
  asio::error_code ec;
  auto a = asio::ip::make_address(text, ec);
  if (ec)
    return std::nullopt;
  return a;
}
} // namespace

std::vector<dns::ServiceInstance>
CatalogDirectory::serviceInstances(std::string_view service, std::optional<std::string_view> tag) {
  std::vector<dns::ServiceInstance> scratch;
  const auto& v = lookup(service, tag, scratch);
  return &v == &scratch ? std::move(scratch) : v;
}

const std::vector<dns::ServiceInstance>&
CatalogDirectory::lookup(std::string_view service, std::optional<std::string_view> tag,
                         std::vector<dns::ServiceInstance>& scratch) {
  std::string key = registry::foldName(service);
  if (tag) {
    key += '\0';
    key += registry::foldName(*tag);
  } else {
    key += '\1';
  }
  if (auto it = cache_.find(key); it != cache_.end())
    return it->second.instances;
  scratch = compute(service, tag);
  if (cache_.size() >= max_cached_)
    cache_.clear();
  auto handle = catalog_.watch(registry::WatchScope::service(service),
                               [this, key] { cache_.erase(key); });
  if (!handle)
    return scratch; // no watcher left: answer uncached
  auto& slot = cache_[key];
  slot.instances = std::move(scratch);
  slot.watch = std::move(*handle);
  return slot.instances;
}

std::vector<dns::ServiceInstance>
CatalogDirectory::compute(std::string_view service, std::optional<std::string_view> tag) const {
  registry::InstanceQuery q;
  if (tag)
    q.tags.emplace_back(*tag);
  auto entries = catalog_.serviceInstances(service, q);
  std::vector<dns::ServiceInstance> out;
  out.reserve(entries.value.size());
  for (const auto& e : entries.value) {
    const bool own = e.service->address.empty();
    auto ip = ipOf(own ? e.node->address : e.service->address);
    if (!ip)
      continue;
    dns::ServiceInstance inst;
    inst.node = e.node->name;
    inst.address = *ip;
    inst.port = e.service->port;
    inst.on_node_address = own;
    switch (e.aggregateStatus()) {
    case registry::CheckStatus::kPassing:
      inst.health = dns::Health::kPassing;
      inst.weight = uint16_t(std::clamp(e.service->weights.passing, 1, 65535));
      break;
    case registry::CheckStatus::kWarning:
      inst.health = dns::Health::kWarning;
      inst.weight = uint16_t(std::clamp(e.service->weights.warning, 1, 65535));
      break;
    case registry::CheckStatus::kCritical:
      inst.health = dns::Health::kCritical;
      break;
    }
    out.push_back(inst);
  }
  return out;
}

bool CatalogDirectory::serviceExists(std::string_view service) {
  // A name lives in the catalog while it has instances (skipped ones included).
  std::vector<dns::ServiceInstance> scratch;
  if (!lookup(service, std::nullopt, scratch).empty())
    return true;
  return !catalog_.serviceInstances(service).value.empty();
}

std::optional<dns::NodeRecord> CatalogDirectory::node(std::string_view name) {
  registry::NodePtr n = catalog_.node(name);
  if (!n)
    return std::nullopt;
  dns::NodeRecord rec;
  if (auto ip = ipOf(n->address))
    rec.addresses.push_back(*ip);
  for (const auto& [k, v] : n->tagged_addresses) {
    if (auto ip = ipOf(v); ip && std::find(rec.addresses.begin(), rec.addresses.end(), *ip) ==
                                     rec.addresses.end())
      rec.addresses.push_back(*ip);
  }
  return rec;
}

} // namespace trellis::control
