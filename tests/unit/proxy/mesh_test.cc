#include <algorithm>
#include <cctype>
#include <chrono>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <asio/ip/tcp.hpp>
#include <asio/write.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/dispatcher.h"
#include "base/time.h"
#include "proxy/mesh/mesh_client.h"
#include "proxy/mesh/mesh_config.h"
#include "proxy/mesh/mesh_state.h"
#include "proxy/mesh/registration.h"

namespace trellis::proxy::mesh {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

net::SocketAddress addr(const std::string& s) {
  return net::parseSocketAddress(s).value();
}

json service(std::vector<std::string> eps, std::string protocol = "http") {
  json e = json::array();
  for (auto& a : eps)
    e.push_back({{"address", a}, {"weight", 1}});
  return {{"protocol", protocol},
          {"cluster", {{"lb", "least_request"}, {"connect_timeout", "1s"}}},
          {"endpoints", e},
          {"routes", json::array({{{"match", {{"prefix", "/"}}},
                                   {"cluster", "SELF"},
                                   {"timeout", "15s"},
                                   {"retries", {{"attempts", 1}, {"on", {"connect-failure"}}}}}})}};
}

// `service()` with its route pointing at `name`.
json named(const std::string& name, json s) {
  if (s["routes"].is_array())
    for (auto& r : s["routes"])
      if (r.value("cluster", "") == "SELF")
        r["cluster"] = name;
  return s;
}

std::string snapshotLine(uint64_t version, json services, json gateways = json::object()) {
  return json{{"type", "snapshot"},
              {"version", version},
              {"stream", "s1"},
              {"services", services},
              {"gateways", gateways}}
      .dump();
}

std::string deltaLine(uint64_t version, json services, json removed = json::array()) {
  return json{{"type", "delta"}, {"version", version}, {"services", services}, {"removed", removed}}
      .dump();
}

class FakeApplier : public ConfigApplier {
public:
  Status apply(std::shared_ptr<const Snapshot> s) override {
    calls++;
    if (fail)
      return makeError(ErrorCode::kUnavailable, "listener upstream-orders: address in use");
    current = std::move(s);
    return okStatus();
  }
  std::shared_ptr<const Snapshot> current;
  int calls = 0;
  bool fail = false;
};

ProxySpec sidecarSpec() {
  ProxySpec s;
  s.kind = ProxySpec::Kind::kSidecar;
  s.service = "web";
  s.app = addr("127.0.0.1:7000");
  s.upstreams.push_back(Upstream{"orders", addr("127.0.0.1:9191")});
  s.http_proxy = addr("127.0.0.1:9300");
  return s;
}

std::vector<std::string> endpointsOf(const Snapshot& s, const std::string& cluster) {
  std::vector<std::string> out;
  const Cluster* c = s.findCluster(cluster);
  if (!c)
    return {"<no cluster>"};
  for (const auto& e : c->endpoints)
    out.push_back(e.address.toString());
  return out;
}

// ---- messages and state ------------------------------------------------------------------------

TEST(MeshMessage, RejectsMalformedLinesWithAReason) {
  EXPECT_FALSE(parseMessage("{").ok());
  EXPECT_FALSE(parseMessage("[1]").ok());
  auto e = parseMessage(R"({"type":"patch","version":1})");
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message().find("unknown type \"patch\""), std::string::npos);
  e = parseMessage(R"({"type":"delta","version":-3})");
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message().find("version"), std::string::npos);
  e = parseMessage(R"({"type":"snapshot","version":3})");
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message().find("stream"), std::string::npos);
  auto hb = parseMessage(R"({"type":"heartbeat","version":7})");
  ASSERT_TRUE(hb.ok());
  EXPECT_EQ(hb->type, MessageType::kHeartbeat);
  EXPECT_EQ(hb->version, 7u);
}

TEST(MeshState, DeltaChangesOnlyWhatItCarriesAndKeepsRevisions) {
  MeshState st;
  ASSERT_TRUE(
      st.applySnapshot(
            parseMessage(snapshotLine(10, {{"orders", named("orders", service({"127.0.0.1:1001"}))},
                                           {"users", named("users", service({"127.0.0.1:2001"}))}}))
                .value())
          .ok());
  const uint64_t def_rev = st.services().at("orders").definition_rev;
  const uint64_t users_ep = st.services().at("users").endpoints_rev;
  ASSERT_TRUE(
      st.applyDelta(
            parseMessage(deltaLine(11, {{"orders", {{"endpoints", {"127.0.0.1:1002"}}}}})).value())
          .ok());
  EXPECT_EQ(st.version(), 11u);
  EXPECT_EQ(st.services().at("orders").definition_rev, def_rev);
  EXPECT_EQ(st.services().at("orders").endpoints, json({"127.0.0.1:1002"}));
  EXPECT_EQ(st.services().at("users").endpoints_rev, users_ep);
  // Removal, and an old or equal version is refused without touching the state.
  ASSERT_TRUE(st.applyDelta(parseMessage(deltaLine(12, json::object(), {"users"})).value()).ok());
  EXPECT_EQ(st.services().count("users"), 0u);
  EXPECT_FALSE(st.applyDelta(parseMessage(deltaLine(12, json::object(), {"orders"})).value()).ok());
  EXPECT_EQ(st.services().count("orders"), 1u);
  // Structural errors leave the state as it was.
  auto bad = parseMessage(R"({"type":"delta","version":13,"services":{"orders":[1]}})").value();
  EXPECT_FALSE(st.applyDelta(bad).ok());
  EXPECT_EQ(st.version(), 12u);
  // A snapshot with identical content keeps revisions (nothing is re-parsed on resync).
  const uint64_t ep_rev = st.services().at("orders").endpoints_rev;
  json again{{"orders", st.services().at("orders").cluster.is_null() ? json() : json()}};
  json full = named("orders", service({"127.0.0.1:1001"}));
  full["endpoints"] = st.services().at("orders").endpoints;
  ASSERT_TRUE(st.applySnapshot(parseMessage(snapshotLine(20, {{"orders", full}})).value()).ok());
  EXPECT_EQ(st.services().at("orders").definition_rev, def_rev);
  EXPECT_EQ(st.services().at("orders").endpoints_rev, ep_rev);
}

