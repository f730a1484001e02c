#include <gtest/gtest.h>

#include "control/json.h"

namespace trellis::control {
namespace {

using registry::CheckStatus;
using registry::CheckType;

Json parse(std::string_view s) {
  auto j = parseBody(s);
  EXPECT_TRUE(j.ok()) << j.error().message();
  return *j;
}

TEST(JsonMapping, AgentServiceWithConsulCasing) {
  auto r = parseAgentService(parse(R"({"ID":"web-1","Name":"web","Tags":["v1"],"Port":8080,
      "Address":"10.0.0.1","Meta":{"Version":"2"},"Weights":{"Passing":3,"Warning":1},
      "Check":{"HTTP":"http://127.0.0.1:8080/healthz","Interval":"10s","Timeout":"1s",
               "DeregisterCriticalServiceAfter":"2m"}})"),
                             "n1");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->node, "n1");
  EXPECT_EQ(r->service.id, "web-1");
  EXPECT_EQ(r->service.name, "web");
  EXPECT_EQ(r->service.port, 8080);
  EXPECT_EQ(r->service.meta.at("Version"), "2"); // user keys keep their case
  EXPECT_EQ(r->service.weights.passing, 3);
  ASSERT_EQ(r->checks.size(), 1u);
  const auto& d = r->checks[0].definition;
  EXPECT_EQ(d.type, CheckType::kHttp);
  EXPECT_EQ(d.method, "GET");
  EXPECT_EQ(d.interval, std::chrono::seconds(10));
  EXPECT_EQ(d.timeout, std::chrono::seconds(1));
  EXPECT_EQ(d.deregister_critical_service_after, std::chrono::minutes(2));
  EXPECT_EQ(r->checks[0].status, CheckStatus::kCritical);
}

TEST(JsonMapping, PythonConsulLowerCaseBody) {
  // python-consul sends lower-case keys; Consul's decoder is case-insensitive.
  auto r = parseAgentService(
      parse(R"({"name":"api","id":"api1","port":9000,"check":{"ttl":"15s"},"tags":["a"]})"), "n");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->service.name, "api");
  EXPECT_EQ(r->service.id, "api1");
  ASSERT_EQ(r->checks.size(), 1u);
  EXPECT_EQ(r->checks[0].definition.type, CheckType::kTtl);
  EXPECT_EQ(r->checks[0].definition.ttl, std::chrono::seconds(15));
  EXPECT_EQ(r->checks[0].status, CheckStatus::kCritical); // TTL checks start critical
}

TEST(JsonMapping, SnakeCaseAndExplicitStatus) {
  auto r = parseAgentService(parse(R"({"name":"a","checks":[{"ttl":"5s","status":"passing"},
      {"tcp":"127.0.0.1:1","interval":"1s","deregister_critical_service_after":90000000000}]})"),
                             "n");
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->checks.size(), 2u);
  EXPECT_EQ(r->checks[0].status, CheckStatus::kPassing);
  EXPECT_EQ(r->checks[1].definition.type, CheckType::kTcp);
  EXPECT_EQ(r->checks[1].definition.deregister_critical_service_after, std::chrono::seconds(90));
}

