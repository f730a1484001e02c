#include <map>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "control/mesh/compiler.h"
#include "manifest/manifest.h"
#include "registry/catalog.h"

namespace trellis::control::mesh {
namespace {

using nlohmann::json;
using registry::CheckStatus;

// Forwards applied batches to the compiler, as MeshServer does.
class Forwarder : public registry::CatalogObserver {
public:
  explicit Forwarder(MeshCompiler& c) : c_(c) {}
  void onApplied(const registry::Batch& b) override { c_.noteBatch(b); }

private:
  MeshCompiler& c_;
};

registry::RegisterRequest instance(const std::string& node, const std::string& node_addr,
                                   const std::string& svc, const std::string& id, uint16_t port,
                                   CheckStatus status, const std::string& addr = "") {
  registry::RegisterRequest r;
  r.node.name = node;
  r.node.address = node_addr;
  registry::Service s;
  s.name = svc;
  s.id = id;
  s.port = port;
  s.address = addr;
  r.service = s;
  registry::Check c;
  c.id = "check:" + id;
  c.name = c.id;
  c.service_id = id;
  c.status = status;
  r.checks.push_back(c);
  return r;
}

registry::CheckUpdateRequest health(const std::string& node, const std::string& id,
                                    CheckStatus st) {
  registry::CheckUpdateRequest u;
  u.node = node;
  u.check_id = "check:" + id;
  u.status = st;
  return u;
}

// Applies endpoints_removed then endpoints_added to an endpoint list, by address, keeping it
// sorted by address (as the server sends it).
void applyEndpointChanges(json& entry, const json& fields) {
  EXPECT_FALSE(fields.contains("endpoints")) << "both forms in one entry: " << fields;
  EXPECT_TRUE(entry.contains("endpoints")) << "a change to a service the receiver lacks";
  std::map<std::string, json> by_address;
  for (const auto& ep : entry["endpoints"])
    by_address[ep["address"].get<std::string>()] = ep;
  for (const auto& a : fields.value("endpoints_removed", json::array()))
    EXPECT_EQ(by_address.erase(a.get<std::string>()), 1u) << "removed but absent: " << a;
  for (const auto& ep : fields.value("endpoints_added", json::array()))
    by_address[ep["address"].get<std::string>()] = ep;
  json list = json::array();
  for (auto& [a, ep] : by_address)
    list.push_back(ep);
  entry["endpoints"] = list;
}

// Applies a delta message to a snapshot's JSON (the proxy's side of the contract).
void applyDelta(json& state, const json& delta) {
  for (auto& [name, fields] : delta["services"].items()) {
    if (!state["services"].contains(name))
      state["services"][name] = json::object();
    for (auto& [k, v] : fields.items())
      if (k != "endpoints_added" && k != "endpoints_removed")
        state["services"][name][k] = v;
    if (fields.contains("endpoints_added") || fields.contains("endpoints_removed"))
      applyEndpointChanges(state["services"][name], fields);
  }
  for (const auto& name : delta["removed"])
    state["services"].erase(name.get<std::string>());
  for (auto& [name, g] : delta["gateways"].items())
    state["gateways"][name] = g;
  for (const auto& name : delta["removed_gateways"])
    state["gateways"].erase(name.get<std::string>());
  state["version"] = delta["version"];
}

json snapshotJson(MeshCompiler& c) { return json::parse("{" + *c.snapshotBody()); }

class MeshCompilerTest : public ::testing::Test {
protected:
  MeshCompilerTest() : compiler_(catalog_), forwarder_(compiler_) {
    catalog_.addObserver(&forwarder_);
  }
  ~MeshCompilerTest() override { catalog_.removeObserver(&forwarder_); }

  void apply(const registry::WriteRequest& r) {
    auto res = catalog_.apply(r);
    ASSERT_TRUE(res.ok()) << res.error().message();
  }
  void putResource(std::string_view yaml) {
    auto rs = manifest::loadString(yaml, "test.yaml");
    ASSERT_TRUE(rs.ok()) << rs.error().message();
    for (const auto& r : *rs) {
      registry::KvPutRequest put;
      put.key = resourceKey(r.id());
      put.value = manifest::toJson(r).dump();
      apply(put);
    }
  }
  // The delta after the changes so far, checked against the contract: applied to the
  // previous snapshot it gives the new snapshot.
  json flush() {
    json before = snapshotJson(compiler_);
    auto d = compiler_.flush();
    if (!d)
      return json();
    EXPECT_EQ(d->back(), '\n');
    EXPECT_EQ(std::count(d->begin(), d->end(), '\n'), 1);
    json delta = json::parse(*d);
    EXPECT_EQ(delta["type"], "delta");
    EXPECT_GT(delta["version"].get<uint64_t>(), before["version"].get<uint64_t>());
    applyDelta(before, delta);
    EXPECT_EQ(before, snapshotJson(compiler_)) << *d;
    return delta;
  }

