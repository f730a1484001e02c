#include "registry/catalog.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "registry/test_util.h"

namespace trellis::registry {
namespace {

using namespace testing;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;
using namespace std::chrono_literals;

TEST(CatalogTest, RegisterNodeServiceAndChecksInOneWrite) {
  Catalog c;
  uint64_t idx = applyOk(c, reg(node("n1"), service("web", "web-1", 80, {"v1"}),
                                {check("svc-check", CheckStatus::kPassing, "web-1"),
                                 check("node-check", CheckStatus::kPassing)}));
  EXPECT_EQ(idx, 1u);
  EXPECT_EQ(c.index(), 1u);

  NodePtr n = c.node("n1");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->address, "10.0.0.1");
  EXPECT_EQ(n->create_index, 1u);
  EXPECT_EQ(n->modify_index, 1u);

  auto inst = c.serviceInstances("web");
  ASSERT_EQ(inst.value.size(), 1u);
  EXPECT_EQ(inst.value[0].service->id, "web-1");
  EXPECT_EQ(inst.value[0].service->port, 80);
  EXPECT_EQ(inst.value[0].service->create_index, 1u);
  // Node checks first, then the instance's own.
  ASSERT_EQ(inst.value[0].checks.size(), 2u);
  EXPECT_EQ(inst.value[0].checks[0]->id, "node-check");
  EXPECT_EQ(inst.value[0].checks[1]->id, "svc-check");
  EXPECT_EQ(inst.value[0].checks[1]->service_name, "web");
  EXPECT_EQ(inst.index, 1u);

  auto counts = c.counts();
  EXPECT_EQ(counts.nodes, 1u);
  EXPECT_EQ(counts.services, 1u);
  EXPECT_EQ(counts.checks, 2u);
}

TEST(CatalogTest, IdenticalReRegistrationIsANoOp) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("web", "web-1", 80)));
  auto r = c.apply(reg(node("n1"), service("web", "web-1", 80)));
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->changed);
  EXPECT_EQ(r->index, 1u);
  EXPECT_EQ(c.index(), 1u) << "nothing changed, so the index must not move";
}

TEST(CatalogTest, UpdateBumpsModifyIndexButKeepsCreateIndex) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("web", "web-1", 80)));
  applyOk(c, reg(node("n2"))); // index 2: another node
  uint64_t idx = applyOk(c, reg(node("n1"), service("web", "web-1", 81)));
  EXPECT_EQ(idx, 3u);
  ServicePtr s = c.service("n1", "web-1");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->port, 81);
  EXPECT_EQ(s->create_index, 1u);
  EXPECT_EQ(s->modify_index, 3u);
  EXPECT_EQ(c.node("n1")->modify_index, 1u) << "the node itself did not change";
}

TEST(CatalogTest, ServiceIdDefaultsToName) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("api")));
  EXPECT_TRUE(c.service("n1", "api"));
}

TEST(CatalogTest, NamesAreCaseInsensitive) {
  Catalog c;
  applyOk(c, reg(node("Node-A"), service("Web", "Web-1")));
  EXPECT_TRUE(c.node("node-a"));
  EXPECT_EQ(c.serviceInstances("WEB").value.size(), 1u);
  EXPECT_TRUE(c.service("NODE-A", "web-1"));
  // The stored spelling is the registered one.
  EXPECT_EQ(c.node("node-a")->name, "Node-A");
  EXPECT_EQ(c.services().value.count("Web"), 1u);
}

TEST(CatalogTest, ServicesListIsTheTagUnion) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("web", "w1", 80, {"a", "b"})));
  applyOk(c, reg(node("n2"), service("web", "w2", 80, {"b", "c"})));
  applyOk(c, reg(node("n2"), service("db", "d1", 5432)));
  auto s = c.services();
  ASSERT_EQ(s.value.size(), 2u);
  EXPECT_THAT(s.value["web"], ElementsAre("a", "b", "c"));
  EXPECT_TRUE(s.value["db"].empty());

  // Removing the only instance carrying "a" removes "a" from the union.
  applyOk(c, DeregisterRequest{"n1", "w1", ""});
  EXPECT_THAT(c.services().value["web"], ElementsAre("b", "c"));
}