// Random endpoint changes against a plain model (a map by address: removals first, then
// additions, the last addition of an address winning), from stored lists in and out of order.
// Small lists take mostly the merge pass; long ones with few changes mostly the in-place path
// (binary search per change).
class EndpointChangesModel : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(EndpointChangesModel, MatchesAModel) {
  const auto [addresses, max_initial] = GetParam();
  std::mt19937 rng(5);
  auto address = [&] { return "10.0.0." + std::to_string(1 + rng() % addresses) + ":80"; };
  auto endpoint = [&](const std::string& a) {
    return rng() % 3 == 0 ? json(a) : json{{"address", a}, {"weight", 1 + rng() % 3}};
  };
  auto addressOf = [](const json& ep) {
    return ep.is_string() ? ep.get<std::string>() : ep["address"].get<std::string>();
  };
  for (int round = 0; round < 300; ++round) {
    MeshState st;
    json base; // the list as it was at the last rebase of the origins
    std::map<std::string, json> model;
    json stored = json::array();
    for (int i = 0, n = static_cast<int>(rng() % max_initial); i < n; ++i) {
      const std::string a = address();
      if (model.emplace(a, endpoint(a)).second)
        stored.push_back(model[a]);
    }
    if (rng() % 2 == 0) // the server sorts; another server might not
      std::shuffle(stored.begin(), stored.end(), rng);
    json svc = named("orders", service({}));
    svc["endpoints"] = stored;
    ASSERT_TRUE(st.applySnapshot(parseMessage(snapshotLine(1, {{"orders", svc}})).value()).ok());
    base = st.services().at("orders").endpoints;
    for (uint64_t v = 2; v < 12; ++v) {
      if (rng() % 3 == 0) { // a reader built on the state
        st.rebaseEndpointOrigins();
        base = st.services().at("orders").endpoints;
      }
      json added = json::array(), removed = json::array();
      for (int i = 0, n = static_cast<int>(rng() % 5); i < n; ++i)
        removed.push_back(address());
      for (int i = 0, n = static_cast<int>(rng() % 5); i < n; ++i)
        added.push_back(endpoint(address()));
      const std::map<std::string, json> model_before = model;
      for (const auto& a : removed)
        model.erase(a.get<std::string>());
      for (const auto& ep : added)
        model[addressOf(ep)] = ep;
      json change = json::object();
      if (!added.empty() || rng() % 2 == 0)
        change["endpoints_added"] = added;
      if (!removed.empty() || rng() % 2 == 0)
        change["endpoints_removed"] = removed;
      if (change.empty())
        continue;
      json delta{{"type", "delta"}, {"version", v}, {"services", {{"orders", change}}}};
      const uint64_t rev = st.services().at("orders").endpoints_rev;
      ASSERT_TRUE(st.applyDelta(parseMessage(delta.dump()).value()).ok()) << delta.dump();
      json want = json::array();
      for (const auto& [a, ep] : model)
        want.push_back(ep);
      ASSERT_EQ(st.services().at("orders").endpoints, want) << delta.dump();
      // The revision moves exactly when the content did (putting a list in order is no change).
      EXPECT_EQ(st.services().at("orders").endpoints_rev != rev, model_before != model)
          << delta.dump();
      // Origins, where known, say where each element was at the last rebase: an unchanged
      // element is there as it is now, a changed one has its address there; each place once.
      const ServiceEntry& e = st.services().at("orders");
      if (e.origins.base_rev == 0)
        continue; // lost when an unordered list was put in order
      if (!e.origins.edited) {
        EXPECT_EQ(e.endpoints, base) << delta.dump();
        continue;
      }
      ASSERT_EQ(e.origins.index.size(), e.endpoints.size()) << delta.dump();
      std::set<uint32_t> places;
      for (size_t i = 0; i < e.endpoints.size(); ++i) {
        const uint32_t o = e.origins.index[i];
        if (o == EndpointOrigins::kNew)
          continue;
        const uint32_t at = o & ~EndpointOrigins::kChanged;
        ASSERT_LT(at, base.size()) << delta.dump();
        EXPECT_TRUE(places.insert(at).second) << delta.dump();
        if (o == at) {
          EXPECT_EQ(e.endpoints[i], base[at]) << delta.dump();
        } else {
          EXPECT_EQ(addressOf(e.endpoints[i]), addressOf(base[at])) << delta.dump();
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(MeshState, EndpointChangesModel,
                         ::testing::Values(std::pair{12, 8}, std::pair{60, 48}));

// A stored list that repeats an address (the configuration rejects it) is changed by the
// merge pass for as long as the repeat stays: a removal takes every copy out, as a complete
// list would, not the first one found.
TEST(MeshState, RepeatedStoredAddressesAreRemovedEveryCopy) {
  MeshState st;
  json svc = named("orders", service({}));
  json stored = json::array({"10.0.0.1:1", "10.0.0.1:1"});
  for (int p = 2; p <= 9; ++p)
    stored.push_back("10.0.0.1:" + std::to_string(p));
  svc["endpoints"] = stored;
  ASSERT_TRUE(st.applySnapshot(parseMessage(snapshotLine(1, {{"orders", svc}})).value()).ok());
  auto change = [&](uint64_t v, const char* key, const char* address) {
    json delta{{"type", "delta"},
               {"version", v},
               {"services", {{"orders", {{key, json::array({address})}}}}}};
    ASSERT_TRUE(st.applyDelta(parseMessage(delta.dump()).value()).ok());
  };
  change(2, "endpoints_added", "10.0.0.1:99");
  change(3, "endpoints_removed", "10.0.0.1:1");
  const json& now = st.services().at("orders").endpoints;
  EXPECT_EQ(std::count(now.begin(), now.end(), json("10.0.0.1:1")), 0) << now.dump();
  EXPECT_EQ(now.size(), 9u) << now.dump();
}

// readEndpointDelta() takes exactly the endpoint-only deltas of known shape and leaves
// everything else to parseMessage().
TEST(MeshState, EndpointDeltaReaderTakesOnlyItsShape) {
  auto d = readEndpointDelta(
      R"( { "removed" : [ ], "services":{"users":{"endpoints_removed":["127.0.0.1:2001"]},)"
      R"("orders":{"endpoints_added":["10.0.0.1:1","10.0.0.1:2"],"endpoints_removed":[]}},)"
      R"("version":18446744073709551615,"gateways":{},"removed_gateways":[],"type":"delta"} )");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->version, UINT64_MAX);
  ASSERT_EQ(d->services.size(), 2u);
  EXPECT_EQ(d->services[0].service, "orders"); // ordered by name
  using Views = std::vector<std::string_view>;
  EXPECT_EQ(d->services[0].added, (Views{"10.0.0.1:1", "10.0.0.1:2"}));
  EXPECT_EQ(d->services[0].removed, Views{});
  EXPECT_FALSE(d->services[1].added.has_value());
  EXPECT_EQ(d->services[1].removed, Views{"127.0.0.1:2001"});
  EXPECT_TRUE(readEndpointDelta(R"({"type":"delta","version":3})").has_value());

  for (
      const char* other : {
          R"({"type":"heartbeat","version":3})",
          R"({"type":"delta","version":3,"removed":["gone"]})",
          R"({"type":"delta","version":3,"gateways":{"edge":{"routes":[]}}})",
          R"({"type":"delta","version":3,"removed_gateways":["edge"]})",
          R"({"type":"delta","version":3,"gateways":{},"gateways":{}})",
          R"({"type":"delta","version":3,"services":{"a":{"endpoints":["1.1.1.1:1"]}}})",
          R"({"type":"delta","version":3,"services":{"a":{"endpoints_added":[{"address":"1.1.1.1:1","weight":2}]}}})",
          R"({"type":"delta","version":3,"services":{"a":{"cluster":{},"endpoints_added":[]}}})",
          R"({"type":"delta","version":3,"services":{"a":{}}})",
          R"({"type":"delta","version":3,"services":{"a":{"endpoints_added":[],"endpoints_added":[]}}})",
          R"({"type":"delta","version":3,"services":{"a":{"endpoints_added":[]},"a":{"endpoints_added":[]}}})",
          R"({"type":"delta","version":3,"services":{"a\u0062":{"endpoints_added":[]}}})",
          R"({"type":"delta","version":3,"services":{"é":{"endpoints_added":[]}}})",
          R"({"type":"delta","version":03})",
          R"({"type":"delta","version":3.0})",
          R"({"type":"delta","version":-3})",
          R"({"type":"delta","version":18446744073709551616})",
          R"({"type":"delta","type":"delta","version":3})",
          R"({"type":"delta"})",
          R"({"version":3})",
          R"({"type":"delta","version":3} x)",
          R"({"type":"delta","version":3)",
          R"({"type":"delta","version":3,})",
          R"([])",
          "",
      })
    EXPECT_FALSE(readEndpointDelta(other).has_value()) << other;
}

// Applying an endpoint-only delta through readEndpointDelta()/applyEndpointDelta() leaves the
// state exactly as parseMessage()/applyDelta() does: lists, order flags, origins, revisions
// and the change log, over random deltas with rebases in between.
TEST(MeshState, EndpointDeltaFastPathEqualsTheGeneralOne) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed);
    auto addr = [&] { return fmt::format("10.0.{}.{}:80", rng() % 3, rng() % 40); };
    json services = json::object();
    for (const char* name : {"a", "b", "c"}) {
      std::vector<std::string> eps;
      for (int i = 0; i < 20; ++i)
        eps.push_back(addr());
      services[name] = named(name, service(eps));
    }
    MeshState general, fast;
    const std::string snap = snapshotLine(1, services);
    ASSERT_TRUE(general.applySnapshot(parseMessage(snap).value()).ok());
    ASSERT_TRUE(fast.applySnapshot(parseMessage(snap).value()).ok());
    uint64_t since = general.nextRev();
    for (uint64_t v = 2; v < 80; ++v) {
      json changes = json::object();
      for (const char* name : {"a", "b", "c"}) {
        if (rng() % 2 != 0)
          continue;
        json entry = json::object();
        auto list = [&] {
          json l = json::array();
          for (uint32_t n = rng() % 4; n > 0; --n)
            l.push_back(addr());
          return l;
        };
        if (rng() % 3 != 0)
          entry["endpoints_added"] = list();
        if (rng() % 3 != 0 || entry.empty())
          entry["endpoints_removed"] = list();
        changes[name] = entry;
      }
      const std::string line = deltaLine(v, changes);
      ASSERT_TRUE(general.applyDelta(parseMessage(line).value()).ok()) << line;
      auto d = readEndpointDelta(line);
      ASSERT_TRUE(d.has_value()) << line;
      ASSERT_TRUE(fast.applyEndpointDelta(*d)) << line;
      EXPECT_FALSE(fast.applyEndpointDelta(*d)); // the same version again: not above
      ASSERT_EQ(general.version(), fast.version());
      ASSERT_EQ(general.nextRev(), fast.nextRev());
      ASSERT_EQ(general.servicesNamedSince(since), fast.servicesNamedSince(since));
      for (const auto& [name, g] : general.services()) {
        const ServiceEntry& f = fast.services().at(name);
        ASSERT_EQ(g.endpoints, f.endpoints) << name;
        ASSERT_EQ(g.endpoints_in_order, f.endpoints_in_order) << name;
        ASSERT_EQ(g.endpoints_rev, f.endpoints_rev) << name;
        ASSERT_EQ(g.definition_rev, f.definition_rev) << name;
        ASSERT_EQ(g.origins.base_rev, f.origins.base_rev) << name;
        ASSERT_EQ(g.origins.edited, f.origins.edited) << name;
        ASSERT_EQ(g.origins.index, f.origins.index) << name;
      }
      if (rng() % 4 == 0) {
        general.rebaseEndpointOrigins();
        fast.rebaseEndpointOrigins();
        since = general.nextRev();
      }
    }
    // A service the state does not have is the general path's (a new one comes complete).
    auto unknown =
        readEndpointDelta(deltaLine(100, {{"zz", {{"endpoints_added", json::array()}}}}));
    ASSERT_TRUE(unknown.has_value());
    EXPECT_FALSE(fast.applyEndpointDelta(*unknown));
    EXPECT_EQ(fast.version(), 79u);
  }
}

TEST(MeshState, EndpointChangesApplyByAddressAndEqualTheFullList) {
  MeshState st;
  json orders = named("orders", service({}));
  orders["endpoints"] = json::parse(R"([{"address":"10.0.0.1:1001","weight":1},
                                        {"address":"10.0.0.1:1002","weight":1},
                                        {"address":"10.0.0.1:1003","weight":1}])");
  ASSERT_TRUE(
      st.applySnapshot(
            parseMessage(snapshotLine(10, {{"orders", orders},
                                           {"users", named("users", service({"127.0.0.1:2001"}))}}))
                .value())
          .ok());
  const uint64_t def_rev = st.services().at("orders").definition_rev;
  const uint64_t ep_rev = st.services().at("orders").endpoints_rev;
  const uint64_t users_ep = st.services().at("users").endpoints_rev;
  // One removed, one new (sorted in between), one with a new weight (replacing), one removed
  // address that is not there and one added endpoint that is already there, unchanged.
  auto d = parseMessage(R"({"type":"delta","version":11,"services":{"orders":{
      "endpoints_added":[{"address":"10.0.0.1:1003","weight":5},
                         {"address":"10.0.0.1:1001","weight":1},
                         {"address":"10.0.0.1:1000","weight":2}],
      "endpoints_removed":["10.0.0.1:1002","10.0.0.9:9"]}},"removed":[]})");
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(st.applyDelta(*d).ok());
  EXPECT_EQ(st.services().at("orders").endpoints,
            json::parse(R"([{"address":"10.0.0.1:1000","weight":2},
                            {"address":"10.0.0.1:1001","weight":1},
                            {"address":"10.0.0.1:1003","weight":5}])"));
  const uint64_t ep_rev2 = st.services().at("orders").endpoints_rev;
  EXPECT_GT(ep_rev2, ep_rev);
  EXPECT_EQ(st.services().at("orders").definition_rev, def_rev);
  EXPECT_EQ(st.services().at("users").endpoints_rev, users_ep);

  // A change that changes nothing (present again, absent removed) keeps the revision; an
  // address-only element counts as that address.
  d = parseMessage(R"({"type":"delta","version":12,"services":{"orders":{
      "endpoints_added":[{"address":"10.0.0.1:1001","weight":1}],
      "endpoints_removed":["10.0.0.1:1002"]}}})");
  ASSERT_TRUE(st.applyDelta(*d).ok());
  EXPECT_EQ(st.services().at("orders").endpoints_rev, ep_rev2);
  d = parseMessage(R"({"type":"delta","version":13,"services":{
      "users":{"endpoints_removed":["127.0.0.1:2001"],"endpoints_added":["127.0.0.1:2002"]}}})");
  ASSERT_TRUE(st.applyDelta(*d).ok());
  EXPECT_EQ(st.services().at("users").endpoints, json::parse(R"(["127.0.0.1:2002"])"));
  EXPECT_GT(st.services().at("users").endpoints_rev, users_ep);

  // Errors name the service and field, and leave the whole state as it was (the first
  // service of the delta is not applied either).
  const json before = st.services().at("orders").endpoints;
  auto expectRejected = [&](const std::string& services, const std::string& error) {
    auto m = parseMessage(R"({"type":"delta","version":14,"services":)" + services + "}");
    ASSERT_TRUE(m.ok());
    Status r = st.applyDelta(*m);
    ASSERT_FALSE(r.ok()) << services;
    EXPECT_EQ(r.error().message(), error);
    EXPECT_EQ(st.version(), 13u);
    EXPECT_EQ(st.services().at("orders").endpoints, before);
    EXPECT_EQ(st.services().at("users").endpoints, json::parse(R"(["127.0.0.1:2002"])"));
  };
  expectRejected(R"({"users":{"endpoints":[]},
                     "orders":{"endpoints":[],"endpoints_removed":["10.0.0.1:1001"]}})",
                 "services.orders: \"endpoints\" together with \"endpoints_removed\" (a delta "
                 "carries either the whole list or the change)");
  expectRejected(R"({"orders":{"endpoints":[],"endpoints_added":[]}})",
                 "services.orders: \"endpoints\" together with \"endpoints_added\" (a delta "
                 "carries either the whole list or the change)");
  expectRejected(R"({"orders":{"endpoints_added":{"address":"10.0.0.1:1"}}})",
                 "services.orders.endpoints_added: must be a list of endpoints, got object");
  expectRejected(R"({"orders":{"endpoints_added":[{"weight":1}]}})",
                 "services.orders.endpoints_added[0]: must be an address string or an object "
                 "with a string \"address\", got object");
  expectRejected(R"({"orders":{"endpoints_removed":"10.0.0.1:1001"}})",
                 "services.orders.endpoints_removed: must be a list of addresses, got string");
  expectRejected(R"({"orders":{"endpoints_removed":["10.0.0.1:1001",{"address":"x"}]}})",
                 "services.orders.endpoints_removed[1]: must be a string, got object");
}

