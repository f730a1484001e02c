#pragma once

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "registry/catalog.h"

namespace trellis::registry::testing {

inline Node node(std::string name, std::string address = "10.0.0.1") {
  Node n;
  n.name = std::move(name);
  n.address = std::move(address);
  return n;
}

inline Service service(std::string name, std::string id = "", uint16_t port = 8080,
                       std::vector<std::string> tags = {}) {
  Service s;
  s.name = std::move(name);
  s.id = std::move(id);
  s.port = port;
  s.tags = std::move(tags);
  return s;
}

inline Check check(std::string id, CheckStatus status, std::string service_id = "") {
  Check c;
  c.id = id;
  c.name = id;
  c.status = status;
  c.service_id = std::move(service_id);
  return c;
}

inline Check httpCheck(std::string id, std::string url, Duration interval,
                       std::string service_id = "") {
  Check c;
  c.id = id;
  c.name = id;
  c.service_id = std::move(service_id);
  c.definition.type = CheckType::kHttp;
  c.definition.http = std::move(url);
  c.definition.interval = interval;
  return c;
}

inline Check ttlCheck(std::string id, Duration ttl, std::string service_id = "") {
  Check c;
  c.id = id;
  c.name = id;
  c.service_id = std::move(service_id);
  c.definition.type = CheckType::kTtl;
  c.definition.ttl = ttl;
  return c;
}

// catalog/register of a node, optionally with one service and checks.
inline RegisterRequest reg(Node n, std::optional<Service> s = std::nullopt,
                           std::vector<Check> checks = {}) {
  RegisterRequest r;
  r.node = std::move(n);
  r.service = std::move(s);
  r.checks = std::move(checks);
  return r;
}

// Applies a write that must succeed; returns its index.
inline uint64_t applyOk(Catalog& c, const WriteRequest& req) {
  auto r = c.apply(req);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
  return r.ok() ? r->index : 0;
}

inline Error applyErr(Catalog& c, const WriteRequest& req) {
  auto r = c.apply(req);
  EXPECT_FALSE(r.ok()) << "expected " << writeRequestName(req) << " to fail";
  return r.ok() ? Error(ErrorCode::kInternal, "succeeded") : r.error();
}

inline std::vector<std::string> instanceIds(const std::vector<ServiceEntry>& v) {
  std::vector<std::string> out;
  for (const auto& e : v)
    out.push_back(e.node->name + "/" + e.service->id);
  return out;
}

} // namespace trellis::registry::testing