TEST(CatalogTest, ServicesFilteredByNodeMeta) {
  Catalog c;
  Node n1 = node("n1");
  n1.meta["zone"] = "a";
  Node n2 = node("n2");
  n2.meta["zone"] = "b";
  applyOk(c, reg(n1, service("web", "w1", 80, {"x"})));
  applyOk(c, reg(n2, service("web", "w2", 80, {"y"})));
  applyOk(c, reg(n2, service("db", "d1")));
  auto s = c.services({{"zone", "a"}});
  ASSERT_EQ(s.value.size(), 1u);
  EXPECT_THAT(s.value["web"], ElementsAre("x"));
}

TEST(CatalogTest, TagFilterRequiresEveryTagCaseInsensitively) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("web", "w1", 80, {"primary", "v2"})));
  applyOk(c, reg(node("n2"), service("web", "w2", 80, {"v2"})));
  applyOk(c, reg(node("n3"), service("web", "w3", 80, {})));
  InstanceQuery q;
  q.tags = {"V2"};
  EXPECT_THAT(instanceIds(c.serviceInstances("web", q).value), ElementsAre("n1/w1", "n2/w2"));
  q.tags = {"v2", "primary"};
  EXPECT_THAT(instanceIds(c.serviceInstances("web", q).value), ElementsAre("n1/w1"));
  q.tags = {"nope"};
  EXPECT_TRUE(c.serviceInstances("web", q).value.empty());
}

TEST(CatalogTest, NodeMetaFilterOnInstances) {
  Catalog c;
  Node n1 = node("n1");
  n1.meta["rack"] = "r1";
  applyOk(c, reg(n1, service("web", "w1")));
  applyOk(c, reg(node("n2"), service("web", "w2")));
  InstanceQuery q;
  q.node_meta = {{"rack", "r1"}};
  EXPECT_THAT(instanceIds(c.serviceInstances("web", q).value), ElementsAre("n1/w1"));
}

TEST(CatalogTest, PassingFilterCountsNodeChecks) {
  Catalog c;
  // n1: everything passing. n2: node check critical. n3: node check warning.
  // n4: service check warning.
  applyOk(c, reg(node("n1"), service("web", "w1"),
                 {check("serfHealth", CheckStatus::kPassing),
                  check("c1", CheckStatus::kPassing, "w1")}));
  applyOk(c, reg(node("n2"), service("web", "w2"),
                 {check("serfHealth", CheckStatus::kCritical),
                  check("c2", CheckStatus::kPassing, "w2")}));
  applyOk(c, reg(node("n3"), service("web", "w3"), {check("serfHealth", CheckStatus::kWarning)}));
  applyOk(c, reg(node("n4"), service("web", "w4"), {check("c4", CheckStatus::kWarning, "w4")}));

  InstanceQuery q;
  EXPECT_EQ(c.serviceInstances("web", q).value.size(), 4u);
  q.health = HealthFilter::kPassing;
  EXPECT_THAT(instanceIds(c.serviceInstances("web", q).value), ElementsAre("n1/w1"));
  q.health = HealthFilter::kNotCritical; // DNS: warning still serves
  EXPECT_THAT(instanceIds(c.serviceInstances("web", q).value),
              ElementsAre("n1/w1", "n3/w3", "n4/w4"));

  // The node recovering brings its instance back.
  applyOk(c, CheckUpdateRequest{"n2", "serfHealth", CheckStatus::kPassing, ""});
  q.health = HealthFilter::kPassing;
  EXPECT_THAT(instanceIds(c.serviceInstances("web", q).value), ElementsAre("n1/w1", "n2/w2"));
}