// ---- session: snapshot, delta, removal, rejection ---------------------------------------------

class SessionTest : public ::testing::Test {
protected:
  SessionTest() : builder(sidecarSpec()), session(builder, applier) {}
  ConfigBuilder builder;
  FakeApplier applier;
  MeshSession session;
};

TEST_F(SessionTest, SnapshotThenDeltasBuildTheConfiguration) {
  auto out = session.handleLine(snapshotLine(
      5, {{"orders", named("orders", service({"127.0.0.1:1001", "127.0.0.1:1002"}))}}));
  ASSERT_TRUE(out.stream.ok());
  ASSERT_TRUE(out.ack);
  EXPECT_TRUE(out.ack->accepted);
  EXPECT_EQ(out.ack->version, 5u);
  EXPECT_EQ(out.ack->stream, "s1");
  ASSERT_TRUE(applier.current);
  EXPECT_EQ(endpointsOf(*applier.current, "orders"),
            (std::vector<std::string>{"127.0.0.1:1001", "127.0.0.1:1002"}));
  EXPECT_EQ(applier.current->findCluster("orders")->lb.policy, LbPolicy::kLeastRequest);
  EXPECT_EQ(applier.current->findCluster("orders")->connect_timeout, 1s);

  out = session.handleLine(deltaLine(6, {{"orders", {{"endpoints", {"127.0.0.1:1003"}}}}}));
  ASSERT_TRUE(out.ack && out.ack->accepted);
  EXPECT_EQ(endpointsOf(*applier.current, "orders"), (std::vector<std::string>{"127.0.0.1:1003"}));
  EXPECT_EQ(session.appliedVersion(), 6u);

  // An endpoint-level change rebuilds the cluster with the list it gives.
  out = session.handleLine(deltaLine(
      7, {{"orders",
           {{"endpoints_added", json::parse(R"([{"address":"127.0.0.1:1001","weight":3}])")},
            {"endpoints_removed", {"127.0.0.1:1003"}}}}}));
  ASSERT_TRUE(out.ack && out.ack->accepted) << (out.ack ? out.ack->error : "");
  EXPECT_EQ(endpointsOf(*applier.current, "orders"), (std::vector<std::string>{"127.0.0.1:1001"}));
  EXPECT_EQ(applier.current->findCluster("orders")->endpoints.at(0).weight, 3u);
  // Both forms for one service break the stream (the next message must be a snapshot).
  out = session.handleLine(deltaLine(
      8, {{"orders", {{"endpoints", json::array()}, {"endpoints_removed", {"127.0.0.1:1001"}}}}}));
  ASSERT_FALSE(out.stream.ok());
  ASSERT_TRUE(out.ack);
  EXPECT_FALSE(out.ack->accepted);
  EXPECT_NE(out.ack->error.find("services.orders: \"endpoints\" together with"), std::string::npos)
      << out.ack->error;
  EXPECT_EQ(endpointsOf(*applier.current, "orders"), (std::vector<std::string>{"127.0.0.1:1001"}));
  out = session.handleLine(
      snapshotLine(8, {{"orders", named("orders", service({"127.0.0.1:1003"}))}}));
  ASSERT_TRUE(out.ack && out.ack->accepted) << (out.ack ? out.ack->error : "");
  EXPECT_EQ(session.appliedVersion(), 8u);

  // Heartbeats produce no ack and change nothing.
  const int calls = applier.calls;
  out = session.handleLine(R"({"type":"heartbeat","version":8})");
  EXPECT_FALSE(out.ack);
  EXPECT_EQ(applier.calls, calls);

  // The removed service's upstream listener still has its cluster: empty, so 503 not 404.
  out = session.handleLine(deltaLine(9, json::object(), {"orders"}));
  ASSERT_TRUE(out.ack && out.ack->accepted);
  EXPECT_TRUE(endpointsOf(*applier.current, "orders").empty());
}

