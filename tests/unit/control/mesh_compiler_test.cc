#include <cstdio>
#include <map>
#include <random>

#include <fmt/format.h>
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

// A catalog registration of node `node` (at `address`) with one check: a node check when
// `service_id` is empty, else one of that instance; an existing check of that ID moves to it.
registry::RegisterRequest nodeCheck(const std::string& node, const std::string& address,
                                    const std::string& id, const std::string& service_id,
                                    CheckStatus status) {
  registry::RegisterRequest r;
  r.node.name = node;
  r.node.address = address;
  registry::Check c;
  c.id = id;
  c.name = id;
  c.service_id = service_id;
  c.status = status;
  r.checks.push_back(c);
  return r;
}

// An instance on `node` with its own check "check:ID" in `status`.
registry::RegisterRequest instance(const std::string& node, const std::string& node_addr,
                                   const std::string& svc, const std::string& id, uint16_t port,
                                   CheckStatus status, const std::string& addr = "") {
  registry::RegisterRequest r = nodeCheck(node, node_addr, "check:" + id, id, status);
  registry::Service s;
  s.name = svc;
  s.id = id;
  s.port = port;
  s.address = addr;
  r.service = s;
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

// How strictly the applier reads endpoints_removed: a flush() delta only removes addresses
// the receiver has; a catch-up delta may also name one added and removed again after its base,
// which the receiver never had (a proxy ignores it, docs/protocol.md).
enum class Removals { kPresent, kMayBeAbsent };

// An endpoint's address: the element itself (weight 1) or its "address" (docs/protocol.md).
std::string addressOf(const json& ep) {
  return ep.is_string() ? ep.get<std::string>() : ep["address"].get<std::string>();
}

// Applies endpoints_removed then endpoints_added to an endpoint list, by address, keeping it
// sorted by address (as the server sends it).
void applyEndpointChanges(json& entry, const json& fields, Removals removals) {
  EXPECT_FALSE(fields.contains("endpoints")) << "both forms in one entry: " << fields;
  EXPECT_TRUE(entry.contains("endpoints")) << "a change to a service the receiver lacks";
  std::map<std::string, json> by_address;
  for (const auto& ep : entry["endpoints"])
    by_address[addressOf(ep)] = ep;
  for (const auto& a : fields.value("endpoints_removed", json::array())) {
    const size_t erased = by_address.erase(a.get<std::string>());
    if (removals == Removals::kPresent) {
      EXPECT_EQ(erased, 1u) << "removed but absent: " << a;
    }
  }
  for (const auto& ep : fields.value("endpoints_added", json::array()))
    by_address[addressOf(ep)] = ep;
  json list = json::array();
  for (auto& [a, ep] : by_address)
    list.push_back(ep);
  entry["endpoints"] = list;
}

// Applies a delta message to a snapshot's JSON (the proxy's side of the contract): removals
// first, then the services' fields.
void applyDelta(json& state, const json& delta, Removals removals = Removals::kPresent) {
  for (const auto& name : delta["removed"])
    state["services"].erase(name.get<std::string>());
  for (const auto& name : delta["removed_gateways"])
    state["gateways"].erase(name.get<std::string>());
  for (auto& [name, fields] : delta["services"].items()) {
    if (!state["services"].contains(name))
      state["services"][name] = json::object();
    for (auto& [k, v] : fields.items())
      if (k != "endpoints_added" && k != "endpoints_removed")
        state["services"][name][k] = v;
    if (fields.contains("endpoints_added") || fields.contains("endpoints_removed"))
      applyEndpointChanges(state["services"][name], fields, removals);
  }
  for (auto& [name, g] : delta["gateways"].items())
    state["gateways"][name] = g;
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
  EXPECT_EQ(e["cluster"]["trust_proxy_errors"], true);
  EXPECT_FALSE(e["cluster"].contains("name"));
  EXPECT_FALSE(e["cluster"].contains("endpoints"));
  // Passing only; the instance's address wins over the node's; sorted by address.
  EXPECT_EQ(e["endpoints"], json::parse(R"(["10.0.0.1:9001",
                                           "127.0.0.5:9003"])"));
  ASSERT_EQ(e["routes"].size(), 1u);
  const json& r = e["routes"][0];
  EXPECT_EQ(r["match"], json::parse(R"({"prefix":"/"})"));
  EXPECT_EQ(r["cluster"], "orders");
  EXPECT_EQ(r["timeout"], "15s");
  EXPECT_EQ(r["retries"]["attempts"], 1);
  EXPECT_EQ(r["retries"]["on"], json::parse(R"(["connect-failure","reset"])"));
  EXPECT_TRUE(snap["gateways"].empty());
}

TEST_F(MeshCompilerTest, NodeChecksGateAndHostNamesAreLeftOut) {
  apply(instance("n1", "10.0.0.1", "web", "web-1", 80, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "web", "web-2", 81, CheckStatus::kPassing, "web.local"));
  compiler_.rebuild();
  EXPECT_EQ(snapshotJson(compiler_)["services"]["web"]["endpoints"].size(), 1u);
  // A failing node check takes every instance of the node out.
  apply(nodeCheck("n1", "10.0.0.1", "serfHealth", "", CheckStatus::kCritical));
  json d = flush();
  EXPECT_EQ(d["services"]["web"], json::parse(R"({"endpoints":[]})"));
}

TEST_F(MeshCompilerTest, HealthChangeIsAnEndpointsOnlyDeltaOfThatService) {
  apply(instance("n1", "10.0.0.1", "orders", "orders-1", 9001, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "orders", "orders-2", 9002, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "orders", "orders-3", 9003, CheckStatus::kPassing));
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

// Deregistering an instance deletes its check; that names only the node and the check ID,
// and must recompute the instance's service alone, not every service of the node.
TEST_F(MeshCompilerTest, DeregisteredInstanceWithCheckRecomputesOnlyItsService) {
  for (int s = 0; s < 5; ++s)
    apply(instance("n1", "10.0.0.1", "svc" + std::to_string(s), "i-" + std::to_string(s),
                   uint16_t(9000 + s), CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "svc0", "i-extra", 9100, CheckStatus::kPassing));
  compiler_.rebuild(); // the check index is built from the catalog too
  apply(instance("n1", "10.0.0.1", "svc1", "i-late", 9101, CheckStatus::kPassing));
  flush();
  for (const char* id : {"i-extra", "i-late"}) {
    registry::DeregisterRequest del;
    del.node = "n1";
    del.service_id = id;
    apply(del);
    const CompilerStats was = compiler_.stats();
    json d = flush();
    EXPECT_EQ(compiler_.stats().services_compiled, was.services_compiled + 1) << id << ": " << d;
    EXPECT_EQ(compiler_.stats().instances_compiled, was.instances_compiled + 1) << id;
    EXPECT_EQ(d["services"].size(), 1u) << d;
  }
  // A node check's deletion still gates every instance of the node.
  registry::RegisterRequest nc;
  nc.node.name = "n1";
  nc.node.address = "10.0.0.1";
  registry::Check c;
  c.id = "node-ok";
  c.name = c.id;
  c.status = CheckStatus::kPassing;
  nc.checks.push_back(c);
  apply(nc);
  flush();
  registry::DeregisterRequest del;
  del.node = "n1";
  del.check_id = "node-ok";
  apply(del);
  const CompilerStats was = compiler_.stats();
  EXPECT_TRUE(flush().is_null()); // every instance still passes
  EXPECT_EQ(compiler_.stats().instances_compiled, was.instances_compiled + 5);
  EXPECT_EQ(compiler_.stats().services_compiled, was.services_compiled);
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

TEST_F(MeshCompilerTest, InstancesSharingAnAddressGiveOneEndpointOfTheLowestWeight) {
  auto weighted = [](const std::string& id, int32_t weight) {
    registry::RegisterRequest r =
        instance("n1", "10.0.0.1", "web", id, 8080, CheckStatus::kPassing, "10.0.0.9");
    r.service->weights.passing = weight;
    return r;
  };
  apply(weighted("web-a", 5));
  apply(instance("n1", "10.0.0.1", "web", "web-other", 8081, CheckStatus::kPassing));
  compiler_.rebuild();
  auto ep = [](int32_t w) { return json{{"address", "10.0.0.9:8080"}, {"weight", w}}; };
  EXPECT_EQ(snapshotJson(compiler_)["services"]["web"]["endpoints"][1], ep(5));

  apply(weighted("web-b", 2)); // lower: the endpoint's weight drops
  EXPECT_EQ(flush()["services"]["web"]["endpoints_added"], json::array({ep(2)}));
  apply(weighted("web-c", 3)); // between: nothing the proxies see
  EXPECT_TRUE(flush().is_null());
  apply(health("n1", "web-b", CheckStatus::kCritical)); // the lowest fails: the next one
  EXPECT_EQ(flush()["services"]["web"]["endpoints_added"], json::array({ep(3)}));
  for (const char* id : {"web-c", "web-a"}) {
    registry::DeregisterRequest del;
    del.node = "n1";
    del.service_id = id;
    apply(del);
    json d = flush();
    if (std::string(id) == "web-c") {
      EXPECT_EQ(d["services"]["web"]["endpoints_added"], json::array({ep(5)})) << d;
    } else {
      EXPECT_EQ(snapshotJson(compiler_)["services"]["web"]["endpoints"],
                json::array({"10.0.0.1:8081"}))
          << d;
    }
  }
  const ServiceEntry& web = compiler_.services().at("web");
  EXPECT_EQ(web.endpoints.size(), 1u);
  EXPECT_EQ(web.endpointsJson().size(), web.endpointsJsonSize());
}

// A check re-registered under another owner (another instance, the node, or back) gates what
// it gates now and no longer what it gated before; its deletion frees what it gated last.
TEST_F(MeshCompilerTest, CheckMovingBetweenOwnersReevaluatesBoth) {
  apply(instance("n1", "10.0.0.1", "web", "web-a", 8080, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "web", "web-b", 8081, CheckStatus::kPassing));
  compiler_.rebuild();
  auto gate = [&](const std::string& owner, CheckStatus st) {
    apply(nodeCheck("n1", "10.0.0.1", "gate", owner, st));
    flush();
  };
  auto endpoints = [&] {
    MeshCompiler fresh(catalog_);
    fresh.rebuild();
    EXPECT_EQ(fresh.services(), compiler_.services());
    return snapshotJson(compiler_)["services"]["web"]["endpoints"];
  };
  const json a = "10.0.0.1:8080", b = "10.0.0.1:8081";
  gate("web-a", CheckStatus::kCritical);
  EXPECT_EQ(endpoints(), json::array({b}));
  gate("web-b", CheckStatus::kCritical); // from web-a to web-b
  EXPECT_EQ(endpoints(), json::array({a}));
  gate("", CheckStatus::kCritical); // to the node: both out
  EXPECT_EQ(endpoints(), json::array());
  gate("web-a", CheckStatus::kCritical); // from the node to web-a
  EXPECT_EQ(endpoints(), json::array({b}));
  gate("", CheckStatus::kCritical);
  gate("web-b", CheckStatus::kPassing);
  EXPECT_EQ(endpoints(), json::array({a, b}));
  gate("", CheckStatus::kCritical);
  registry::DeregisterRequest del;
  del.node = "n1";
  del.check_id = "gate";
  apply(del);
  flush();
  EXPECT_EQ(endpoints(), json::array({a, b}));
}

TEST_F(MeshCompilerTest, RenamedInstanceUpdatesBothServices) {
  apply(instance("n1", "10.0.0.1", "a", "x-1", 1000, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "b", "b-1", 2000, CheckStatus::kPassing));
  compiler_.rebuild();
  apply(instance("n1", "10.0.0.1", "b", "x-1", 1000, CheckStatus::kPassing));
  json d = flush();
  EXPECT_EQ(d["removed"], json::parse(R"(["a"])"));
  EXPECT_EQ(d["services"]["b"], json::parse(R"({"endpoints_added":["10.0.0.1:1000"]})"));
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
  EXPECT_EQ(d["services"]["orders"], json::parse(R"({"endpoints_added":["10.0.0.1:8999",
                                               {"address":"10.0.0.1:9007","weight":5}],
                            "endpoints_removed":["10.0.0.1:9003"]})"))
      << d;
  EXPECT_EQ(snapshotJson(compiler_)["services"]["orders"]["endpoints"].size(), 20u);

  // Most of the list changed: the full list is shorter, and is sent.
  for (int i = 0; i < 20; ++i)
    if (i != 3)
      apply(health("n1", "o-" + std::to_string(i), CheckStatus::kCritical));
  d = flush();
  EXPECT_EQ(d["services"]["orders"], json::parse(R"({"endpoints":["10.0.0.1:8999"]})")) << d;

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

  // A new service always comes complete, in a delta and in a catch-up delta; a catch-up
  // delta past the definition change carries the endpoint change too.
  const uint64_t v = compiler_.version();
  apply(instance("n1", "10.0.0.1", "pay", "p-1", 5000, CheckStatus::kPassing));
  apply(health("n1", "o-6", CheckStatus::kCritical));
  d = flush();
  EXPECT_TRUE(d["services"]["pay"].contains("endpoints")) << d;
  EXPECT_EQ(d["services"]["orders"], json::parse(R"({"endpoints_removed":["10.0.0.1:9006"]})"));
  json catchup = json::parse(*compiler_.deltaSince(v));
  EXPECT_EQ(catchup["services"]["orders"],
            json::parse(R"({"endpoints_removed":["10.0.0.1:9006"]})"))
      << catchup;
  EXPECT_EQ(catchup["services"]["pay"].size(), 4u) << catchup;
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
    EXPECT_EQ(delta["services"]["back"].size(), 4u) << "re-created: complete entry";
    // keep-2 came after both bases and is gone again: its address is not among the added
    // (nor in a complete list, which a one-endpoint service may get instead: as short).
    const json& keep = delta["services"]["keep"];
    EXPECT_FALSE(keep.contains("endpoints_added")) << *d;
    if (keep.contains("endpoints")) {
      EXPECT_EQ(keep["endpoints"], json::parse(R"(["10.0.0.1:1000"])")) << *d;
    }
    json state = from;
    applyDelta(state, delta, Removals::kMayBeAbsent);
    EXPECT_EQ(state, now) << *d;
  }
  // From the version before the last flush: only the last flush's changes.
  json last = json::parse(*compiler_.deltaSince(v4));
  EXPECT_EQ(last["services"].size(), 1u) << last; // keep (its health)
  EXPECT_EQ(last["removed"], json::parse(R"(["brief"])")) << last;
}

TEST_F(MeshCompilerTest, CatchUpRemovesAServiceGoneTwiceSinceItsBase) {
  apply(instance("n1", "10.0.0.1", "flaky", "f-1", 1000, CheckStatus::kPassing));
  apply(instance("n1", "10.0.0.1", "keep", "k-1", 2000, CheckStatus::kPassing));
  compiler_.rebuild();
  const json at_base = snapshotJson(compiler_);
  const uint64_t base = compiler_.version();
  registry::DeregisterRequest del;
  del.node = "n1";
  del.service_id = "f-1";
  apply(del);
  flush();
  apply(instance("n1", "10.0.0.1", "flaky", "f-1", 1000, CheckStatus::kPassing));
  flush();
  const uint64_t recreated = compiler_.version();
  apply(del);
  flush();
  // The stream still has the first incarnation: it must learn that the name is gone.
  json d = json::parse(*compiler_.deltaSince(base));
  EXPECT_EQ(d["removed"], json::parse(R"(["flaky"])")) << d;
  json state = at_base;
  applyDelta(state, d);
  EXPECT_EQ(state, snapshotJson(compiler_)) << d;
  // One that got the second incarnation as well.
  d = json::parse(*compiler_.deltaSince(recreated));
  EXPECT_EQ(d["removed"], json::parse(R"(["flaky"])")) << d;
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

  // Endpoint changes while the resources stay: the definitions are not compiled again (taken
  // from the entries), and every entry is what a compiler made from scratch has.
  apply(instance("n2", "10.0.0.2", "orders", "orders-2", 9002, CheckStatus::kPassing));
  d = flush();
  EXPECT_EQ(d["services"]["orders"].size(), 1u) << d; // the endpoints only
  EXPECT_EQ(d["services"]["orders"]["endpoints_added"], json::array({"10.0.0.2:9002"})) << d;
  {
    MeshCompiler fresh(catalog_);
    fresh.rebuild();
    EXPECT_EQ(fresh.services(), compiler_.services());
    EXPECT_EQ(compiler_.services().at("orders").cluster, fresh.services().at("orders").cluster);
  }

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

// A second compiler on the fixture's catalog, with its own bound of endpoint tombstones.
class BoundedCompiler {
public:
  BoundedCompiler(registry::Catalog& catalog, size_t max_endpoint_tombstones)
      : catalog_(catalog), compiler_(catalog, max_endpoint_tombstones), forwarder_(compiler_) {
    catalog_.addObserver(&forwarder_);
  }
  ~BoundedCompiler() { catalog_.removeObserver(&forwarder_); }
  MeshCompiler& operator*() { return compiler_; }
  MeshCompiler* operator->() { return &compiler_; }

private:
  registry::Catalog& catalog_;
  MeshCompiler compiler_;
  Forwarder forwarder_;
};

// deltaSince(base) applied to the snapshot at `base` must give the current snapshot.
json checkCatchUp(MeshCompiler& c, const json& at_base, uint64_t base) {
  auto d = c.deltaSince(base);
  EXPECT_NE(d, nullptr) << "base " << base;
  if (!d)
    return json();
  EXPECT_EQ(std::count(d->begin(), d->end(), '\n'), 1);
  json delta = json::parse(*d);
  json state = at_base;
  applyDelta(state, delta, Removals::kMayBeAbsent);
  EXPECT_EQ(state, snapshotJson(c)) << "base " << base << ": " << *d;
  return delta;
}

TEST_F(MeshCompilerTest, CatchUpAfterABurstIsEndpointLevel) {
  // 100 services of 100 instances; a burst of 1,000 registrations (10 per service) in 10
  // flushes, as a slow stream misses them; its catch-up carries only the new endpoints.
  constexpr int kServices = 100, kInstances = 100, kBurst = 10;
  for (int s = 0; s < kServices; ++s)
    for (int i = 0; i < kInstances; ++i)
      apply(instance("n1", "10.0.0.1", "svc" + std::to_string(s),
                     "svc" + std::to_string(s) + "-" + std::to_string(i), uint16_t(20000 + i),
                     CheckStatus::kPassing, "10.1." + std::to_string(s) + ".1"));
  compiler_.rebuild();
  const json at_base = snapshotJson(compiler_);
  const uint64_t base = compiler_.version();
  for (int b = 0; b < kBurst; ++b) {
    for (int s = 0; s < kServices; ++s)
      apply(instance("n1", "10.0.0.1", "svc" + std::to_string(s),
                     "svc" + std::to_string(s) + "-new" + std::to_string(b),
                     uint16_t(30000 + b), CheckStatus::kPassing,
                     "10.1." + std::to_string(s) + ".1"));
    compiler_.flush();
  }
  const std::string text = *compiler_.deltaSince(base);
  json delta = checkCatchUp(compiler_, at_base, base);
  ASSERT_EQ(delta["services"].size(), size_t(kServices));
  size_t complete_entries = 0; // what a catch-up of complete entries carried
  for (auto& [name, fields] : delta["services"].items()) {
    complete_entries += name.size() + 3 + compiler_.services().at(name).json().size();
    ASSERT_EQ(fields.size(), 1u) << name << ": " << fields;
    ASSERT_EQ(fields["endpoints_added"].size(), size_t(kBurst)) << name;
  }
  EXPECT_EQ(delta["services"]["svc7"]["endpoints_added"][0], json::parse(R"("10.1.7.1:30000")"));
  std::printf("catch-up after %d registrations over %d services of %d: %zu bytes "
              "(complete entries: %zu bytes)\n",
              kServices * kBurst, kServices, kInstances, text.size(), complete_entries);
  EXPECT_LT(text.size() * 5, complete_entries);

  // One more flush changes a single service: a stream one flush behind gets only that.
  const uint64_t last = compiler_.version();
  apply(health("n1", "svc3-new4", CheckStatus::kCritical));
  compiler_.flush();
  json one = json::parse(*compiler_.deltaSince(last));
  EXPECT_EQ(one["services"], json::parse(R"({"svc3":{"endpoints_removed":["10.1.3.1:30004"]}})"));
}

TEST_F(MeshCompilerTest, CatchUpPastTheEndpointTombstoneBoundSendsTheFullList) {
  BoundedCompiler c(catalog_, 4);
  for (int i = 0; i < 20; ++i) {
    apply(instance("n1", "10.0.0.1", "orders", "o-" + std::to_string(i), uint16_t(9000 + i),
                   CheckStatus::kPassing));
    apply(instance("n1", "10.0.0.1", "users", "u-" + std::to_string(i), uint16_t(7000 + i),
                   CheckStatus::kPassing));
  }
  c->rebuild();
  std::map<uint64_t, json> at;
  auto record = [&] { at[c->version()] = snapshotJson(*c); };
  auto down = [&](std::initializer_list<int> ids) {
    for (int i : ids)
      apply(health("n1", "o-" + std::to_string(i), CheckStatus::kCritical));
  };
  record();
  const uint64_t v0 = c->version();
  down({0});
  apply(health("n1", "u-0", CheckStatus::kCritical));
  ASSERT_NE(c->flush(), nullptr);
  record();
  const uint64_t v1 = c->version();
  down({1});
  c->flush();
  record();
  const uint64_t v2 = c->version();
  down({2, 3});
  c->flush();
  record();
  const uint64_t v3 = c->version();
  // Four removals remembered, the bound: the oldest base still gets them.
  json d = checkCatchUp(*c, at[v0], v0);
  EXPECT_EQ(d["services"]["orders"],
            json::parse(R"({"endpoints_removed":["10.0.0.1:9000","10.0.0.1:9001",
                                                 "10.0.0.1:9002","10.0.0.1:9003"]})"));

  // A fifth: the oldest (o-0, at v1) is forgotten, so a base before v1 gets orders' full
  // list; users (which has its own removals) and later bases stay endpoint-level.
  down({4});
  c->flush();
  record();
  d = checkCatchUp(*c, at[v0], v0);
  EXPECT_EQ(d["services"]["orders"].size(), 4u) << d;
  EXPECT_EQ(d["services"]["orders"]["endpoints"].size(), 15u) << d;
  EXPECT_EQ(d["services"]["users"], json::parse(R"({"endpoints_removed":["10.0.0.1:7000"]})"));
  d = checkCatchUp(*c, at[v1], v1);
  EXPECT_EQ(d["services"]["orders"]["endpoints_removed"].size(), 4u) << d;

  // Two at once (six remembered): the two oldest go, and with them every removal as old as
  // the newer of them (o-2 and o-3, both at v3): bases before v3 get the full list.
  down({5, 6});
  c->flush();
  record();
  for (uint64_t base : {v1, v2}) {
    d = checkCatchUp(*c, at[base], base);
    EXPECT_TRUE(d["services"]["orders"].contains("endpoints")) << base << ": " << d;
  }
  d = checkCatchUp(*c, at[v3], v3);
  EXPECT_EQ(d["services"]["orders"],
            json::parse(R"({"endpoints_removed":["10.0.0.1:9004","10.0.0.1:9005",
                                                 "10.0.0.1:9006"]})"));

  // An address that comes back is no longer a removal; it is an addition.
  apply(health("n1", "o-5", CheckStatus::kPassing));
  c->flush();
  d = checkCatchUp(*c, at[v3], v3);
  EXPECT_EQ(d["services"]["orders"], json::parse(R"({"endpoints_added":["10.0.0.1:9005"],
                            "endpoints_removed":["10.0.0.1:9004","10.0.0.1:9006"]})"));
}