TEST(CatalogTest, DeregisterServiceRemovesItsChecks) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("web", "w1"),
                 {check("c1", CheckStatus::kPassing, "w1"), check("nc", CheckStatus::kPassing)}));
  applyOk(c, DeregisterRequest{"n1", "w1", ""});
  EXPECT_FALSE(c.service("n1", "w1"));
  EXPECT_FALSE(c.check("n1", "c1"));
  EXPECT_TRUE(c.check("n1", "nc")) << "node checks stay";
  EXPECT_TRUE(c.serviceInstances("web").value.empty());
  EXPECT_TRUE(c.services().value.empty());
  EXPECT_EQ(c.counts().checks, 1u);
}

TEST(CatalogTest, DeregisterNodeCascades) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("web", "w1"), {check("c1", CheckStatus::kPassing, "w1")}));
  applyOk(c, reg(node("n1"), service("db", "d1"), {check("nc", CheckStatus::kPassing)}));
  uint64_t idx = applyOk(c, DeregisterRequest{"n1", "", ""});
  EXPECT_EQ(idx, 3u) << "the whole cascade is one write at one index";
  EXPECT_FALSE(c.node("n1"));
  EXPECT_TRUE(c.nodes().value.empty());
  auto counts = c.counts();
  EXPECT_EQ(counts.services, 0u);
  EXPECT_EQ(counts.checks, 0u);
  EXPECT_TRUE(c.checksInState(std::nullopt).value.empty());
}

TEST(CatalogTest, CatalogDeregisterOfMissingThingsSucceedsAgentDeregisterDoesNot) {
  Catalog c;
  auto r = c.apply(DeregisterRequest{"ghost", "", ""});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->changed);
  applyOk(c, reg(node("n1")));
  Error e = applyErr(c, AgentServiceDeregister{"n1", "nope"});
  EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  EXPECT_THAT(e.message(), HasSubstr("Unknown service ID \"nope\""));
  e = applyErr(c, AgentCheckDeregister{"n1", "nope"});
  EXPECT_EQ(e.code(), ErrorCode::kNotFound);
}

TEST(CatalogTest, DeregisterSingleCheck) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("web", "w1"),
                 {check("a", CheckStatus::kPassing, "w1"), check("b", CheckStatus::kCritical)}));
  applyOk(c, DeregisterRequest{"n1", "", "b"});
  EXPECT_FALSE(c.check("n1", "b"));
  EXPECT_TRUE(c.check("n1", "a"));
  EXPECT_TRUE(c.service("n1", "w1"));
}

TEST(CatalogTest, AgentRegistrationDefaultsAndReplacesChecks) {
  Catalog c;
  applyOk(c, reg(node("self")));
  AgentServiceRequest r;
  r.node = "self";
  r.service = service("web", "web-1");
  r.checks = {ttlCheck("", 30s)};
  r.checks[0].name = "";
  applyOk(c, r);
  CheckPtr ck = c.check("self", "service:web-1");
  ASSERT_TRUE(ck);
  EXPECT_EQ(ck->name, "Service 'web' check");
  EXPECT_EQ(ck->service_id, "web-1");
  EXPECT_EQ(ck->status, CheckStatus::kCritical) << "Consul's initial status";

  // The check passes; re-registering keeps that status (Status is only the initial one).
  applyOk(c, CheckUpdateRequest{"self", "service:web-1", CheckStatus::kPassing, "ok"});
  auto again = c.apply(r);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->changed);
  EXPECT_EQ(c.check("self", "service:web-1")->status, CheckStatus::kPassing);

  // Two checks: IDs get ":1", ":2"; the single old check is no longer listed and goes.
  r.checks = {ttlCheck("", 30s), ttlCheck("", 60s)};
  r.checks[0].name = r.checks[1].name = "";
  applyOk(c, r);
  EXPECT_FALSE(c.check("self", "service:web-1"));
  EXPECT_TRUE(c.check("self", "service:web-1:1"));
  EXPECT_TRUE(c.check("self", "service:web-1:2"));
  EXPECT_EQ(c.serviceChecks("web").value.size(), 2u);
}