  registry::Catalog catalog_;
  MeshCompiler compiler_;
  Forwarder forwarder_;
};

TEST_F(MeshCompilerTest, ServiceEntryHasDefaultsAndOnlyPassingEndpoints) {
  apply(instance("n1", "10.0.0.1", "orders", "orders-1", 9001, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "orders", "orders-2", 9002, CheckStatus::kCritical));
  apply(instance("n2", "10.0.0.2", "orders", "orders-3", 9003, CheckStatus::kPassing,
                 "127.0.0.5"));
  apply(instance("n2", "10.0.0.2", "orders", "orders-4", 9004, CheckStatus::kWarning));
  compiler_.rebuild();
  json snap = snapshotJson(compiler_);
  EXPECT_EQ(snap["version"], catalog_.index());
  const json& e = snap["services"]["orders"];
  EXPECT_EQ(e["protocol"], "http");
  EXPECT_EQ(e["cluster"]["lb"], "least_request");
  EXPECT_EQ(e["cluster"]["connect_timeout"], "1s");
  EXPECT_FALSE(e["cluster"].contains("name"));
  EXPECT_FALSE(e["cluster"].contains("endpoints"));
  // Passing only; the instance's address wins over the node's; sorted by address.
  EXPECT_EQ(e["endpoints"], json::parse(R"([{"address":"10.0.0.1:9001","weight":1},
                                           {"address":"127.0.0.5:9003","weight":1}])"));
  ASSERT_EQ(e["routes"].size(), 1u);
  const json& r = e["routes"][0];
  EXPECT_EQ(r["match"], json::parse(R"({"prefix":"/"})"));
  EXPECT_EQ(r["cluster"], "orders");
  EXPECT_EQ(r["timeout"], "15s");
  EXPECT_EQ(r["retries"]["attempts"], 1);
  EXPECT_EQ(r["retries"]["on"], json::parse(R"(["connect-failure"])"));
  EXPECT_TRUE(snap["gateways"].empty());
}

TEST_F(MeshCompilerTest, NodeChecksGateAndHostNamesAreLeftOut) {
  apply(instance("n1", "10.0.0.1", "web", "web-1", 80, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "web", "web-2", 81, CheckStatus::kPassing, "web.local"));
  compiler_.rebuild();
  EXPECT_EQ(snapshotJson(compiler_)["services"]["web"]["endpoints"].size(), 1u);
  // A failing node check takes every instance of the node out.
  registry::RegisterRequest r;
  r.node.name = "n1";
  r.node.address = "10.0.0.1";
  registry::Check c;
  c.id = "serfHealth";
  c.name = "serfHealth";
  c.status = CheckStatus::kCritical;
  r.checks.push_back(c);
  apply(r);
  json d = flush();
  EXPECT_EQ(d["services"]["web"], json::parse(R"({"endpoints":[]})"));
}

TEST_F(MeshCompilerTest, HealthChangeIsAnEndpointsOnlyDeltaOfThatService) {
  apply(instance("n1", "10.0.0.1", "orders", "orders-1", 9001, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "orders", "orders-2", 9002, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "users", "users-1", 7001, CheckStatus::kPassing));
  compiler_.rebuild();
  const uint64_t v0 = compiler_.version();
  EXPECT_FALSE(compiler_.dirty());

  apply(health("n1", "orders-2", CheckStatus::kCritical));
  EXPECT_TRUE(compiler_.dirty());
  const uint64_t compiled = compiler_.stats().services_compiled;
  json d = flush();
  EXPECT_EQ(compiler_.stats().services_compiled, compiled + 1); // only orders recomputed
  EXPECT_EQ(d["version"], catalog_.index());
  EXPECT_GT(d["version"].get<uint64_t>(), v0);
  EXPECT_EQ(d["services"].size(), 1u);
  // One instance gone: the change is shorter than the remaining list.
  EXPECT_EQ(d["services"]["orders"], json::parse(R"({"endpoints_removed":["10.0.0.1:9002"]})"));
  EXPECT_TRUE(d["removed"].empty());

  // Nothing visible changed (the output text of a failing check): no delta.
  registry::CheckUpdateRequest same = health("n1", "orders-2", CheckStatus::kCritical);
  same.output = "still down";
  apply(same);
  EXPECT_EQ(compiler_.flush(), nullptr);
}

TEST_F(MeshCompilerTest, NewServiceIsCompleteAndLastInstanceGoneRemovesIt) {
  compiler_.rebuild();
  apply(instance("n1", "10.0.0.1", "pay", "pay-1", 5000, CheckStatus::kPassing));
  json d = flush();
  ASSERT_TRUE(d["services"].contains("pay"));
  for (const char* k : {"protocol", "cluster", "endpoints", "routes"})
    EXPECT_TRUE(d["services"]["pay"].contains(k)) << k;

  registry::DeregisterRequest del;
  del.node = "n1";
  del.service_id = "pay-1";
  apply(del);
  d = flush();
  EXPECT_EQ(d["removed"], json::parse(R"(["pay"])"));
  EXPECT_TRUE(d["services"].empty());
  EXPECT_TRUE(compiler_.services().empty());
}

TEST_F(MeshCompilerTest, RenamedInstanceUpdatesBothServices) {
  apply(instance("n1", "10.0.0.1", "a", "x-1", 1000, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "b", "b-1", 2000, CheckStatus::kPassing));
  compiler_.rebuild();
  apply(instance("n1", "10.0.0.1", "b", "x-1", 1000, CheckStatus::kPassing));
  json d = flush();
  EXPECT_EQ(d["removed"], json::parse(R"(["a"])"));
  EXPECT_EQ(d["services"]["b"],
            json::parse(R"({"endpoints_added":[{"address":"10.0.0.1:1000","weight":1}]})"));
  EXPECT_EQ(snapshotJson(compiler_)["services"]["b"]["endpoints"].size(), 2u);
}

TEST_F(MeshCompilerTest, EndpointChangesReplaceTheListWhenShorter) {
  for (int i = 0; i < 20; ++i)
    apply(instance("n1", "10.0.0.1", "orders", "o-" + std::to_string(i), uint16_t(9000 + i),
                   CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "users", "u-1", 7001, CheckStatus::kPassing));
  compiler_.rebuild();

  // One added, one gone, one whose weight changed (sent again, with the new weight), in one
  // delta; flush() checks that applying it gives the new snapshot.
  apply(instance("n1", "10.0.0.1", "orders", "o-new", 8999, CheckStatus::kPassing));
  apply(health("n1", "o-3", CheckStatus::kCritical));
  registry::RegisterRequest heavy =
      instance("n1", "10.0.0.1", "orders", "o-7", 9007, CheckStatus::kPassing);
  heavy.service->weights.passing = 5;
  apply(heavy);
  json d = flush();
  EXPECT_EQ(d["services"].size(), 1u) << d;
  EXPECT_EQ(d["services"]["orders"],
            json::parse(R"({"endpoints_added":[{"address":"10.0.0.1:8999","weight":1},
                                               {"address":"10.0.0.1:9007","weight":5}],
                            "endpoints_removed":["10.0.0.1:9003"]})"))
      << d;
  EXPECT_EQ(snapshotJson(compiler_)["services"]["orders"]["endpoints"].size(), 20u);