TEST_F(SessionTest, RejectedUpdateKeepsLastGoodAndALaterDeltaFixesIt) {
  ASSERT_TRUE(
      session
          .handleLine(snapshotLine(5, {{"orders", named("orders", service({"127.0.0.1:1001"}))}}))
          .ack->accepted);
  auto good = applier.current;
  // A bad policy: rejected with the service and field named, nothing applied.
  auto out = session.handleLine(deltaLine(
      6, {{"orders", {{"cluster", {{"lb", "round-robbin"}}}, {"endpoints", {"127.0.0.1:1004"}}}}}));
  ASSERT_TRUE(out.stream.ok()) << "a content error must not drop the stream";
  ASSERT_TRUE(out.ack);
  EXPECT_FALSE(out.ack->accepted);
  EXPECT_EQ(out.ack->version, 6u);
  EXPECT_TRUE(out.ack->error.starts_with("services.orders.cluster.lb: unknown policy"))
      << out.ack->error;
  EXPECT_EQ(applier.current, good);
  EXPECT_EQ(session.appliedVersion(), 5u);
  EXPECT_EQ(session.rejected(), 1u);
  // The received state moved on: a delta fixing only the policy gives the new endpoints too.
  out = session.handleLine(deltaLine(7, {{"orders", {{"cluster", {{"lb", "random"}}}}}}));
  ASSERT_TRUE(out.ack && out.ack->accepted) << (out.ack ? out.ack->error : "");
  EXPECT_EQ(endpointsOf(*applier.current, "orders"), (std::vector<std::string>{"127.0.0.1:1004"}));
  EXPECT_EQ(applier.current->findCluster("orders")->lb.policy, LbPolicy::kRandom);

  // Bad endpoints, a bad route and an applier failure are rejected the same way.
  out = session.handleLine(deltaLine(8, {{"orders", {{"endpoints", {"127.0.0.1:0"}}}}}));
  EXPECT_FALSE(out.ack->accepted);
  EXPECT_EQ(out.ack->error, "services.orders.endpoints[0]: port 0 is not allowed for an endpoint");
  out = session.handleLine(deltaLine(
      9, {{"orders",
           {{"endpoints", {"127.0.0.1:1005", "127.0.0.1:1005"}},
            {"routes", json::array({{{"match", {{"prefix", "/"}}}, {"cluster", "orders"}}})}}}}));
  EXPECT_FALSE(out.ack->accepted);
  EXPECT_NE(out.ack->error.find("services.orders.endpoints[1]: 127.0.0.1:1005 is listed twice"),
            std::string::npos)
      << out.ack->error;
  out = session.handleLine(deltaLine(
      10, {{"orders",
            {{"endpoints", {"127.0.0.1:1005"}},
             {"routes", json::array({{{"match", {{"prefx", "/"}}}, {"cluster", "orders"}}})}}}}));
  EXPECT_FALSE(out.ack->accepted);
  EXPECT_TRUE(out.ack->error.starts_with("services.orders.routes[0].match")) << out.ack->error;
  applier.fail = true;
  out = session.handleLine(deltaLine(
      11, {{"orders",
            {{"routes", json::array({{{"match", {{"prefix", "/"}}}, {"cluster", "orders"}}})}}}}));
  EXPECT_FALSE(out.ack->accepted);
  EXPECT_NE(out.ack->error.find("address in use"), std::string::npos);
  EXPECT_EQ(endpointsOf(*applier.current, "orders"), (std::vector<std::string>{"127.0.0.1:1004"}));
  applier.fail = false;
  out = session.handleLine(R"({"type":"heartbeat","version":11})");
  out = session.handleLine(deltaLine(12, {{"users", named("users", service({"127.0.0.1:2001"}))}}));
  ASSERT_TRUE(out.ack->accepted) << out.ack->error;
  EXPECT_EQ(endpointsOf(*applier.current, "orders"), (std::vector<std::string>{"127.0.0.1:1005"}));
}

TEST_F(SessionTest, OutOfSyncStreamsAskForAResync) {
  // A stream must begin with a snapshot.
  auto out = session.handleLine(deltaLine(3, json::object()));
  EXPECT_FALSE(out.stream.ok());
  ASSERT_TRUE(session.handleLine(snapshotLine(5, json::object())).ack->accepted);
  // A delta going backwards: rejected and the stream reopened.
  out = session.handleLine(deltaLine(4, json::object()));
  EXPECT_FALSE(out.stream.ok());
  ASSERT_TRUE(out.ack);
  EXPECT_FALSE(out.ack->accepted);
  // Not JSON at all.
  out = session.handleLine("<html>");
  EXPECT_FALSE(out.stream.ok());
  // After reconnecting, the next stream's snapshot replaces everything.
  session.beginStream();
  EXPECT_FALSE(session.handleLine(deltaLine(9, json::object())).stream.ok());
  out = session.handleLine(
      snapshotLine(9, {{"orders", named("orders", service({"127.0.0.1:1009"}))}}));
  ASSERT_TRUE(out.ack && out.ack->accepted);
  EXPECT_EQ(endpointsOf(*applier.current, "orders"), (std::vector<std::string>{"127.0.0.1:1009"}));
}

// ---- translation -------------------------------------------------------------------------------