TEST(CatalogTest, AgentRegistrationNeedsTheNode) {
  Catalog c;
  AgentServiceRequest r;
  r.node = "missing";
  r.service = service("web");
  Error e = applyErr(c, r);
  EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  EXPECT_THAT(e.message(), HasSubstr("node \"missing\" is not registered"));
}

TEST(CatalogTest, AgentCheckRegisterAndDeregister) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("web", "w1")));
  AgentCheckRequest r{"n1", ttlCheck("mem", 10s, "w1")};
  applyOk(c, r);
  EXPECT_EQ(c.check("n1", "mem")->service_name, "web");
  applyOk(c, AgentCheckDeregister{"n1", "MEM"});
  EXPECT_FALSE(c.check("n1", "mem"));
}

TEST(CatalogTest, FailedRequestIsAtomic) {
  Catalog c;
  // The check names a service that is not on the node: the node and service must not stay.
  Error e = applyErr(
      c, reg(node("n1"), service("web", "w1"), {check("c1", CheckStatus::kPassing, "other")}));
  EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  EXPECT_THAT(e.message(), HasSubstr("service \"other\" is not registered on node \"n1\""));
  EXPECT_FALSE(c.node("n1"));
  EXPECT_FALSE(c.service("n1", "w1"));
  EXPECT_EQ(c.index(), 0u);
  EXPECT_TRUE(c.services().value.empty());
}

TEST(CatalogTest, ValidationErrorsNameTheField) {
  Catalog c;
  Service nameless = service("");
  EXPECT_THAT(applyErr(c, reg(node("n1"), nameless)).message(), HasSubstr("Service.Name: missing"));
  EXPECT_THAT(applyErr(c, reg(node("n1"), service("web", "a/b"))).message(),
              HasSubstr("Service.ID \"a/b\": must not contain '/'"));
  EXPECT_THAT(applyErr(c, reg(node(""))).message(), HasSubstr("Node: missing"));
  EXPECT_THAT(applyErr(c, reg(node("n1", ""))).message(), HasSubstr("Address: missing"));
  Node bad_meta = node("n1");
  bad_meta.meta["bad key!"] = "x";
  EXPECT_THAT(applyErr(c, reg(bad_meta)).message(),
              HasSubstr("may contain only letters, digits, '_' and '-'"));
  Node bad_id = node("n1");
  bad_id.id = "not-a-uuid";
  EXPECT_THAT(applyErr(c, reg(bad_id)).message(), HasSubstr("is not a UUID"));
  Service bad_weight = service("web");
  bad_weight.weights.passing = 0;
  EXPECT_THAT(applyErr(c, reg(node("n1"), bad_weight)).message(),
              HasSubstr("Service.Weights.Passing: must be at least 1"));
  Service bad_port = service("web");
  bad_port.tags.assign(100, "t");
  EXPECT_THAT(applyErr(c, reg(node("n1"), bad_port)).message(), HasSubstr("the limit is 64"));
  Check fast = httpCheck("h", "http://10.0.0.1/", 100ms);
  EXPECT_THAT(applyErr(c, reg(node("n1"), std::nullopt, {fast})).message(),
              HasSubstr("Interval 100ms is below the minimum 1s"));
  Check no_url = httpCheck("h", "", 10s);
  EXPECT_THAT(applyErr(c, reg(node("n1"), std::nullopt, {no_url})).message(),
              HasSubstr("HTTP URL is missing"));
  Check bad_scheme = httpCheck("h", "ftp://x/", 10s);
  EXPECT_THAT(applyErr(c, reg(node("n1"), std::nullopt, {bad_scheme})).message(),
              HasSubstr("must start with http:// or https://"));
  Check tcp;
  tcp.id = tcp.name = "t";
  tcp.definition.type = CheckType::kTcp;
  tcp.definition.tcp = "10.0.0.1";
  tcp.definition.interval = 10s;
  EXPECT_THAT(applyErr(c, reg(node("n1"), std::nullopt, {tcp})).message(),
              HasSubstr("expected host:port"));
  Check ttl = ttlCheck("t", 0s);
  EXPECT_THAT(applyErr(c, reg(node("n1"), std::nullopt, {ttl})).message(),
              HasSubstr("TTL is missing"));
  Check dereg = ttlCheck("t", 10s);
  dereg.definition.deregister_critical_service_after = 5min;
  EXPECT_THAT(applyErr(c, reg(node("n1"), std::nullopt, {dereg})).message(),
              HasSubstr("DeregisterCriticalServiceAfter needs a ServiceID"));
  Check no_name = check("", CheckStatus::kPassing);
  EXPECT_THAT(applyErr(c, reg(node("n1"), std::nullopt, {no_name})).message(),
              HasSubstr("Check.CheckID: missing"));
  Check wrong_node = check("x", CheckStatus::kPassing);
  wrong_node.node = "n2";
  EXPECT_THAT(applyErr(c, reg(node("n1"), std::nullopt, {wrong_node})).message(),
              HasSubstr("does not match the registered Node \"n1\""));
  EXPECT_EQ(c.index(), 0u);
  EXPECT_TRUE(c.nodes().value.empty());
}