  // Most of the list changed: the full list is shorter, and is sent.
  for (int i = 0; i < 20; ++i)
    if (i != 3)
      apply(health("n1", "o-" + std::to_string(i), CheckStatus::kCritical));
  d = flush();
  EXPECT_EQ(d["services"]["orders"],
            json::parse(R"({"endpoints":[{"address":"10.0.0.1:8999","weight":1}]})"))
      << d;

  // A definition change beside an endpoint change: both, the endpoints as a change.
  for (int i = 0; i < 20; ++i)
    apply(health("n1", "o-" + std::to_string(i), CheckStatus::kPassing));
  flush();
  putResource(R"(apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: orders}
spec:
  targetRef: {kind: Service, name: orders}
  connectTimeout: 3s
)");
  apply(health("n1", "o-5", CheckStatus::kCritical));
  d = flush();
  EXPECT_TRUE(d["services"]["orders"].contains("cluster")) << d;
  EXPECT_EQ(d["services"]["orders"]["endpoints_removed"], json::parse(R"(["10.0.0.1:9005"])"))
      << d;
  EXPECT_FALSE(d["services"]["orders"].contains("endpoints")) << d;
  EXPECT_FALSE(d["services"].contains("users")) << d;

  // A new service always comes complete, and a catch-up delta carries complete entries.
  const uint64_t v = compiler_.version();
  apply(instance("n1", "10.0.0.1", "pay", "p-1", 5000, CheckStatus::kPassing));
  apply(health("n1", "o-6", CheckStatus::kCritical));
  d = flush();
  EXPECT_TRUE(d["services"]["pay"].contains("endpoints")) << d;
  EXPECT_EQ(d["services"]["orders"], json::parse(R"({"endpoints_removed":["10.0.0.1:9006"]})"));
  json catchup = json::parse(*compiler_.deltaSince(v));
  EXPECT_EQ(catchup["services"]["orders"].size(), 4u) << catchup;
  EXPECT_EQ(catchup["services"]["orders"]["endpoints"].size(), 19u) << catchup;
}

TEST_F(MeshCompilerTest, CoalescedBatchesGiveOneDelta) {
  compiler_.rebuild();
  for (int i = 0; i < 5; ++i)
    apply(instance("n1", "10.0.0.1", "s" + std::to_string(i), "i" + std::to_string(i),
                   uint16_t(3000 + i), CheckStatus::kPassing));
  json d = flush();
  EXPECT_EQ(d["services"].size(), 5u);
  EXPECT_EQ(d["version"], catalog_.index());
}

TEST_F(MeshCompilerTest, DeltaSinceAnOlderVersionCatchesUpInOneStep) {
  apply(instance("n1", "10.0.0.1", "keep", "keep-1", 1000, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "gone", "gone-1", 2000, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "back", "back-1", 3000, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "same", "same-1", 4000, CheckStatus::kPassing));
  compiler_.rebuild();
  const json base = snapshotJson(compiler_);
  const uint64_t v0 = compiler_.version();
  EXPECT_EQ(compiler_.deltaSince(v0), nullptr); // nothing to catch up on

  registry::DeregisterRequest del;
  del.node = "n1";
  apply(instance("n1", "10.0.0.1", "keep", "keep-2", 1001, CheckStatus::kPassing));
  flush();
  const json mid = snapshotJson(compiler_);
  const uint64_t v1 = compiler_.version();
  del.service_id = "gone-1";
  apply(del);
  del.service_id = "back-1";
  apply(del);
  flush();
  apply(instance("n1", "10.0.0.1", "back", "back-2", 3001, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "new", "new-1", 5000, CheckStatus::kPassing));
  flush();
  apply(instance("n1", "10.0.0.1", "brief", "brief-1", 6000, CheckStatus::kPassing));
  flush();
  const uint64_t v4 = compiler_.version();
  del.service_id = "brief-1";
  apply(del);
  apply(health("n1", "keep-2", CheckStatus::kCritical));
  flush();
  const json now = snapshotJson(compiler_);

  for (const auto& [from, v] : {std::pair{base, v0}, std::pair{mid, v1}}) {
    auto d = compiler_.deltaSince(v);
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(std::count(d->begin(), d->end(), '\n'), 1);
    json delta = json::parse(*d);
    EXPECT_EQ(delta["type"], "delta");
    EXPECT_EQ(delta["version"], compiler_.version());
    // Only what changed since: "same" is untouched; "brief" came and went in between.
    EXPECT_FALSE(delta["services"].contains("same")) << *d;
    EXPECT_FALSE(delta["services"].contains("brief")) << *d;
    EXPECT_EQ(delta["removed"], json::parse(R"(["gone"])")) << *d;
    EXPECT_EQ(delta["services"]["back"].size(), 4u) << "complete entries";
    json state = from;
    applyDelta(state, delta);
    EXPECT_EQ(state, now) << *d;
  }
  // From the version before the last flush: only the last flush's changes.
  json last = json::parse(*compiler_.deltaSince(v4));
  EXPECT_EQ(last["services"].size(), 1u) << last; // keep (its health)
  EXPECT_EQ(last["removed"], json::parse(R"(["brief"])")) << last;
}

TEST_F(MeshCompilerTest, TrafficPolicyAndServiceResourceShapeTheEntry) {
  apply(instance("n1", "10.0.0.1", "orders", "orders-1", 9001, CheckStatus::kPassing));
  compiler_.rebuild();
  putResource(R"(apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: orders}
spec:
  targetRef: {kind: Service, name: orders}
  loadBalancer: {policy: RoundRobin}
  connectTimeout: 3s
  timeout: 5s
  retries: {attempts: 3}
  outlierDetection: {consecutiveGatewayFailure: 2}
)");
  json d = flush();
  const json& e = d["services"]["orders"];
  EXPECT_FALSE(e.contains("endpoints")); // unchanged
  EXPECT_EQ(e["cluster"]["lb"], "round_robin");
  EXPECT_EQ(e["cluster"]["connect_timeout"], "3s");
  EXPECT_EQ(e["cluster"]["outlier_detection"]["consecutive_gateway_failure"], 2);
  EXPECT_EQ(e["routes"][0]["timeout"], "5s");
  EXPECT_EQ(e["routes"][0]["retries"]["attempts"], 3);

  // A v1 Service defines the protocol and makes the service exist without instances.
  putResource(R"(apiVersion: v1
kind: Service
metadata: {name: cache}
spec:
  ports: [{name: redis, port: 6379}]
)");
  d = flush();
  EXPECT_EQ(d["services"]["cache"]["protocol"], "tcp");
  EXPECT_TRUE(d["services"]["cache"]["endpoints"].empty());

  // Deleting the policy brings the defaults back.
  registry::KvDeleteRequest del;
  del.key = "trellis/resources/TrafficPolicy/default/orders";
  apply(del);
  d = flush();
  EXPECT_EQ(d["services"]["orders"]["cluster"]["lb"], "least_request");
  EXPECT_FALSE(d["services"].contains("cache"));
}

TEST_F(MeshCompilerTest, HttpRouteCanaryAndGatewayRoutes) {
  apply(instance("n1", "10.0.0.1", "web", "web-1", 80, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "web-canary", "webc-1", 81, CheckStatus::kPassing));
  compiler_.rebuild();
  putResource(R"(apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-split}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
    - matches: [{path: {type: Exact, value: /health}}]
      backendRefs: [{name: web, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /api}, method: GET}]
      backendRefs:
        - {name: web, port: 80, weight: 90}
        - {name: web-canary, port: 80, weight: 10}
      timeouts: {request: 2s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: edge-web}
spec:
  parentRefs: [{name: edge}]
  hostnames: [shop.example.com]
  rules:
    - backendRefs: [{name: web, port: 80}]
)");
  json d = flush();
  const json& routes = d["services"]["web"]["routes"];
  ASSERT_EQ(routes.size(), 3u) << routes.dump();
  // Exact first; the /api prefix became /api exactly and /api/ as a prefix.
  EXPECT_EQ(routes[0]["match"]["path"], "/health");
  EXPECT_EQ(routes[0]["cluster"], "web");
  EXPECT_EQ(routes[1]["match"]["path"], "/api");
  EXPECT_EQ(routes[2]["match"]["prefix"], "/api/");
  EXPECT_EQ(routes[2]["match"]["method"], json::parse(R"(["GET"])"));
  EXPECT_EQ(routes[2]["weighted_clusters"],
            json::parse(R"([{"cluster":"web","weight":90},{"cluster":"web-canary","weight":10}])"));
  EXPECT_EQ(routes[2]["timeout"], "2s");
  // web-canary has no route attached to it: it keeps its default route.
  EXPECT_FALSE(d["services"].contains("web-canary"));

