#include <gtest/gtest.h>

#include "control/directory.h"

namespace trellis::control {
namespace {

registry::RegisterRequest reg(const std::string& node, const std::string& addr,
                              const std::string& id, const std::string& svc_addr, uint16_t port,
                              std::vector<std::string> tags = {}) {
  registry::RegisterRequest r;
  r.node.name = node;
  r.node.address = addr;
  registry::Service s;
  s.name = "web";
  s.id = id;
  s.address = svc_addr;
  s.port = port;
  s.tags = std::move(tags);
  s.weights.passing = 5;
  s.weights.warning = 2;
  r.service = s;
  return r;
}

registry::CheckUpdateRequest update(const std::string& node, const std::string& check,
                                    registry::CheckStatus st) {
  return registry::CheckUpdateRequest{node, check, st, ""};
}

TEST(CatalogDirectory, MapsInstancesHealthAndAddresses) {
  registry::Catalog cat;
  auto a = reg("n1", "10.0.0.1", "web-1", "", 80, {"primary"});
  registry::Check c;
  c.id = "web-1-ok";
  c.name = "ok";
  c.service_id = "web-1";
  c.status = registry::CheckStatus::kPassing;
  a.checks.push_back(c);
  ASSERT_TRUE(cat.apply(a).ok());
  ASSERT_TRUE(cat.apply(reg("n2", "10.0.0.2", "web-2", "192.168.1.9", 81)).ok());
  ASSERT_TRUE(cat.apply(reg("n3", "not-an-ip.example", "web-3", "", 82)).ok());
  CatalogDirectory dir(cat);

  auto all = dir.serviceInstances("WEB", std::nullopt); // case-insensitive
  ASSERT_EQ(all.size(), 2u);                             // n3's host name cannot be answered
  EXPECT_EQ(all[0].node, "n1");
  EXPECT_EQ(all[0].address.to_string(), "10.0.0.1");
  EXPECT_TRUE(all[0].on_node_address);
  EXPECT_EQ(all[0].port, 80);
  EXPECT_EQ(all[0].health, dns::Health::kPassing);
  EXPECT_EQ(all[0].weight, 5);
  EXPECT_EQ(all[1].address.to_string(), "192.168.1.9");
  EXPECT_FALSE(all[1].on_node_address);

  auto tagged = dir.serviceInstances("web", std::string_view("primary"));
  ASSERT_EQ(tagged.size(), 1u);
  EXPECT_EQ(tagged[0].node, "n1");

  ASSERT_TRUE(cat.apply(update("n1", "web-1-ok", registry::CheckStatus::kWarning)).ok());
  auto warn = dir.serviceInstances("web", std::string_view("primary"));
  ASSERT_EQ(warn.size(), 1u);
  EXPECT_EQ(warn[0].health, dns::Health::kWarning);
  EXPECT_EQ(warn[0].weight, 2);
  ASSERT_TRUE(cat.apply(update("n1", "web-1-ok", registry::CheckStatus::kCritical)).ok());
  EXPECT_EQ(dir.serviceInstances("web", std::string_view("primary"))[0].health,
            dns::Health::kCritical);

  EXPECT_TRUE(dir.serviceExists("web"));
  EXPECT_FALSE(dir.serviceExists("nope"));
  auto n = dir.node("N2");
  ASSERT_TRUE(n);
  ASSERT_EQ(n->addresses.size(), 1u);
  EXPECT_EQ(n->addresses[0].to_string(), "10.0.0.2");
  EXPECT_FALSE(dir.node("n9"));
}

} // namespace
} // namespace trellis::control

namespace trellis::control {
namespace {

TEST(CatalogDirectory, CacheIsDroppedExactlyByChangesToItsService) {
  registry::Catalog cat;
  ASSERT_TRUE(cat.apply(reg("n1", "10.0.0.1", "web-1", "", 80)).ok());
  auto other = reg("n1", "10.0.0.1", "db-1", "", 5432);
  other.service->name = "db";
  ASSERT_TRUE(cat.apply(other).ok());
  CatalogDirectory dir(cat, 2);
  EXPECT_EQ(dir.serviceInstances("web", std::nullopt).size(), 1u);
  EXPECT_EQ(dir.serviceInstances("db", std::nullopt).size(), 1u);
  EXPECT_EQ(dir.cachedAnswers(), 2u);
  // A change to db drops db's answer only.
  other.service->port = 5433;
  ASSERT_TRUE(cat.apply(other).ok());
  EXPECT_EQ(dir.cachedAnswers(), 1u);
  EXPECT_EQ(dir.serviceInstances("db", std::nullopt)[0].port, 5433);
  // A new web instance is answered by the next query.
  ASSERT_TRUE(cat.apply(reg("n2", "10.0.0.2", "web-2", "", 81)).ok());
  EXPECT_EQ(dir.serviceInstances("WEB", std::nullopt).size(), 2u);
  // Deregistration too.
  ASSERT_TRUE(cat.apply(registry::DeregisterRequest{"n2", "", ""}).ok());
  EXPECT_EQ(dir.serviceInstances("web", std::nullopt).size(), 1u);
  // The cap: a third name empties the cache rather than growing past it.
  EXPECT_TRUE(dir.serviceInstances("nope", std::nullopt).empty());
  EXPECT_LE(dir.cachedAnswers(), 2u);
  EXPECT_LE(cat.watcherCount(), 2u);
}

} // namespace
} // namespace trellis::control