TEST(CatalogTest, NodeIdsAreUnique) {
  Catalog c;
  Node a = node("a");
  a.id = "11111111-2222-3333-4444-555555555555";
  applyOk(c, reg(a));
  Node b = node("b");
  b.id = a.id;
  Error e = applyErr(c, reg(b));
  EXPECT_EQ(e.code(), ErrorCode::kAlreadyExists);
  EXPECT_THAT(e.message(), HasSubstr("already used by node \"a\""));
  // The same node may keep its ID.
  a.address = "10.0.0.9";
  applyOk(c, reg(a));
}

TEST(CatalogTest, SkipNodeUpdateKeepsTheNode) {
  Catalog c;
  applyOk(c, reg(node("n1", "10.0.0.1")));
  RegisterRequest r = reg(node("n1", ""), service("web"));
  r.skip_node_update = true;
  applyOk(c, r);
  EXPECT_EQ(c.node("n1")->address, "10.0.0.1");
  EXPECT_TRUE(c.service("n1", "web"));
  // For a node that does not exist, the address is still required.
  RegisterRequest r2 = reg(node("n2", ""));
  r2.skip_node_update = true;
  EXPECT_THAT(applyErr(c, r2).message(), HasSubstr("Address: missing"));
}

TEST(CatalogTest, CheckUpdateAndStates) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("web", "w1"), {check("c1", CheckStatus::kPassing, "w1")}));
  EXPECT_EQ(c.checksInState(CheckStatus::kPassing).value.size(), 1u);
  uint64_t idx = applyOk(c, CheckUpdateRequest{"n1", "c1", CheckStatus::kCritical, "down"});
  EXPECT_EQ(idx, 2u);
  EXPECT_TRUE(c.checksInState(CheckStatus::kPassing).value.empty());
  auto crit = c.checksInState(CheckStatus::kCritical);
  ASSERT_EQ(crit.value.size(), 1u);
  EXPECT_EQ(crit.value[0]->output, "down");
  EXPECT_EQ(crit.value[0]->modify_index, 2u);
  EXPECT_EQ(crit.value[0]->create_index, 1u);
  // The same status and output again changes nothing.
  auto r = c.apply(CheckUpdateRequest{"n1", "c1", CheckStatus::kCritical, "down"});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->changed);
  EXPECT_EQ(c.index(), 2u);
  Error e = applyErr(c, CheckUpdateRequest{"n1", "nope", CheckStatus::kPassing, ""});
  EXPECT_EQ(e.code(), ErrorCode::kNotFound);
}

TEST(CatalogTest, LongCheckOutputIsTruncated) {
  CatalogSettings s;
  s.limits.max_check_output = 16;
  Catalog c(s);
  applyOk(c, reg(node("n1"), std::nullopt, {check("c1", CheckStatus::kPassing)}));
  applyOk(c, CheckUpdateRequest{"n1", "c1", CheckStatus::kPassing, std::string(100, 'x')});
  EXPECT_EQ(c.check("n1", "c1")->output.size(), 16u);
}