  ASSERT_TRUE(d["gateways"].contains("edge"));
  const json& g = d["gateways"]["edge"]["routes"];
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0]["match"]["prefix"], "/");
  EXPECT_EQ(g[0]["match"]["headers"], json::parse(R"({"host":"shop.example.com"})"));
  EXPECT_EQ(g[0]["cluster"], "web");

  registry::KvDeleteRequest del;
  del.key = "trellis/resources/HTTPRoute/default/edge-web";
  apply(del);
  d = flush();
  EXPECT_EQ(d["removed_gateways"], json::parse(R"(["edge"])"));
}

TEST_F(MeshCompilerTest, InvalidStoredResourceIsSkipped) {
  apply(instance("n1", "10.0.0.1", "web", "web-1", 80, CheckStatus::kPassing));
  registry::KvPutRequest put;
  put.key = "trellis/resources/TrafficPolicy/default/broken";
  put.value = R"({"apiVersion":"trellis.dev/v1alpha1","kind":"TrafficPolicy",
                 "metadata":{"name":"broken"},"spec":{"targetRef":{"kind":"Service",
                 "name":"web"},"connectTimeout":"-1s"}})";
  apply(put);
  compiler_.rebuild();
  ASSERT_EQ(compiler_.resources().errors().size(), 1u);
  EXPECT_NE(compiler_.resources().errors()[0].find("broken"), std::string::npos);
  EXPECT_EQ(snapshotJson(compiler_)["services"]["web"]["cluster"]["connect_timeout"], "1s");
}

} // namespace
} // namespace trellis::control::mesh
