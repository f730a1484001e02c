#pragma once

#include "dns/directory.h"
#include "registry/catalog.h"

namespace trellis::control {

// dns::Directory over the catalog: DNS answers come straight from the in-memory catalog, on
// the loop thread that owns it. An instance's address is its service address, else its node's;
// addresses that are not IP literals cannot be put in A/AAAA records and are skipped.
// Health is the worst status of the instance's and its node's checks.
class CatalogDirectory : public dns::Directory {
public:
  explicit CatalogDirectory(const registry::Catalog& catalog) : catalog_(catalog) {}

  // dns::Directory
  std::vector<dns::ServiceInstance> serviceInstances(std::string_view service,
                                                     std::optional<std::string_view> tag) override;
  bool serviceExists(std::string_view service) override;
  std::optional<dns::NodeRecord> node(std::string_view node) override;

private:
  const registry::Catalog& catalog_;
};

} // namespace trellis::control