TEST(CatalogTest, NodeServicesAndNodeChecks) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("web", "w1"), {check("b", CheckStatus::kPassing, "w1")}));
  applyOk(c, reg(node("n1"), service("db", "d1"), {check("a", CheckStatus::kPassing)}));
  auto ns = c.nodeServices("n1");
  ASSERT_TRUE(ns.value);
  EXPECT_EQ(ns.value->node->name, "n1");
  ASSERT_EQ(ns.value->services.size(), 2u);
  EXPECT_EQ(ns.value->services[0]->id, "d1");
  EXPECT_EQ(ns.value->services[1]->id, "w1");
  auto checks = c.nodeChecks("n1");
  ASSERT_EQ(checks.value.size(), 2u);
  EXPECT_EQ(checks.value[0]->id, "a");
  EXPECT_EQ(checks.value[1]->id, "b");
  EXPECT_FALSE(c.nodeServices("nope").value);
}

TEST(CatalogTest, NodesListSortedAndFilteredByMeta) {
  Catalog c;
  Node b = node("b");
  b.meta["env"] = "prod";
  applyOk(c, reg(b));
  applyOk(c, reg(node("a")));
  auto all = c.nodes();
  ASSERT_EQ(all.value.size(), 2u);
  EXPECT_EQ(all.value[0]->name, "a");
  EXPECT_EQ(all.value[1]->name, "b");
  auto prod = c.nodes({{"env", "prod"}});
  ASSERT_EQ(prod.value.size(), 1u);
  EXPECT_EQ(prod.value[0]->name, "b");
}

TEST(CatalogTest, RenamingAServiceMovesItAndItsChecks) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("web", "x1"), {check("c1", CheckStatus::kPassing, "x1")}));
  applyOk(c, reg(node("n1"), service("api", "x1")));
  EXPECT_TRUE(c.serviceInstances("web").value.empty());
  ASSERT_EQ(c.serviceInstances("api").value.size(), 1u);
  EXPECT_EQ(c.check("n1", "c1")->service_name, "api");
  EXPECT_EQ(c.services().value.count("web"), 0u);
}

TEST(CatalogTest, ServiceIndexMovesOnlyForThatService) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("a", "a1")));
  applyOk(c, reg(node("n2"), service("b", "b1")));
  const uint64_t a_before = c.serviceInstances("a").index;
  const uint64_t b_before = c.serviceInstances("b").index;
  EXPECT_EQ(a_before, 1u);
  EXPECT_EQ(b_before, 2u);
  applyOk(c, reg(node("n1"), service("a", "a1", 9999)));
  EXPECT_EQ(c.serviceInstances("a").index, 3u);
  EXPECT_EQ(c.serviceInstances("b").index, b_before);
  // A node-level check on n2 moves b (its instances' health), not a.
  applyOk(c, reg(node("n2"), std::nullopt, {check("serf", CheckStatus::kPassing)}));
  EXPECT_EQ(c.serviceInstances("b").index, 4u);
  EXPECT_EQ(c.serviceInstances("a").index, 3u);
  // Changing the node's address moves its services too.
  applyOk(c, reg(node("n2", "10.9.9.9")));
  EXPECT_EQ(c.serviceInstances("b").index, 5u);
  // The services list only moves when names or tags change.
  EXPECT_EQ(c.services().index, 2u);
  // A removed service's index is where it was removed, never lower.
  applyOk(c, DeregisterRequest{"n1", "a1", ""});
  EXPECT_EQ(c.serviceInstances("a").index, 6u);
  EXPECT_EQ(c.services().index, 6u);
}