TEST(MeshConfig, SidecarListenersAndClusters) {
  ConfigBuilder b(sidecarSpec());
  // Before any state: every listener is there, routing to clusters without endpoints.
  auto empty = b.build(MeshState{});
  ASSERT_TRUE(empty.ok()) << empty.error().message();
  const Snapshot& e = **empty;
  ASSERT_TRUE(e.findListener("inbound"));
  ASSERT_TRUE(e.findListener("upstream-orders"));
  ASSERT_TRUE(e.findListener("http-proxy"));
  EXPECT_TRUE(e.findListener("http-proxy")->routes.empty());
  EXPECT_TRUE(endpointsOf(e, "orders").empty());
  EXPECT_EQ(endpointsOf(e, kLocalAppCluster), (std::vector<std::string>{"127.0.0.1:7000"}));
  const Route& def = e.findListener("upstream-orders")->routes.at(0);
  EXPECT_EQ(def.retries.attempts, 1u);
  EXPECT_TRUE(def.retries.on.connect_failure);
  EXPECT_FALSE(def.retries.on.gateway_error);
  EXPECT_EQ(e.clusters[def.clusters[0].cluster_index].name, "orders");

  // orders is http with a 90/10 canary split onto orders-v2; db is tcp; users has no route
  // of its own (the default one).
  json orders = named("orders", service({"127.0.0.1:1001"}));
  orders["routes"] = json::array(
      {{{"match", {{"prefix", "/"}}},
        {"weighted_clusters", json::array({{{"cluster", "orders"}, {"weight", 90}},
                                           {{"cluster", "orders-v2"}, {"weight", 10}}})}}});
  json users = service({"127.0.0.1:3001"});
  users["routes"] = json::array();
  MeshState st;
  ASSERT_TRUE(
      st.applySnapshot(
            parseMessage(
                snapshotLine(3, {{"orders", orders},
                                 {"orders-v2", named("orders-v2", service({"127.0.0.1:1101"}))},
                                 {"db", named("db", service({"127.0.0.1:5432"}, "tcp"))},
                                 {"users", users}}))
                .value())
          .ok());
  ProxySpec spec = sidecarSpec();
  spec.upstreams.push_back(Upstream{"db", addr("127.0.0.1:15432")});
  ConfigBuilder b2(spec);
  auto built = b2.build(st);
  ASSERT_TRUE(built.ok()) << built.error().message();
  const Snapshot& s = **built;
  EXPECT_EQ(s.source, "mesh version 3");
  const Listener* up = s.findListener("upstream-orders");
  ASSERT_TRUE(up);
  ASSERT_EQ(up->routes.size(), 1u);
  ASSERT_EQ(up->routes[0].clusters.size(), 2u);
  EXPECT_EQ(s.clusters[up->routes[0].clusters[0].cluster_index].name, "orders");
  EXPECT_EQ(s.clusters[up->routes[0].clusters[1].cluster_index].name, "orders-v2");
  EXPECT_EQ(up->routes[0].total_weight, 100u);
  const Listener* db = s.findListener("upstream-db");
  ASSERT_TRUE(db);
  EXPECT_EQ(db->protocol, Protocol::kTcp);
  EXPECT_EQ(s.clusters[db->cluster_index].name, "db");
  // The HTTP proxy routes every http service by Host, and leaves the tcp one out.
  const Listener* hp = s.findListener("http-proxy");
  ASSERT_TRUE(hp);
  std::vector<std::string> hosts;
  for (const auto& r : hp->routes) {
    ASSERT_FALSE(r.match.headers.empty());
    EXPECT_EQ(r.match.headers.back().name, "host");
    hosts.push_back(r.match.headers.back().value);
  }
  EXPECT_EQ(hosts, (std::vector<std::string>{"orders", "orders-v2", "users"}));
  const Route& users_route = hp->routes.back();
  EXPECT_EQ(s.clusters[users_route.clusters[0].cluster_index].name, "users");
  EXPECT_EQ(endpointsOf(s, "users"), (std::vector<std::string>{"127.0.0.1:3001"}));
  // Inbound forwards to the app with no timeout of its own.
  const Listener* in = s.findListener("inbound");
  ASSERT_TRUE(in);
  EXPECT_EQ(in->routes.at(0).timeout, Duration::zero());
  EXPECT_EQ(s.clusters[in->routes[0].clusters[0].cluster_index].name, kLocalAppCluster);
  // What is built loads as a configuration file and gives the same snapshot.
  auto again = loadConfigString(toJson(s).dump(), "roundtrip");
  ASSERT_TRUE(again.ok()) << again.error().message();
}

TEST(MeshConfig, GatewayRoutesAndReservedNames) {
  ProxySpec spec;
  spec.kind = ProxySpec::Kind::kGateway;
  spec.gateway = "edge";
  spec.listen = addr("127.0.0.1:0");
  ConfigBuilder b(spec);
  MeshState st;
  json gw{
      {"edge",
       {{"routes",
         json::array({{{"match", {{"prefix", "/api"}, {"headers", {{"host", "shop.example"}}}}},
                       {"cluster", "orders"}}})}}},
      {"other", {{"routes", json::array({{{"match", {{"prefix", "/"}}}, {"cluster", "users"}}})}}}};
  ASSERT_TRUE(
      st.applySnapshot(
            parseMessage(
                snapshotLine(4, {{"orders", named("orders", service({"127.0.0.1:1001"}))}}, gw))
                .value())
          .ok());
  auto built = b.build(st);
  ASSERT_TRUE(built.ok()) << built.error().message();
  const Listener* l = (*built)->findListener("gateway");
  ASSERT_TRUE(l);
  ASSERT_EQ(l->routes.size(), 1u);
  EXPECT_EQ(l->routes[0].match.path, "/api");
  EXPECT_EQ((*built)->clusters[l->routes[0].clusters[0].cluster_index].name, "orders");
  EXPECT_FALSE((*built)->findCluster(kLocalAppCluster));

  // A sidecar refuses a service that would take its local app cluster's name.
  ConfigBuilder sc(sidecarSpec());
  MeshState bad;
  ASSERT_TRUE(
      bad.applySnapshot(
             parseMessage(snapshotLine(1, {{"local_app", service({"127.0.0.1:1"})}})).value())
          .ok());
  auto r = sc.build(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("reserved"), std::string::npos);
}

// The builder keeps what it parsed per service across updates; whatever sequence of services
// appearing, changing and going it sees, its configuration equals one built from scratch.
TEST(MeshConfig, IncrementalBuildEqualsAFreshOne) {
  std::mt19937 rng(3);
  const std::vector<std::string> names = {"alpha", "beta", "gamma", "orders", "users", "zeta"};
  auto describe = [](const Snapshot& s) {
    std::vector<std::string> out;
    for (const Cluster& c : s.clusters) {
      std::string line = c.name + " lb=" + std::to_string(static_cast<int>(c.lb.policy)) + ":";
      for (const auto& e : c.endpoints)
        line += " " + e.address.toString() + "/" + std::to_string(e.weight);
      out.push_back(line);
    }
    for (const Listener& l : s.listeners) {
      std::string line = "listener " + l.name + " " + std::to_string(l.cluster_index) + ":";
      for (const auto& r : l.routes)
        for (const auto& wc : r.clusters)
          line += " " + wc.cluster + "@" + std::to_string(wc.cluster_index);
      out.push_back(line);
    }
    return out;
  };
  ConfigBuilder incremental(sidecarSpec());
  MeshState st;
  for (int step = 0; step < 200; ++step) {
    json services = json::object();
    for (const auto& n : names) {
      if (rng() % 3 == 0)
        continue;
      std::vector<std::string> eps;
      for (int e = 0, k = static_cast<int>(rng() % 4); e < k; ++e)
        eps.push_back("10.0.0." + std::to_string(1 + rng() % 5) + ":" + std::to_string(80 + e));
      std::sort(eps.begin(), eps.end());
      eps.erase(std::unique(eps.begin(), eps.end()), eps.end());
      json svc = named(n, service(eps, rng() % 5 == 0 ? "tcp" : "http"));
      if (rng() % 4 == 0)
        svc["cluster"]["lb"] = "round_robin";
      services[n] = svc;
    }
    ASSERT_TRUE(st.applySnapshot(parseMessage(snapshotLine(step + 1, services)).value()).ok());
    auto a = incremental.build(st);
    auto b = ConfigBuilder(sidecarSpec()).build(st);
    ASSERT_TRUE(a.ok()) << a.error().message();
    ASSERT_TRUE(b.ok()) << b.error().message();
    ASSERT_EQ(describe(**a), describe(**b)) << "step " << step << ": " << services.dump();
  }
}