// The property: for random changes, deltaSince(base) applied to the state at `base` gives the
// current snapshot for every earlier version, with the default bound and with a tiny one.
TEST_F(MeshCompilerTest, CatchUpFromEveryEarlierVersionGivesTheSnapshot) {
  constexpr int kServices = 4, kIds = 8;
  for (uint32_t seed = 1; seed <= 6; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    std::mt19937 rng(seed);
    auto pick = [&](int n) { return int(std::uniform_int_distribution<int>(0, n - 1)(rng)); };
    registry::Catalog catalog;
    BoundedCompiler wide_compiler(catalog, MeshCompiler::kMaxEndpointTombstones);
    BoundedCompiler tight_compiler(catalog, 2);
    MeshCompiler& wide = *wide_compiler;
    MeshCompiler& tight = *tight_compiler;
    auto write = [&](const registry::WriteRequest& r) {
      auto res = catalog.apply(r);
      ASSERT_TRUE(res.ok()) << res.error().message();
    };
    auto writeResource = [&](const std::string& yaml, bool put) {
      auto rs = manifest::loadString(yaml, "test.yaml");
      ASSERT_TRUE(rs.ok()) << rs.error().message();
      for (const auto& r : *rs) {
        if (put) {
          registry::KvPutRequest kv;
          kv.key = resourceKey(r.id());
          kv.value = manifest::toJson(r).dump();
          write(kv);
        } else {
          registry::KvDeleteRequest kv;
          kv.key = resourceKey(r.id());
          write(kv);
        }
      }
    };
    std::map<std::string, std::string> registered; // instance id -> node
    std::string n1_address = "10.0.0.1";           // moved by case 10
    auto id = [](int s, int i) { return "s" + std::to_string(s) + "-" + std::to_string(i); };
    auto deregister = [&](int s, int i) {
      if (!registered.count(id(s, i)))
        return;
      registry::DeregisterRequest del;
      del.node = registered[id(s, i)];
      del.service_id = id(s, i);
      write(del);
      registered.erase(id(s, i));
    };
    auto registerOne = [&](int s, int i) {
      const std::string node = pick(2) == 0 ? "n1" : "n2";
      if (registered.count(id(s, i)) && registered[id(s, i)] != node)
        deregister(s, i); // moves to the other node
      // Few ports and addresses: re-registrations move, reweight or share an address.
      registry::RegisterRequest r =
          instance(node, node == "n1" ? n1_address : "10.0.0.2", "s" + std::to_string(s), id(s, i),
                   uint16_t(1000 * (s + 1) + pick(6)),
                   pick(4) == 0 ? CheckStatus::kCritical : CheckStatus::kPassing,
                   pick(3) == 0 ? "10.9.0." + std::to_string(pick(2) + 1) : "");
      r.service->weights.passing = 1 + pick(3);
      write(r);
      registered[id(s, i)] = node;
    };
    for (int s = 0; s < kServices; ++s)
      for (int i = 0; i < kIds / 2; ++i)
        registerOne(s, i);
    wide.rebuild();
    tight.rebuild();
    std::map<uint64_t, json> wide_at, tight_at;
    wide_at[wide.version()] = snapshotJson(wide);
    tight_at[tight.version()] = snapshotJson(tight);
    size_t endpoint_level = 0, full_entries_of_kept = 0;

    for (int step = 0; step < 60; ++step) {
      for (int ops = 1 + pick(3); ops > 0; --ops) {
        const int s = pick(kServices), i = pick(kIds);
        switch (pick(12)) {
        case 0:
        case 1:
        case 2:
          registerOne(s, i); // new, moved or reweighted
          break;
        case 3:
        case 4:
          if (registered.count(id(s, i)))
            write(health(registered[id(s, i)], id(s, i),
                         pick(2) == 0 ? CheckStatus::kCritical : CheckStatus::kPassing));
          break;
        case 5:
        case 6:
          deregister(s, i);
          break;
        case 7: // the service goes (unless a resource keeps it)
          for (int k = 0; k < kIds; ++k)
            deregister(s, k);
          break;
        case 8: // a definition change (or the service defined without instances)
          writeResource(fmt::format(R"(apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: pol-s{}}}
spec:
  targetRef: {{kind: Service, name: s{}}}
  connectTimeout: {}s
)",
                                    s, s, 1 + pick(3)),
                        pick(3) != 0);
          break;
        case 9: // a node check: every instance of n2 at once
          write(nodeCheck("n2", "10.0.0.2", "serfHealth", "",
                          pick(2) == 0 ? CheckStatus::kCritical : CheckStatus::kPassing));
          break;
        case 11: { // the check "gate" of n1 moves: to an instance (maybe absent) or the node
          std::string owner = pick(3) == 0 ? "" : id(pick(kServices), pick(kIds));
          if (auto it = registered.find(owner); it == registered.end() || it->second != "n1")
            owner.clear(); // a service check names an instance of its node
          write(nodeCheck("n1", n1_address, "gate", owner,
                          pick(2) == 0 ? CheckStatus::kCritical : CheckStatus::kPassing));
          break;
        }
        case 10: { // n1 moves: the instances without their own address move with it
          n1_address = n1_address == "10.0.0.1" ? "10.0.0.3" : "10.0.0.1";
          registry::RegisterRequest r;
          r.node.name = "n1";
          r.node.address = n1_address;
          write(r);
          break;
        }
        }
      }
      auto wd = wide.flush();
      auto td = tight.flush();
      ASSERT_EQ(wd == nullptr, td == nullptr);
      { // Edited instance by instance, the state is what a compile from scratch makes.
        MeshCompiler fresh(catalog);
        fresh.rebuild();
        ASSERT_EQ(fresh.services(), wide.services()) << "step " << step;
        ASSERT_EQ(fresh.services(), tight.services()) << "step " << step;
        ASSERT_EQ(fresh.gateways(), wide.gateways()) << "step " << step;
        for (const auto& [name, e] : wide.services())
          ASSERT_EQ(e.endpointsJson().size(), e.endpointsJsonSize()) << name << " " << step;
      }
      if (!wd)
        continue;
      ASSERT_EQ(wide.version(), tight.version());
      wide_at[wide.version()] = snapshotJson(wide);
      tight_at[tight.version()] = snapshotJson(tight);
      for (auto* run : {&wide_at, &tight_at}) {
        MeshCompiler& c = run == &wide_at ? wide : tight;
        for (const auto& [base, state] : *run) {
          if (base == c.version())
            continue;
          json delta = checkCatchUp(c, state, base);
          if (::testing::Test::HasFailure())
            return;
          for (auto& [name, fields] : delta["services"].items()) {
            if (!state["services"].contains(name))
              continue;
            if (fields.contains("endpoints_added") || fields.contains("endpoints_removed"))
              ++endpoint_level;
            else
              ++full_entries_of_kept;
          }
        }
      }
    }
    // The runs went through both kinds (else the property above would prove little).
    EXPECT_GT(endpoint_level, 0u);
    EXPECT_GT(full_entries_of_kept, 0u);
  }
}

// An endpoint taken out and put back as it was within one flush (here another instance at the
// same address and weight takes over) keeps the version it had: a catch-up from before it was
// added still carries it.
TEST_F(MeshCompilerTest, EndpointPutBackInOneFlushKeepsItsVersion) {
  for (int i = 0; i < 6; ++i)
    apply(instance("n1", "10.0.0.1", "web", "web-" + std::to_string(i), uint16_t(9000 + i),
                   CheckStatus::kPassing));
  compiler_.rebuild();
  const uint64_t base = compiler_.version();
  const json at_base = snapshotJson(compiler_);
  apply(instance("n1", "10.0.0.1", "web", "x", 8080, CheckStatus::kPassing, "10.0.0.7"));
  apply(instance("n1", "10.0.0.1", "web", "web-new", 9100, CheckStatus::kPassing));
  flush();
  registry::DeregisterRequest del;
  del.node = "n1";
  del.service_id = "x";
  apply(del);
  apply(instance("n1", "10.0.0.1", "web", "y", 8080, CheckStatus::kPassing, "10.0.0.7"));
  EXPECT_TRUE(flush().is_null());
  checkCatchUp(compiler_, at_base, base);
}

} // namespace
} // namespace trellis::control::mesh