TEST(CatalogTest, LimitsAreEnforced) {
  CatalogSettings s;
  s.limits.max_services = 2;
  s.limits.max_nodes = 2;
  Catalog c(s);
  applyOk(c, reg(node("n1"), service("a")));
  applyOk(c, reg(node("n1"), service("b")));
  Error e = applyErr(c, reg(node("n1"), service("c")));
  EXPECT_EQ(e.code(), ErrorCode::kResourceExhausted);
  EXPECT_THAT(e.message(), HasSubstr("max_services"));
  applyOk(c, reg(node("n2")));
  EXPECT_EQ(applyErr(c, reg(node("n3"))).code(), ErrorCode::kResourceExhausted);
}

TEST(CatalogTest, PrepareSeesEarlierRequestsAndChangesNothingVisible) {
  Catalog c;
  applyOk(c, reg(node("n1")));
  WriteRequest a = reg(node("n1"), service("web", "w1"));
  WriteRequest b = AgentCheckRequest{"n1", ttlCheck("t", 10s, "w1")}; // needs a's service
  WriteRequest bad = AgentServiceDeregister{"n1", "nope"};
  WriteRequest noop = reg(node("n1"));
  PreparedBatch p = c.prepare({&a, &b, &bad, &noop});
  ASSERT_EQ(p.results.size(), 4u);
  ASSERT_TRUE(p.results[0].ok());
  EXPECT_EQ(p.results[0]->index, 2u);
  ASSERT_TRUE(p.results[1].ok()) << p.results[1].error().message();
  EXPECT_EQ(p.results[1]->index, 3u);
  EXPECT_FALSE(p.results[2].ok());
  ASSERT_TRUE(p.results[3].ok());
  EXPECT_FALSE(p.results[3]->changed);
  EXPECT_EQ(p.batch.base_revision, 1u);
  EXPECT_EQ(p.batch.revision, 3u);
  // Nothing is visible yet.
  EXPECT_EQ(c.index(), 1u);
  EXPECT_FALSE(c.service("n1", "w1"));
  EXPECT_FALSE(c.check("n1", "t"));
  EXPECT_EQ(c.counts().services, 0u);
  EXPECT_TRUE(c.services().value.empty());

  c.commit(p.batch);
  EXPECT_EQ(c.index(), 3u);
  EXPECT_TRUE(c.service("n1", "w1"));
  EXPECT_EQ(c.check("n1", "t")->modify_index, 3u);
}

TEST(CatalogTest, RestoreRebuildsStateAndIndexesNeverGoBack) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("web", "w1"), {check("c1", CheckStatus::kPassing, "w1")}));
  applyOk(c, KvPutRequest{"k", "v", 0, std::nullopt});
  applyOk(c, DeregisterRequest{"n1", "w1", ""}); // index 3: web's index is 3
  applyOk(c, reg(node("n1"), service("web", "w2")));

  StoreSnapshot snap;
  snap.revision = c.index();
  snap.nodes = c.nodes().value;
  for (const auto& e : c.serviceInstances("web").value)
    snap.services.push_back(e.service);
  snap.checks = c.checksInState(std::nullopt).value;
  snap.kv = c.kvList("").value;

  Catalog d;
  ASSERT_TRUE(d.restore(snap).ok());
  EXPECT_EQ(d.index(), 4u);
  EXPECT_TRUE(d.service("n1", "w2"));
  EXPECT_EQ(d.kvGet("k").value->value, "v");
  EXPECT_EQ(d.serviceInstances("web").index, 4u);
  EXPECT_GE(d.kvGet("k").index, 4u);
  EXPECT_GE(d.serviceInstances("never-seen").index, 4u);

  // An inconsistent snapshot is refused, and leaves the catalog empty.
  StoreSnapshot broken;
  broken.revision = 5;
  auto orphan = std::make_shared<Service>(*c.service("n1", "w2"));
  orphan->node = "ghost";
  broken.services.push_back(orphan);
  Catalog e;
  auto st = e.restore(broken);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message(), HasSubstr("store is inconsistent"));
  EXPECT_EQ(e.counts().services, 0u);
  EXPECT_FALSE(d.restore(snap).ok()) << "restore needs an empty catalog";
}

} // namespace
} // namespace trellis::registry