// Deltas of every kind, against a fresh build of the same state after each: endpoint lists
// (whole and by changes, some invalid), definitions, services added and removed, snapshots,
// and for a gateway its routes changed and removed. Most steps take the path that replaces
// only the changed services' clusters.
TEST(MeshConfig, BuildAfterDeltasEqualsAFreshOne) {
  ProxySpec gateway;
  gateway.kind = ProxySpec::Kind::kGateway;
  gateway.gateway = "edge";
  gateway.listen = addr("127.0.0.1:0");
  for (uint32_t seed = 1; seed <= 6; ++seed) {
    const ProxySpec spec = seed % 2 ? sidecarSpec() : gateway;
    std::mt19937 rng(seed);
    const std::vector<std::string> names = {"alpha", "beta", "gamma", "orders", "users"};
    auto endpoint = [&] { return "10.0.0." + std::to_string(1 + rng() % 6) + ":80"; };
    auto weighted = [&] {
      return rng() % 2 ? json(endpoint())
                       : json{{"address", endpoint()}, {"weight", 1 + rng() % 2}};
    };
    auto list = [&] {
      std::vector<std::string> eps;
      for (int e = 0, k = static_cast<int>(rng() % 5); e < k; ++e)
        eps.push_back(endpoint());
      std::sort(eps.begin(), eps.end());
      eps.erase(std::unique(eps.begin(), eps.end()), eps.end());
      return eps;
    };
    ConfigBuilder incremental(spec);
    MeshState st;
    uint64_t version = 1;
    json all = json::object();
    for (const auto& n : names)
      all[n] = named(n, service(list()));
    ASSERT_TRUE(st.applySnapshot(parseMessage(snapshotLine(version, all)).value()).ok());
    int builds = 0;
    int edited = 0;
    std::shared_ptr<const Snapshot> last;
    for (int step = 0; step < 300; ++step) {
      const std::string& n = names[rng() % names.size()];
      json services = json::object();
      json removed = json::array();
      const uint32_t kind = rng() % 20;
      if (kind == 0) {
        ASSERT_TRUE(st.applySnapshot(parseMessage(snapshotLine(++version, all)).value()).ok());
      } else {
        if (kind == 1) {
          removed.push_back(n);
        } else if (kind == 2) {
          services[n] = named(n, service(list())); // back, or redefined
        } else if (kind == 3) {
          services[n] = {{"cluster", {{"lb", rng() % 2 ? "round_robin" : "least_request"}}}};
        } else if (kind == 4) {
          services[n] = {{"endpoints", json::array({"10.0.0.1:80", "not-an-address"})}};
        } else if (kind < 8) {
          std::vector<std::string> eps = list();
          services[n] = {{"endpoints", eps}};
        } else if (kind < 10) {
          // The gateway's routes (a sidecar has none, and ignores them): changed or removed.
          json d = {{"type", "delta"}, {"version", ++version}, {"services", json::object()}};
          if (kind == 8)
            d["gateways"] = {
                {"edge",
                 {{"routes", json::array({{{"match", {{"prefix", "/x"}}}, {"cluster", n}}})}}}};
          else
            d["removed_gateways"] = json::array({"edge"});
          ASSERT_TRUE(st.applyDelta(parseMessage(d.dump()).value()).ok());
          services = d;
        } else {
          services[n] = {{"endpoints_added", json::array({weighted()})},
                         {"endpoints_removed", json::array({endpoint()})}};
        }
        if (kind >= 10 || kind < 8) {
          ASSERT_TRUE(
              st.applyDelta(parseMessage(deltaLine(++version, services, removed)).value()).ok());
        }
      }
      auto a = incremental.build(st);
      st.rebaseEndpointOrigins(); // as the session does after each build
      auto b = ConfigBuilder(spec).build(st);
      const std::string where =
          "seed " + std::to_string(seed) + " step " + std::to_string(step) + ": " + services.dump();
      ASSERT_EQ(a.ok(), b.ok()) << where << (a.ok() ? b.error() : a.error()).message();
      if (!a.ok()) {
        EXPECT_EQ(a.error().message(), b.error().message()) << where;
        continue;
      }
      builds++;
      EXPECT_TRUE(**a == **b) << where;
      EXPECT_EQ(endpointsOf(**a, n), endpointsOf(**b, n)) << where;
      // A cluster whose list was edited from the last build's says where each endpoint was
      // there; the runtime carries endpoint state over by it.
      for (const Cluster& c : (*a)->clusters) {
        const EndpointLineage* l = c.lineage.ptr.get(); // null: not a service's cluster
        if (l == nullptr || l->base == 0 || last == nullptr)
          continue;
        const Cluster* before = last->findCluster(c.name);
        if (before == nullptr || before->lineage.ptr->id != l->base)
          continue;
        edited++;
        std::vector<size_t> from;
        ASSERT_TRUE(pairByLineage(c, *before, from)) << where;
        std::set<size_t> places;
        std::vector<uint32_t> added, removed;
        for (size_t i = 0; i < from.size(); ++i) {
          if (from[i] == kNotInStep) {
            added.push_back(static_cast<uint32_t>(i));
            continue;
          }
          EXPECT_TRUE(places.insert(from[i]).second) << where;
          EXPECT_EQ(c.endpoints[i].address, before->endpoints[from[i]].address) << where;
        }
        // What came and went, as the worker reads it instead of walking the lists.
        for (size_t k = 0; k < before->endpoints.size(); ++k)
          if (places.count(k) == 0)
            removed.push_back(static_cast<uint32_t>(k));
        EXPECT_EQ(l->added, added) << where;
        EXPECT_EQ(l->removed, removed) << where;
        bool same = true;
        EXPECT_EQ(editedFrom(c, *before, same), l) << where;
        EXPECT_FALSE(same) << where;
      }
      last = *a;
    }
    EXPECT_GE(edited, 30) << "seed " << seed << ": lists edited instead of parsed";
    // Many builds replaced only the changed cluster: the path under test was taken.
    EXPECT_GE(300 - incremental.fullBuilds(), 60u)
        << "seed " << seed << ": " << incremental.fullBuilds() << " full of 300 (" << builds
        << " good)";
  }
}

TEST(MeshConfig, EndpointValidation) {
  auto ok =
      parseEndpoints(json::array({"127.0.0.1:1", {{"address", "[::1]:2"}, {"weight", 5}}}), "e");
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(ok->at(1).weight, 5u);
  auto r = parseEndpoints(json::array({{{"address", "127.0.0.1:1"}, {"weight", 0}}}), "e");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "e[0].weight: must be an integer 1..1000000, got 0");
  r = parseEndpoints(json::array({{{"weight", 1}}}), "e");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "e[0]: missing \"address\"");
  r = parseEndpoints(json::array({"orders.local:80"}), "e");
  ASSERT_FALSE(r.ok());
  r = parseEndpoints(json{{"a", 1}}, "e");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "e: must be a list, got object");

  // Repeated addresses: the first repetition in list order is named, also when a later
  // element has an error of its own; the same IP on other ports, and an IPv4 address and its
  // IPv6-mapped form, are different endpoints.
  ok = parseEndpoints(json::array({"10.0.0.1:80", "10.0.0.1:81", "[::ffff:10.0.0.1]:80",
                                   "10.0.0.2:80", "[::1]:80", "[::2]:80"}),
                      "e");
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(ok->size(), 6u);
  r = parseEndpoints(json::array({"10.0.0.3:80",
                                  "10.0.0.1:80",
                                  {{"address", "10.0.0.2:80"}},
                                  "10.0.0.9:9",
                                  {{"address", "10.0.0.1:80"}},
                                  "10.0.0.3:80",
                                  "bad"}),
                     "e");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "e[4].address: 10.0.0.1:80 is listed twice");
  r = parseEndpoints(json::array({"[::1]:5", "10.0.0.1:1", "[0::1]:5"}), "e");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "e[2]: [::1]:5 is listed twice");
  // A link-local address under two scope ids is two endpoints; under one, a repetition.
  ok = parseEndpoints(json::array({"[fe80::7%1]:80", "[fe80::7%2]:80", "[fe80::7]:80"}), "e");
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  r = parseEndpoints(json::array({"[fe80::7%1]:80", "[fe80::7%1]:80"}), "e");
  ASSERT_FALSE(r.ok());
  // An error before any repetition is that error.
  r = parseEndpoints(json::array({"10.0.0.1:80", "bad", "10.0.0.1:80"}), "e");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "e[1]: invalid address \"bad\": expected host:port");
}