TEST(JsonMapping, ErrorsNameTheField) {
  auto e1 = parseAgentService(parse(R"({"Port":1})"), "n");
  ASSERT_FALSE(e1.ok());
  EXPECT_EQ(e1.error().message(), "Name: missing");
  auto e2 = parseAgentService(parse(R"({"Name":"x","Port":"80"})"), "n");
  ASSERT_FALSE(e2.ok());
  EXPECT_EQ(e2.error().message(), "Port: expected an integer");
  auto e3 = parseAgentService(parse(R"({"Name":"x","Port":70000})"), "n");
  ASSERT_FALSE(e3.ok());
  EXPECT_NE(e3.error().message().find("out of range"), std::string::npos);
  auto e4 = parseAgentService(parse(R"({"Name":"x","Check":{"HTTP":"http://a/"}})"), "n");
  ASSERT_FALSE(e4.ok());
  EXPECT_EQ(e4.error().message(), "Check.Interval: missing (required for HTTP and TCP checks)");
  auto e5 = parseAgentService(parse(R"({"Name":"x","Checks":[{"TTL":"1s"},{"TTL":"1x"}]})"), "n");
  ASSERT_FALSE(e5.ok());
  EXPECT_NE(e5.error().message().find("Checks[1].TTL"), std::string::npos);
  auto e6 = parseAgentService(parse(R"({"Name":"x","Check":{"Args":["/bin/true"]}})"), "n");
  ASSERT_FALSE(e6.ok());
  EXPECT_NE(e6.error().message().find("not supported"), std::string::npos);
  auto e7 = parseAgentService(parse(R"([1,2])"), "n");
  ASSERT_FALSE(e7.ok());
  EXPECT_FALSE(parseBody("{\"Name\":").ok());
}

TEST(JsonMapping, CatalogRegister) {
  auto r = parseCatalogRegister(parse(R"({"Node":"ext","Address":"10.1.1.1",
      "NodeMeta":{"rack":"r1"},"Service":{"ID":"db1","Service":"db","Port":5432},
      "Check":{"CheckID":"db-ok","Name":"db alive","Status":"passing","ServiceID":"db1"}})"));
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->node.name, "ext");
  EXPECT_EQ(r->node.meta.at("rack"), "r1");
  ASSERT_TRUE(r->service);
  EXPECT_EQ(r->service->name, "db");
  EXPECT_EQ(r->service->node, "ext");
  ASSERT_EQ(r->checks.size(), 1u);
  EXPECT_EQ(r->checks[0].node, "ext");
  EXPECT_EQ(r->checks[0].status, CheckStatus::kPassing);
  EXPECT_EQ(r->checks[0].definition.type, CheckType::kNone);
  EXPECT_FALSE(parseCatalogRegister(parse(R"({"Node":"x"})")).ok()); // Address missing
  auto d = parseCatalogDeregister(parse(R"({"Node":"ext","ServiceID":"db1"})"));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->service_id, "db1");
}

TEST(JsonMapping, EncodesConsulShapes) {
  registry::Node n;
  n.name = "n1";
  n.address = "10.0.0.1";
  registry::Service s;
  s.node = "n1";
  s.id = "web-1";
  s.name = "web";
  s.port = 80;
  s.tags = {"a"};
  s.meta = {{"v", "2"}};
  s.modify_index = 7;
  Json c = catalogServiceJson(n, s);
  EXPECT_EQ(c["ServiceName"], "web");
  EXPECT_EQ(c["ServiceID"], "web-1");
  EXPECT_EQ(c["ServicePort"], 80);
  EXPECT_EQ(c["Address"], "10.0.0.1");
  EXPECT_EQ(c["ServiceMeta"]["v"], "2");
  EXPECT_EQ(c["ModifyIndex"], 7);
  Json a = agentServiceJson(s);
  EXPECT_EQ(a["Service"], "web");
  EXPECT_EQ(a["Weights"]["Passing"], 1);
  registry::Check ch;
  ch.id = "service:web-1";
  ch.status = CheckStatus::kWarning;
  ch.definition.type = CheckType::kTtl;
  ch.definition.ttl = std::chrono::seconds(30);
  Json cj = checkJson(ch);
  EXPECT_EQ(cj["CheckID"], "service:web-1");
  EXPECT_EQ(cj["Status"], "warning");
  EXPECT_EQ(cj["Type"], "ttl");
  EXPECT_EQ(cj["Definition"]["TTL"], "30s");
  registry::KvEntry kv;
  kv.key = "a/b";
  kv.value = "hello";
  EXPECT_EQ(kvJson(kv)["Value"], "aGVsbG8=");
  kv.value.clear();
  EXPECT_TRUE(kvJson(kv)["Value"].is_null());
}

TEST(JsonMapping, Base64RoundTrip) {
  for (std::string s : std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)}) {
    auto d = base64Decode(base64Encode(s));
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(*d, s);
  }
  EXPECT_FALSE(base64Decode("a*b=").ok());
}

} // namespace
} // namespace trellis::control
