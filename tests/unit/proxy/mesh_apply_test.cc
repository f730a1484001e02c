// The cheap apply path of mesh updates (docs/mesh-proxy.md "Updates"): snapshots that share
// unchanged clusters and listeners, workers and the proxy keeping the runtime state of shared
// clusters, and bursts applied once.
#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/dispatcher.h"
#include "base/time.h"
#include "proxy/mesh/mesh_client.h"
#include "proxy/mesh/mesh_config.h"
#include "proxy/mesh/mesh_state.h"
#include "proxy/proxy_server.h"
#include "proxy/resilience/shared_state.h"
#include "proxy/stats.h"
#include "proxy/worker.h"

namespace trellis::proxy::mesh {
namespace {

using json = nlohmann::json;

net::SocketAddress addr(const std::string& s) { return net::parseSocketAddress(s).value(); }

json service(const std::string& name, std::vector<std::string> eps) {
  json e = json::array();
  for (auto& a : eps)
    e.push_back({{"address", a}, {"weight", 1}});
  return {{"protocol", "http"},
          {"cluster", {{"lb", "round_robin"}}},
          {"endpoints", e},
          {"routes", json::array({{{"match", {{"prefix", "/"}}}, {"cluster", name}}})}};
}

std::string snapshotLine(uint64_t version, json services) {
  return json{{"type", "snapshot"},
              {"version", version},
              {"stream", "s1"},
              {"services", services},
              {"gateways", json::object()}}
      .dump();
}

std::string endpointsDelta(uint64_t version, const std::string& svc,
                           std::vector<std::string> eps) {
  return json{{"type", "delta"},
              {"version", version},
              {"services", {{svc, {{"endpoints", eps}}}}},
              {"removed", json::array()}}
      .dump();
}

ProxySpec spec() {
  ProxySpec s;
  s.kind = ProxySpec::Kind::kSidecar;
  s.service = "web";
  s.app = addr("127.0.0.1:7000");
  s.inbound = addr("127.0.0.1:0");
  s.upstreams.push_back(Upstream{"orders", addr("127.0.0.1:0")});
  s.http_proxy = addr("127.0.0.1:0");
  s.admin.address = addr("127.0.0.1:0");
  return s;
}

json twoServices() {
  return {{"orders", service("orders", {"127.0.0.1:1001", "127.0.0.1:1002"})},
          {"users", service("users", {"127.0.0.1:2001"})}};
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

size_t clusterAt(const Snapshot& s, const std::string& name) {
  for (size_t i = 0; i < s.clusters.size(); ++i)
    if (s.clusters[i].name == name)
      return i;
  ADD_FAILURE() << "no cluster " << name;
  return 0;
}

// ---- the builder shares what did not change ---------------------------------------------------

TEST(MeshApply, AnEndpointsDeltaSharesEveryOtherClusterAndAllListeners) {
  ConfigBuilder b(spec());
  MeshState st;
  ASSERT_TRUE(st.applySnapshot(parseMessage(snapshotLine(1, twoServices())).value()).ok());
  auto one = b.build(st).value();
  ASSERT_TRUE(st.applyDelta(parseMessage(endpointsDelta(2, "orders", {"127.0.0.1:1003"})).value())
                  .ok());
  auto two = b.build(st).value();
  ASSERT_EQ(one->clusters.size(), two->clusters.size());
  const size_t orders = clusterAt(*two, "orders");
  for (size_t i = 0; i < two->clusters.size(); ++i) {
    if (i == orders)
      EXPECT_NE(one->clusters.shared(i), two->clusters.shared(i));
    else
      EXPECT_EQ(one->clusters.shared(i), two->clusters.shared(i)) << two->clusters[i].name;
  }
  EXPECT_EQ(two->clusters[orders].endpoints.size(), 1u);
  EXPECT_EQ(two->clusters[orders].endpoints[0].address.toString(), "127.0.0.1:1003");
  EXPECT_EQ(two->clusters[orders].lb.policy, LbPolicy::kRoundRobin);
  ASSERT_EQ(one->listeners.size(), two->listeners.size());
  for (size_t i = 0; i < two->listeners.size(); ++i)
    EXPECT_EQ(one->listeners.shared(i), two->listeners.shared(i)) << two->listeners[i].name;
  EXPECT_EQ(two->source, "mesh version 2");

  // A delta with the same content (a resend) changes nothing at all.
  ASSERT_TRUE(st.applyDelta(parseMessage(endpointsDelta(3, "orders", {"127.0.0.1:1003"})).value())
                  .ok());
  auto three = b.build(st).value();
  EXPECT_EQ(three->clusters.shared(orders), two->clusters.shared(orders));
}

TEST(MeshApply, DefinitionAndServiceChangesRebuildListenersWithRightIndices) {
  ConfigBuilder b(spec());
  MeshState st;
  ASSERT_TRUE(st.applySnapshot(parseMessage(snapshotLine(1, twoServices())).value()).ok());
  auto one = b.build(st).value();
  // A route change: the listeners that carry routes are new, untouched clusters are shared.
  json routes = json::array({{{"match", {{"prefix", "/v2"}}}, {"cluster", "orders"}}});
  ASSERT_TRUE(st.applyDelta(parseMessage(json{{"type", "delta"},
                                              {"version", 2},
                                              {"services", {{"orders", {{"routes", routes}}}}}}
                                             .dump())
                                .value())
                  .ok());
  auto two = b.build(st).value();
  const Listener* up = two->findListener("upstream-orders");
  ASSERT_TRUE(up);
  ASSERT_EQ(up->routes.size(), 1u);
  EXPECT_EQ(up->routes[0].match.path, "/v2");
  EXPECT_NE(one->findListener("upstream-orders"), up);
  EXPECT_EQ(one->clusters.shared(clusterAt(*one, "users")),
            two->clusters.shared(clusterAt(*two, "users")));
  // A new service sorts before the others: every index moves, and routes follow.
  ASSERT_TRUE(st.applyDelta(parseMessage(json{{"type", "delta"},
                                              {"version", 3},
                                              {"services",
                                               {{"accounts", service("accounts",
                                                                     {"127.0.0.1:3001"})}}}}
                                             .dump())
                                .value())
                  .ok());
  auto three = b.build(st).value();
  EXPECT_EQ(three->clusters[0].name, "accounts");
  for (const auto& l : three->listeners)
    for (const auto& r : l.routes)
      for (const auto& wc : r.clusters)
        EXPECT_EQ(three->clusters[wc.cluster_index].name, wc.cluster) << l.name;
  EXPECT_EQ(two->clusters.shared(clusterAt(*two, "users")),
            three->clusters.shared(clusterAt(*three, "users")));
  // Removing a service: its placeholder keeps the upstream listener routable (503, not 404).
  ASSERT_TRUE(st.applyDelta(parseMessage(json{{"type", "delta"},
                                              {"version", 4},
                                              {"removed", {"orders"}}}
                                             .dump())
                                .value())
                  .ok());
  auto four = b.build(st).value();
  up = four->findListener("upstream-orders");
  ASSERT_TRUE(up);
  const Cluster& target = four->clusters[up->routes[0].clusters[0].cluster_index];
  EXPECT_EQ(target.name, "orders");
  EXPECT_TRUE(target.endpoints.empty());
}

// ---- bursts -----------------------------------------------------------------------------------

class BurstTest : public ::testing::Test {
protected:
  BurstTest() : builder(spec()), session(builder, applier) {
    auto out = session.handleLines({snapshotLine(5, twoServices())});
    EXPECT_TRUE(out.stream.ok());
    EXPECT_EQ(out.acks.size(), 1u);
    applier.calls = 0;
  }
  ConfigBuilder builder;
  FakeApplier applier;
  MeshSession session;
};

TEST_F(BurstTest, ABurstIsBuiltOnceAndAckedWithItsLastVersion) {
  auto out = session.handleLines({endpointsDelta(6, "orders", {"127.0.0.1:1003"}),
                                  R"({"type":"heartbeat","version":6})",
                                  endpointsDelta(7, "users", {"127.0.0.1:2002"}),
                                  endpointsDelta(8, "orders", {"127.0.0.1:1004"})});
  ASSERT_TRUE(out.stream.ok());
  EXPECT_EQ(applier.calls, 1);
  ASSERT_EQ(out.acks.size(), 1u);
  EXPECT_TRUE(out.acks[0].accepted);
  EXPECT_EQ(out.acks[0].version, 8u);
  EXPECT_EQ(out.acks[0].stream, "s1");
  EXPECT_EQ(session.appliedVersion(), 8u);
  EXPECT_EQ(session.accepted(), 2u); // the snapshot and the burst
  EXPECT_EQ(applier.current->findCluster("orders")->endpoints[0].address.toString(),
            "127.0.0.1:1004");
  EXPECT_EQ(applier.current->findCluster("users")->endpoints[0].address.toString(),
            "127.0.0.1:2002");
  // Heartbeats alone build nothing.
  out = session.handleLines({R"({"type":"heartbeat","version":8})"});
  EXPECT_TRUE(out.acks.empty());
  EXPECT_EQ(applier.calls, 1);
}

TEST_F(BurstTest, ContentErrorsAreJudgedOnTheBurstsResult) {
  auto good = applier.current;
  // A bad policy fixed later in the same burst: the result is good, nothing is rejected.
  auto out = session.handleLines(
      {json{{"type", "delta"},
            {"version", 6},
            {"services", {{"orders", {{"cluster", {{"lb", "round-robbin"}}}}}}}}
           .dump(),
       json{{"type", "delta"},
            {"version", 7},
            {"services", {{"orders", {{"cluster", {{"lb", "random"}}}}}}}}
           .dump()});
  ASSERT_EQ(out.acks.size(), 1u);
  EXPECT_TRUE(out.acks[0].accepted) << out.acks[0].error;
  EXPECT_EQ(out.acks[0].version, 7u);
  EXPECT_EQ(applier.current->findCluster("orders")->lb.policy, LbPolicy::kRandom);
  good = applier.current;
  // A burst that ends bad: its last version is rejected with the error, the last good
  // configuration stays, and the next delta applies to the received state.
  out = session.handleLines(
      {endpointsDelta(8, "users", {"127.0.0.1:2005"}),
       json{{"type", "delta"},
            {"version", 9},
            {"services", {{"orders", {{"cluster", {{"lb", "round-robbin"}}}}}}}}
           .dump()});
  ASSERT_TRUE(out.stream.ok()) << "a content error must not drop the stream";
  ASSERT_EQ(out.acks.size(), 1u);
  EXPECT_FALSE(out.acks[0].accepted);
  EXPECT_EQ(out.acks[0].version, 9u);
  EXPECT_TRUE(out.acks[0].error.starts_with("services.orders.cluster.lb: unknown policy"))
      << out.acks[0].error;
  EXPECT_EQ(applier.current, good);
  EXPECT_EQ(session.appliedVersion(), 7u);
  out = session.handleLines({json{{"type", "delta"},
                                  {"version", 10},
                                  {"services", {{"orders", {{"cluster", {{"lb", "random"}}}}}}}}
                                 .dump()});
  ASSERT_EQ(out.acks.size(), 1u);
  EXPECT_TRUE(out.acks[0].accepted);
  EXPECT_EQ(applier.current->findCluster("users")->endpoints[0].address.toString(),
            "127.0.0.1:2005");
}

TEST_F(BurstTest, AMessageThatBreaksTheStreamComesAfterWhatPrecededIt) {
  // Version 7 goes backwards: 6 is applied and acked, 7 rejected, 9 never looked at.
  auto out = session.handleLines({endpointsDelta(6, "orders", {"127.0.0.1:1003"}),
                                  endpointsDelta(4, "orders", {"127.0.0.1:1009"}),
                                  endpointsDelta(9, "orders", {"127.0.0.1:1010"})});
  EXPECT_FALSE(out.stream.ok());
  ASSERT_EQ(out.acks.size(), 2u);
  EXPECT_TRUE(out.acks[0].accepted);
  EXPECT_EQ(out.acks[0].version, 6u);
  EXPECT_FALSE(out.acks[1].accepted);
  EXPECT_EQ(out.acks[1].version, 4u);
  EXPECT_EQ(applier.calls, 1);
  EXPECT_EQ(applier.current->findCluster("orders")->endpoints[0].address.toString(),
            "127.0.0.1:1003");
  // Not JSON after a good delta: the delta still counts, then the stream is reopened.
  session.beginStream();
  out = session.handleLines({snapshotLine(20, twoServices()),
                             endpointsDelta(21, "users", {"127.0.0.1:2003"}), "<html>"});
  EXPECT_FALSE(out.stream.ok());
  ASSERT_EQ(out.acks.size(), 1u);
  EXPECT_TRUE(out.acks[0].accepted);
  EXPECT_EQ(out.acks[0].version, 21u);
  EXPECT_EQ(session.appliedVersion(), 21u);
  // A delta first on a new stream: nothing applied, stream reopened.
  session.beginStream();
  const int calls = applier.calls;
  out = session.handleLines({endpointsDelta(22, "users", {"127.0.0.1:2004"})});
  EXPECT_FALSE(out.stream.ok());
  EXPECT_TRUE(out.acks.empty());
  EXPECT_EQ(applier.calls, calls);
}

// ---- workers and the proxy keep the runtime of shared clusters -------------------------------

Cluster cluster(const std::string& name, std::vector<std::string> eps) {
  Cluster c;
  c.name = name;
  for (auto& e : eps)
    c.endpoints.push_back(Endpoint{addr(e), 1});
  return c;
}

// One worker on a simulated clock, driven directly (no ProxyServer).
struct WorkerRig {
  SimulatedTimeSource time;
  Dispatcher d{"worker", time};
  telemetry::Registry registry{telemetry::RegistryOptions{.shards = 2}};
  ProxyStats stats = ProxyStats::create(registry).value();
  Worker w{0, d, stats, nullptr};
};

TEST(MeshApply, WorkerKeepsRuntimesOfSharedClustersAndRetiresOnlyUnusedPools) {
  WorkerRig rig;
  auto& time = rig.time;
  auto& w = rig.w;

  auto s1 = std::make_shared<Snapshot>();
  s1->clusters.push_back(cluster("a", {"127.0.0.1:1001", "127.0.0.1:1002"}));
  s1->clusters.push_back(cluster("b", {"127.0.0.1:2001", "127.0.0.1:1002"}));
  auto sh1 = SharedState::build(*s1, nullptr, time.monotonicTime());
  w.apply(s1, sh1, {});
  ClusterRuntime* a1 = w.config()->clusters[0].get();
  ClusterRuntime* b1 = w.config()->clusters[1].get();
  UpstreamPool* p1001 = &w.pool(addr("127.0.0.1:1001"));
  UpstreamPool* p1002 = &w.pool(addr("127.0.0.1:1002"));
  UpstreamPool* p2001 = &w.pool(addr("127.0.0.1:2001"));

  // b changes (loses both endpoints, one of which a still has); a is the same object.
  auto s2 = std::make_shared<Snapshot>();
  s2->clusters.push_back(s1->clusters.shared(0));
  s2->clusters.push_back(cluster("b", {"127.0.0.1:2002"}));
  auto sh2 = std::make_shared<SharedState>();
  sh2->clusters.push_back(sh1->clusters[0]);
  sh2->clusters.push_back(std::make_shared<ClusterState>(s2->clusters[1]));
  w.apply(s2, sh2, {});
  EXPECT_EQ(w.config()->clusters[0].get(), a1);
  EXPECT_NE(w.config()->clusters[1].get(), b1);
  EXPECT_EQ(&w.config()->clusters[1]->cfg, &s2->clusters[1]);
  EXPECT_EQ(&w.pool(addr("127.0.0.1:1001")), p1001);
  EXPECT_EQ(&w.pool(addr("127.0.0.1:1002")), p1002) << "a still lists 1002: its pool stays warm";
  EXPECT_NE(&w.pool(addr("127.0.0.1:2001")), p2001) << "nobody lists 2001: its pool is retired";

  // The same Cluster object with a different shared state is not reused (a reload from a
  // file makes new objects anyway; this guards the pairing).
  auto sh3 = std::make_shared<SharedState>();
  sh3->clusters.push_back(std::make_shared<ClusterState>(s2->clusters[0]));
  sh3->clusters.push_back(sh2->clusters[1]);
  w.apply(s2, sh3, {});
  EXPECT_NE(w.config()->clusters[0].get(), a1);
  EXPECT_EQ(w.config()->clusters[0]->state, sh3->clusters[0]);
  w.shutdown();
}

// Clusters changed at random (endpoints added, removed, reordered; clusters added, removed,
// moved, or kept as the same object): a pool stays exactly while some cluster lists its
// address.
TEST(MeshApply, PoolsLiveExactlyWhileSomeClusterListsTheirAddress) {
  WorkerRig rig;
  auto& w = rig.w;
  std::mt19937 rng(3);
  auto randomList = [&] {
    std::vector<std::string> eps;
    for (int p = 1; p <= 12; ++p)
      if (rng() % 2 == 0)
        eps.push_back("127.0.0.1:" + std::to_string(3000 + p));
    if (rng() % 4 == 0)
      std::shuffle(eps.begin(), eps.end(), rng);
    return eps;
  };
  std::shared_ptr<Snapshot> prev;
  std::shared_ptr<SharedState> prev_shared;
  std::map<std::string, UpstreamPool*> pools; // of the addresses the last snapshot listed
  for (int step = 0; step < 300; ++step) {
    auto snap = std::make_shared<Snapshot>();
    auto shared = std::make_shared<SharedState>();
    // Two to four of five names, in any order: clusters come, go, move and stay in place.
    std::vector<std::string> names = {"a", "b", "c", "d", "e"};
    std::shuffle(names.begin(), names.end(), rng);
    names.resize(2 + rng() % 3);
    if (rng() % 2 == 0)
      std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      size_t at = prev ? prev->clusters.size() : 0;
      for (size_t k = 0; prev && k < prev->clusters.size(); ++k)
        if (prev->clusters[k].name == name)
          at = k;
      if (prev && at < prev->clusters.size() && rng() % 3 == 0) { // the same object and state
        snap->clusters.push_back(prev->clusters.shared(at));
        shared->clusters.push_back(prev_shared->clusters[at]);
      } else {
        Cluster c = cluster(name, randomList());
        // Every list has a lineage; half of those that follow one of the same name were
        // edited from it (as a mesh delta's are): the worker counts pool references from the
        // lineage's added and removed lists then, which are worked out here by address.
        auto lineage = std::make_shared<EndpointLineage>();
        lineage->id = nextEndpointLineageId();
        if (prev && at < prev->clusters.size() && rng() % 2 == 0) {
          const Cluster& before = prev->clusters[at];
          lineage->base = before.lineage.ptr->id;
          std::vector<bool> kept(before.endpoints.size(), false);
          for (size_t i = 0; i < c.endpoints.size(); ++i) {
            uint32_t o = EndpointLineage::kNew;
            for (size_t k = 0; k < before.endpoints.size(); ++k)
              if (before.endpoints[k].address == c.endpoints[i].address)
                o = static_cast<uint32_t>(k);
            lineage->origin.push_back(o);
            if (o == EndpointLineage::kNew)
              lineage->added.push_back(static_cast<uint32_t>(i));
            else
              kept[o] = true;
          }
          for (size_t k = 0; k < kept.size(); ++k)
            if (!kept[k])
              lineage->removed.push_back(static_cast<uint32_t>(k));
        }
        c.lineage.ptr = std::move(lineage);
        snap->clusters.push_back(std::move(c));
        shared->clusters.push_back(std::make_shared<ClusterState>(snap->clusters.back()));
      }
    }
    w.apply(snap, shared, {});
    std::set<std::string> listed;
    for (const auto& c : snap->clusters)
      for (const auto& ep : c.endpoints)
        listed.insert(ep.address.toString());
    for (const auto& [a, pool] : pools)
      if (listed.count(a))
        EXPECT_EQ(&w.pool(addr(a)), pool) << "step " << step << ": " << a << " is still listed";
      else
        EXPECT_NE(&w.pool(addr(a)), pool) << "step " << step << ": " << a << " is not listed";
    pools.clear();
    for (const auto& a : listed)
      pools[a] = &w.pool(addr(a));
    prev = snap;
    prev_shared = shared;
  }
  w.shutdown();
}

TEST(MeshApply, ProxyServerKeepsClusterStateOfSharedClusters) {
  Dispatcher main("main", realTimeSource());
  ConfigBuilder b(spec());
  ProxyServer server(main, ProxyOptions{"", 1});
  ASSERT_TRUE(server.start(b.build(MeshState{}).value()).ok());
  MeshState st;
  ASSERT_TRUE(st.applySnapshot(parseMessage(snapshotLine(1, twoServices())).value()).ok());
  ASSERT_TRUE(server.apply(b.build(st).value()).ok());
  auto one = server.sharedState();
  auto snap1 = server.snapshot();
  ASSERT_TRUE(st.applyDelta(parseMessage(endpointsDelta(2, "orders", {"127.0.0.1:1002"})).value())
                  .ok());
  ASSERT_TRUE(server.apply(b.build(st).value()).ok());
  auto two = server.sharedState();
  const size_t users = clusterAt(*server.snapshot(), "users");
  const size_t orders = clusterAt(*server.snapshot(), "orders");
  EXPECT_EQ(one->clusters[clusterAt(*snap1, "users")], two->clusters[users]);
  EXPECT_NE(one->clusters[clusterAt(*snap1, "orders")], two->clusters[orders]);
  EXPECT_EQ(&two->clusters[orders]->config(), &server.snapshot()->clusters[orders]);
  EXPECT_EQ(two->clusters[orders]->size(), 1u);
  server.stop();
}

} // namespace
} // namespace trellis::proxy::mesh