// Parsing with the last parse's addresses to reuse gives what parsing afresh gives, value or
// error, over random changes (mostly sorted lists with a few changes, as the server sends;
// sometimes shuffled; sometimes with bad or repeated addresses).
TEST(MeshConfig, EndpointReuseGivesTheSameResult) {
  std::mt19937 rng(7);
  auto address = [&]() -> json {
    const int k = static_cast<int>(rng() % 40);
    // IPv6 sometimes spelled another way: another text, the same address (a repetition the
    // texts do not show).
    // And link-local ones with scope ids: another scope is another address.
    std::string a = k % 7 == 0 ? (rng() % 3 == 0 ? "[0::" : "[::") + std::to_string(k) + "]:80"
                               : "10.0.0." + std::to_string(k) + ":" + std::to_string(80 + k % 3);
    if (k % 7 == 0 && rng() % 2 == 0)
      a = "[fe80::" + std::to_string(k) + (rng() % 3 == 0 ? "" : rng() % 2 ? "%1" : "%2") + "]:80";
    if (rng() % 60 == 0)
      a = rng() % 2 ? "bad" : "10.0.0.1:0";
    return rng() % 2 ? json(a) : json{{"address", a}, {"weight", 1 + rng() % 4}};
  };
  auto text = [](const json& e) {
    return e.is_string() ? e.get<std::string>() : e["address"].get<std::string>();
  };
  EndpointTexts reuse;
  json list = json::array();
  for (int step = 0; step < 600; ++step) {
    for (int k = 0, n = static_cast<int>(rng() % 4); k < n && !list.empty(); ++k)
      list.erase(list.begin() + static_cast<long>(rng() % list.size()));
    for (int k = 0, n = static_cast<int>(rng() % 4); k < n; ++k)
      list.push_back(address());
    if (step % 10 == 0)
      std::shuffle(list.begin(), list.end(), rng);
    else
      std::sort(list.begin(), list.end(),
                [&](const json& a, const json& b) { return text(a) < text(b); });
    auto fresh = parseEndpoints(list, "e");
    auto reused = parseEndpoints(list, "e", &reuse);
    ASSERT_EQ(fresh.ok(), reused.ok()) << list.dump();
    if (!fresh.ok()) {
      EXPECT_EQ(fresh.error().message(), reused.error().message());
      EXPECT_TRUE(reuse.text.empty()); // nothing kept from a bad list
      if (rng() % 2 == 0)
        list = json::array(); // sometimes start over, sometimes fix it by more changes
      continue;
    }
    ASSERT_EQ(*fresh, *reused) << list.dump();
    ASSERT_EQ(reuse.text.size(), list.size());
  }
}

TEST(MeshConfig, RegistrationBody) {
  InstanceRegistration reg;
  reg.id = "web-1";
  reg.service = "web";
  reg.address = addr("127.0.0.1:21000");
  reg.app = addr("127.0.0.1:7000");
  reg.tags = {"v1"};
  reg.meta = {{"zone", "a"}};
  json b = json::parse(registrationBody(reg));
  EXPECT_EQ(b["ID"], "web-1");
  EXPECT_EQ(b["Address"], "127.0.0.1");
  EXPECT_EQ(b["Port"], 21000);
  EXPECT_EQ(b["Check"]["HTTP"], "http://127.0.0.1:7000/healthz");
  EXPECT_EQ(b["Check"]["Interval"], "1s");
  EXPECT_EQ(b["Check"]["DeregisterCriticalServiceAfter"], "1m");
  EXPECT_EQ(b["Meta"]["zone"], "a");
  reg.health_tcp = true;
  b = json::parse(registrationBody(reg));
  EXPECT_EQ(b["Check"]["TCP"], "127.0.0.1:7000");
  EXPECT_FALSE(b["Check"].contains("HTTP"));
}

// ---- reconnection on the simulated clock -------------------------------------------------------

TEST(MeshBackoff, FullJitterWithinDoublingBounds) {
  ReconnectBackoff b(100ms, 10s, 42);
  const std::vector<Duration> caps = {100ms, 200ms, 400ms, 800ms, 1600ms, 3200ms, 6400ms, 10s, 10s};
  for (Duration cap : caps) {
    EXPECT_EQ(b.cap(), cap);
    Duration d = b.next();
    EXPECT_GE(d, Duration::zero());
    EXPECT_LE(d, cap);
  }
  // Full jitter: draws at the cap spread over the whole range.
  Duration lo = 10s, hi = Duration::zero();
  for (int i = 0; i < 1000; ++i) {
    Duration d = b.next();
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  EXPECT_LT(lo, 1s);
  EXPECT_GT(hi, 9s);
  b.reset();
  EXPECT_EQ(b.cap(), 100ms);
}

bool pumpUntil(Dispatcher& d, const std::function<bool()>& pred) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    if (d.runReady() == 0)
      d.io().run_one_for(5ms);
  }
  return true;
}

// Accepts connections and answers each stream request with the given NDJSON lines (chunked),
// keeping the connection open; counts acks.
class FakeMeshServer {
public:
  explicit FakeMeshServer(Dispatcher& d) : d_(d), acceptor_(d.io()) {
    asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(ep.protocol());
    acceptor_.bind(ep);
    acceptor_.listen();
    accept();
  }
  net::SocketAddress address() const { return net::fromEndpoint(acceptor_.local_endpoint()); }
  std::vector<std::string> lines;
  // Whether POST /v1/mesh/stream is a stream taking acks in its body (else: 405, as a server
  // that streams only to GET would answer).
  bool takes_acks_in_stream = true;
  int streams = 0, acks = 0, stream_acks = 0, refused_posts = 0;
  std::string last_ack;
  void closeAll() {
    for (auto& c : conns_) {
      asio::error_code ec;
      c->sock.close(ec);
    }
  }

private:
  struct Conn {
    explicit Conn(asio::io_context& io) : sock(io) {}
    asio::ip::tcp::socket sock;
    std::string in;
    std::string body; // decoded chunks not yet split into lines
    bool acks_in_body = false;
    char buf[4096];
  };
  // Decodes the complete chunks of a POST stream's body; each line is an ack.
  void readAckChunks(Conn& c) {
    for (;;) {
      const size_t eol = c.in.find("\r\n");
      if (eol == std::string::npos)
        return;
      const size_t size = std::stoul(c.in.substr(0, eol), nullptr, 16);
      if (c.in.size() < eol + 2 + size + 2)
        return;
      c.body += c.in.substr(eol + 2, size);
      c.in.erase(0, eol + 2 + size + 2);
      for (size_t nl; (nl = c.body.find('\n')) != std::string::npos;) {
        acks++;
        stream_acks++;
        last_ack = c.body.substr(0, nl);
        c.body.erase(0, nl + 1);
      }
    }
  }
  void accept() {
    auto c = std::make_shared<Conn>(d_.io());
    acceptor_.async_accept(c->sock, [this, c](const asio::error_code& ec) {
      if (ec)
        return;
      conns_.push_back(c);
      read(c);
      accept();
    });
  }
  void read(std::shared_ptr<Conn> c) {
    c->sock.async_read_some(asio::buffer(c->buf), [this, c](const asio::error_code& ec, size_t n) {
      if (ec)
        return;
      c->in.append(c->buf, n);
      if (c->acks_in_body) {
        readAckChunks(*c);
        return read(c);
      }
      const size_t end = c->in.find("\r\n\r\n");
      if (end != std::string::npos) {
        const bool post_stream = c->in.starts_with("POST /v1/mesh/stream");
        if (post_stream && !takes_acks_in_stream) {
          refused_posts++;
          std::string rsp = "HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n"
                            "connection: close\r\n\r\n";
          asio::write(c->sock, asio::buffer(rsp));
          return;
        }
        if (c->in.starts_with("GET /v1/mesh/stream") || post_stream) {
          streams++;
          std::string rsp = "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"
                            "transfer-encoding: chunked\r\n\r\n";
          for (const auto& l : lines)
            rsp += fmt::format("{:x}\r\n{}\n\r\n", l.size() + 1, l);
          asio::write(c->sock, asio::buffer(rsp));
          c->in.erase(0, end + 4);
          if (post_stream) { // the body that follows: chunks of ack lines
            c->acks_in_body = true;
            readAckChunks(*c);
          } else {
            c->in.clear();
          }
        } else if (c->in.starts_with("POST /v1/mesh/ack")) {
          std::string lower = c->in;
          for (char& ch : lower)
            ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
          const size_t len_at = lower.find("content-length: ");
          if (len_at == std::string::npos)
            return read(c);
          const size_t len = std::stoul(c->in.substr(len_at + 16));
          if (c->in.size() < end + 4 + len)
            return read(c);
          acks++;
          last_ack = c->in.substr(end + 4, len);
          std::string rsp = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
          asio::write(c->sock, asio::buffer(rsp));
          return;
        }
      }
      read(c);
    });
  }
  Dispatcher& d_;
  asio::ip::tcp::acceptor acceptor_;
  std::vector<std::shared_ptr<Conn>> conns_;
};

