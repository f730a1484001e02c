#pragma once

#include <string>
#include <unordered_map>

#include "dns/directory.h"
#include "registry/catalog.h"

namespace trellis::control {

// dns::Directory over the catalog: DNS answers come straight from the in-memory catalog, on
// the loop thread that owns it. An instance's address is its service address, else its node's;
// addresses that are not IP literals cannot be put in A/AAAA records and are skipped.
// Health is the worst status of the instance's and its node's checks.
//
// Answers are cached per (service, tag) and dropped by a catalog watch on the service's scope,
// which fires on any change to its instances, their checks or their nodes: a hot name costs
// one hash lookup per query, and a registration is visible to the next query.
class CatalogDirectory : public dns::Directory {
public:
  // At most `max_cached` (service, tag) answers are cached (each holds one catalog watcher);
  // when full the cache is emptied and refilled by the names queried next.
  explicit CatalogDirectory(registry::Catalog& catalog, size_t max_cached = 4096)
      : catalog_(catalog), max_cached_(max_cached) {}

  // dns::Directory
  std::vector<dns::ServiceInstance> serviceInstances(std::string_view service,
                                                     std::optional<std::string_view> tag) override;
  bool serviceExists(std::string_view service) override;
  std::optional<dns::NodeRecord> node(std::string_view node) override;

  size_t cachedAnswers() const { return cache_.size(); }

private:
  struct Cached {
    std::vector<dns::ServiceInstance> instances;
    registry::WatchHandle watch;
  };
  std::vector<dns::ServiceInstance> compute(std::string_view service,
                                            std::optional<std::string_view> tag) const;
  const std::vector<dns::ServiceInstance>& lookup(std::string_view service,
                                                  std::optional<std::string_view> tag,
                                                  std::vector<dns::ServiceInstance>& scratch);

  registry::Catalog& catalog_;
  size_t max_cached_;
  std::unordered_map<std::string, Cached> cache_; // folded name + '\0' + tag (or '\1')
};

} // namespace trellis::control