// The simulated clock's unix time in µs, as an ack's applied_at_us.
int64_t unixMicros(SimulatedTimeSource& time) {
  return std::chrono::duration_cast<std::chrono::microseconds>(time.systemTime().time_since_epoch())
      .count();
}

// Client options for sidecar web-1 of service web, streaming from `server`.
MeshClientOptions webSidecar(const FakeMeshServer& server) {
  MeshClientOptions o;
  o.servers = {server.address()};
  o.node = "web-1";
  o.service = "web";
  return o;
}

TEST(MeshClient, AppliesAcksAndReconnectsOnSilenceWithBackoff) {
  SimulatedTimeSource time;
  Dispatcher d("test", time);
  FakeMeshServer server(d);
  server.lines = {snapshotLine(5, {{"orders", named("orders", service({"127.0.0.1:1001"}))}})};
  ConfigBuilder builder(sidecarSpec());
  FakeApplier applier;
  MeshClient client(d, webSidecar(server), builder, applier, 7);
  client.start();
  ASSERT_TRUE(pumpUntil(d, [&] { return server.acks == 1 && client.connected(); }));
  EXPECT_EQ(client.appliedVersion(), 5u);
  // The ack is a line of the stream's own body: the connection says whose it is. It says
  // when the proxy switched to the version (the simulated clock has not moved since).
  EXPECT_EQ(server.stream_acks, 1);
  EXPECT_EQ(json::parse(server.last_ack),
            (json{{"version", 5}, {"accepted", true}, {"applied_at_us", unixMicros(time)}}));
  EXPECT_EQ(client.attempts(), 1u);

  // Silence for just under 3 heartbeats keeps the stream; reaching them drops it.
  time.advance(29s);
  d.runReady();
  EXPECT_TRUE(client.connected());
  time.advance(1s);
  ASSERT_TRUE(pumpUntil(d, [&] { return !client.connected(); }));
  // The configuration stays while disconnected (static stability).
  EXPECT_EQ(endpointsOf(*applier.current, "orders"), (std::vector<std::string>{"127.0.0.1:1001"}));
  // The first retry waits at most the base backoff (the snapshot reset the backoff).
  EXPECT_EQ(client.attempts(), 1u);
  time.advance(100ms);
  ASSERT_TRUE(pumpUntil(d, [&] { return client.attempts() == 2 && client.connected(); }));
  EXPECT_EQ(server.streams, 2);

  // A server that goes away: attempts keep coming, each within its doubling bound, and the
  // configuration stays.
  server.lines.clear(); // answers a head and then nothing: no snapshot, no backoff reset
  server.closeAll();
  ASSERT_TRUE(pumpUntil(d, [&] { return !client.connected(); }));
  Duration cap = 100ms; // the backoff restarted with the last snapshot
  for (int i = 0; i < 5; ++i) {
    const uint64_t before = client.attempts();
    time.advance(cap);
    ASSERT_TRUE(pumpUntil(d, [&] { return client.attempts() == before + 1; })) << i;
    ASSERT_TRUE(pumpUntil(d, [&] { return client.connected(); }));
    server.closeAll();
    ASSERT_TRUE(pumpUntil(d, [&] { return !client.connected(); }));
    cap *= 2;
  }
  EXPECT_EQ(endpointsOf(*applier.current, "orders"), (std::vector<std::string>{"127.0.0.1:1001"}));
  client.stop();
}

// Without acks in the stream (by option, or because the server answers 405 to a POST
// stream) each ack is a request of its own, naming the node and the stream.
TEST(MeshClient, AcksGoAsRequestsToAServerThatStreamsOnlyToGet) {
  for (const bool by_option : {true, false}) {
    SCOPED_TRACE(by_option);
    SimulatedTimeSource time;
    Dispatcher d("test", time);
    FakeMeshServer server(d);
    server.takes_acks_in_stream = by_option;
    server.lines = {snapshotLine(5, {{"orders", named("orders", service({"127.0.0.1:1001"}))}})};
    ConfigBuilder builder(sidecarSpec());
    FakeApplier applier;
    MeshClientOptions o = webSidecar(server);
    o.acks_in_stream = !by_option;
    MeshClient client(d, o, builder, applier, 7);
    client.start();
    if (!by_option) { // refused, then asked again with GET after the first backoff
      ASSERT_TRUE(pumpUntil(d, [&] { return server.refused_posts == 1; }));
      time.advance(100ms);
    }
    ASSERT_TRUE(pumpUntil(d, [&] { return server.acks == 1 && client.connected(); }));
    EXPECT_EQ(server.stream_acks, 0);
    EXPECT_EQ(server.streams, 1);
    json ack = json::parse(server.last_ack);
    EXPECT_EQ(ack["node"], "web-1");
    EXPECT_EQ(ack["stream"], "s1");
    EXPECT_EQ(ack["version"], 5);
    EXPECT_EQ(ack["accepted"], true);
    EXPECT_EQ(ack["applied_at_us"], unixMicros(time));
    client.stop();
  }
}

TEST(MeshClient, LinesThatArriveTogetherAreAppliedOnceAndAckedWithTheLast) {
  SimulatedTimeSource time;
  Dispatcher d("test", time);
  FakeMeshServer server(d);
  // The server writes these in one go, as a stream that fell behind gets them.
  server.lines = {snapshotLine(5, {{"orders", named("orders", service({"127.0.0.1:1001"}))}}),
                  deltaLine(6, {{"orders", {{"endpoints", {"127.0.0.1:1002"}}}}}),
                  R"({"type":"heartbeat","version":6})",
                  deltaLine(7, {{"orders", {{"endpoints", {"127.0.0.1:1003"}}}}}),
                  deltaLine(8, {{"users", named("users", service({"127.0.0.1:2001"}))}})};
  ConfigBuilder builder(sidecarSpec());
  FakeApplier applier;
  MeshClient client(d, webSidecar(server), builder, applier, 7);
  client.start();
  ASSERT_TRUE(pumpUntil(d, [&] { return client.appliedVersion() == 8 && server.acks >= 1; }));
  EXPECT_EQ(applier.calls, 1);
  EXPECT_EQ(server.acks, 1);
  json ack = json::parse(server.last_ack);
  EXPECT_EQ(ack["version"], 8);
  EXPECT_EQ(ack["accepted"], true);
  EXPECT_EQ(endpointsOf(*applier.current, "orders"), (std::vector<std::string>{"127.0.0.1:1003"}));
  EXPECT_EQ(endpointsOf(*applier.current, "users"), (std::vector<std::string>{"127.0.0.1:2001"}));
  EXPECT_EQ(client.session().accepted(), 1u);
  client.stop();
}

} // namespace
} // namespace trellis::proxy::mesh
