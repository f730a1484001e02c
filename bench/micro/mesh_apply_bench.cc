// What one mesh update costs a proxy (docs/mesh-proxy.md "Updates"): a state of 100 services
// x 100 endpoints, then deltas that each remove or restore one endpoint of one service (as the
// server sends a single registry change), through each stage of the apply path and end to end
// with a running ProxyServer (2 workers, port-0 listeners).
//
//   ninja -C build-x trellis_micro && build-x/trellis_micro --benchmark_filter=Mesh
//
// For instruction counts that do not depend on the machine's load:
//   valgrind --tool=callgrind build-x/trellis_micro --benchmark_filter=MeshEndToEnd/...
#include <benchmark/benchmark.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/dispatcher.h"
#include "base/time.h"
#include "proxy/mesh/mesh_client.h"
#include "proxy/mesh/mesh_config.h"
#include "proxy/mesh/mesh_state.h"
#include "proxy/proxy_server.h"

namespace trellis::proxy::mesh {
namespace {

using json = nlohmann::json;

constexpr int kServices = 100;
constexpr int kEndpoints = 100;

std::string serviceName(int s) { return "svc-" + std::to_string(s); }

std::string endpointAddress(int s, int e);

// Ordered by address text, as the server sends endpoint lists (docs/protocol.md).
json endpointList(int s) {
  std::vector<std::string> addresses;
  for (int e = 0; e < kEndpoints; ++e)
    addresses.push_back(endpointAddress(s, e));
  std::sort(addresses.begin(), addresses.end());
  json eps = json::array();
  for (const auto& a : addresses)
    eps.push_back(a); // weight 1: the address string, as the server sends it
  return eps;
}


std::string snapshotLine(uint64_t version) {
  json services = json::object();
  for (int s = 0; s < kServices; ++s) {
    const std::string name = serviceName(s);
    services[name] = {
        {"protocol", "http"},
        {"cluster", {{"lb", "least_request"}, {"connect_timeout", "1s"}}},
        {"endpoints", endpointList(s)},
        {"routes", json::array({{{"match", {{"prefix", "/"}}},
                                 {"cluster", name},
                                 {"timeout", "15s"},
                                 {"retries", {{"attempts", 1}, {"on", {"connect-failure"}}}}}})}};
  }
  return json{{"type", "snapshot"},
              {"version", version},
              {"stream", "bench"},
              {"services", services},
              {"gateways", json::object()}}
      .dump();
}

std::string endpointAddress(int s, int e) {
  return "10." + std::to_string(s / 250) + "." + std::to_string(s % 250) + "." +
         std::to_string(e + 1) + ":8080";
}

// Delta `k` (k >= 0): service k % 100 loses one endpoint, or gets it back, alternately, as
// the server sends a single change: `endpoints_removed` / `endpoints_added` with the one
// endpoint (docs/protocol.md "Endpoint changes").
std::string deltaLine(uint64_t version, uint64_t k) {
  const int s = static_cast<int>(k % kServices);
  const uint64_t pass = k / kServices;
  const int e = static_cast<int>((pass / 2) % kEndpoints); // dropped on even passes, back on odd
  json change = pass % 2 == 0 ? json{{"endpoints_removed", json::array({endpointAddress(s, e)})}}
                              : json{{"endpoints_added", json::array({endpointAddress(s, e)})}};
  return json{{"type", "delta"},
              {"version", version},
              {"services", {{serviceName(s), change}}},
              {"removed", json::array()}}
      .dump();
}

// Enough pre-rendered deltas that rendering is not measured.
const std::vector<std::string>& deltas() {
  static const std::vector<std::string> lines = [] {
    std::vector<std::string> v;
    for (uint64_t k = 0; k < 4 * kServices; ++k)
      v.push_back(deltaLine(0, k));
    return v;
  }();
  return lines;
}

// A delta line with its version set (the version must increase).
std::string withVersion(const std::string& line, uint64_t version) {
  json j = json::parse(line);
  j["version"] = version;
  return j.dump();
}

ProxySpec sidecarSpec(bool http_proxy) {
  ProxySpec s;
  s.kind = ProxySpec::Kind::kSidecar;
  s.service = serviceName(0);
  s.app = net::parseSocketAddress("127.0.0.1:7000").value();
  s.inbound = net::parseSocketAddress("127.0.0.1:0").value();
  s.upstreams.push_back(Upstream{serviceName(1), net::parseSocketAddress("127.0.0.1:0").value()});
  if (http_proxy)
    s.http_proxy = net::parseSocketAddress("127.0.0.1:0").value();
  s.admin.address = net::parseSocketAddress("127.0.0.1:0").value();
  s.concurrency = 2;
  return s;
}

// Versioned lines for one run: a snapshot at version 1, deltas from 2 on.
struct Feed {
  std::vector<std::string> lines; // deltas only, already versioned
  size_t next = 0;
  explicit Feed(size_t n) {
    for (size_t i = 0; i < n; ++i)
      lines.push_back(withVersion(deltas()[i % deltas().size()], 2 + i));
  }
  const std::string& take() { return lines[next++ % lines.size()]; }
};

// Versions must increase, so each benchmark renders enough lines up front and wraps around
// by re-taking a snapshot (outside the timing) when it runs out.
constexpr size_t kFeed = 20000;

void BM_MeshStateApplyDelta(benchmark::State& st) {
  MeshState state;
  const std::string snap = snapshotLine(1);
  Feed feed(kFeed);
  for (auto _ : st) {
    if (feed.next % kFeed == 0) {
      st.PauseTiming();
      (void)state.applySnapshot(parseMessage(snap).value());
      st.ResumeTiming();
    }
    auto m = parseMessage(feed.take());
    benchmark::DoNotOptimize(state.applyDelta(m.value()));
  }
}
BENCHMARK(BM_MeshStateApplyDelta)->Unit(benchmark::kMicrosecond);

void BM_MeshBuildAfterDelta(benchmark::State& st) {
  MeshState state;
  ConfigBuilder builder(sidecarSpec(st.range(0) != 0));
  const std::string snap = snapshotLine(1);
  Feed feed(kFeed);
  for (auto _ : st) {
    st.PauseTiming();
    if (feed.next % kFeed == 0) {
      (void)state.applySnapshot(parseMessage(snap).value());
      (void)builder.build(state);
    }
    (void)state.applyDelta(parseMessage(feed.take()).value());
    st.ResumeTiming();
    auto built = builder.build(state);
    benchmark::DoNotOptimize(built);
  }
}
BENCHMARK(BM_MeshBuildAfterDelta)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

class ServerApplier : public ConfigApplier {
public:
  explicit ServerApplier(ProxyServer& server) : server_(server) {}
  Status apply(std::shared_ptr<const Snapshot> snapshot) override {
    return server_.apply(std::move(snapshot));
  }

private:
  ProxyServer& server_;
};

// A running proxy: a ProxyServer with two workers on their own threads, port-0 listeners.
struct RunningProxy {
  Dispatcher main{"main", realTimeSource()};
  ConfigBuilder builder;
  ProxyServer server;
  ServerApplier applier{server};
  MeshSession session{builder, applier};

  // workers = 1: the one worker runs on `main` (as bench/propagation's proxies do), so its
  // switch counts in the calling thread too.
  explicit RunningProxy(bool http_proxy, size_t workers = 2)
      : builder(sidecarSpec(http_proxy)), server(main, ProxyOptions{"", workers}) {
    auto initial = builder.build(MeshState{});
    if (auto s = server.start(*initial); !s.ok())
      throw std::runtime_error(s.error().message());
  }
  void snapshot(uint64_t version) {
    session.beginStream();
    auto out = session.handleLine(snapshotLine(version));
    if (!out.ack || !out.ack->accepted)
      throw std::runtime_error("snapshot rejected");
  }
};

// The whole apply path of one message: parse, state, build, ProxyServer::apply (shared
// cluster state, both workers switching), as MeshClient runs it for each line.
void BM_MeshEndToEnd(benchmark::State& st) {
  RunningProxy p(st.range(0) != 0);
  Feed feed(kFeed);
  for (auto _ : st) {
    if (feed.next % kFeed == 0) {
      st.PauseTiming();
      p.snapshot(1);
      st.ResumeTiming();
    }
    auto out = p.session.handleLine(feed.take());
    if (!out.ack || !out.ack->accepted)
      st.SkipWithError("delta rejected");
  }
  st.counters["clusters"] = static_cast<double>(p.server.snapshot()->clusters.size());
}
BENCHMARK(BM_MeshEndToEnd)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// One version of a burst as the server sends it (docs/protocol.md "Endpoint changes"): every
// service gains or loses one endpoint in the same delta, so every cluster changes. This is
// what a proxy pays per version during a burst of registrations (bench/propagation).
std::string everyServiceLine(uint64_t version, uint64_t pass) {
  json services = json::object();
  const int e = static_cast<int>((pass / 2) % kEndpoints);
  for (int s = 0; s < kServices; ++s)
    services[serviceName(s)] =
        pass % 2 == 0 ? json{{"endpoints_removed", json::array({endpointAddress(s, e)})}}
                      : json{{"endpoints_added", json::array({endpointAddress(s, e)})}};
  return json{
      {"type", "delta"}, {"version", version}, {"services", services}, {"removed", json::array()}}
      .dump();
}

// Writes a buffer larger than the last-level cache: with a delta then applied to another proxy
// (which brings the code back, as the other processes running the same binary do), the next
// update starts as a proxy's does in bench/propagation, where 100 proxy processes take turns
// on the cores and each finds its data evicted by the others' ("cold").
void evictCaches() {
  static std::vector<char> junk(64 << 20);
  static char round = 0;
  ++round;
  for (size_t i = 0; i < junk.size(); i += 64)
    junk[i] = round;
  benchmark::ClobberMemory();
}

// The proxy measured (the worker on the main thread, as bench/propagation's run) and, for a
// cold run, the one that runs before each of its updates.
struct ColdRig {
  const bool cold;
  RunningProxy p{false, 1};
  std::optional<RunningProxy> other;
  explicit ColdRig(bool c) : cold(c) {
    if (cold)
      other.emplace(false, 1);
  }
  // Before a timed update of a cold run: the caches evicted, then `line` applied to the other.
  void chill(const std::string& line) {
    evictCaches();
    other->session.handleLine(line);
  }
};

void BM_MeshEveryServiceDelta(benchmark::State& st) {
  ColdRig rig(st.range(0) != 0);
  RunningProxy& p = rig.p;
  std::optional<RunningProxy>& other = rig.other;
  const bool cold = rig.cold;
  std::vector<std::string> lines;
  for (uint64_t k = 0; k < 2000; ++k)
    lines.push_back(everyServiceLine(2 + k, k));
  size_t next = 0;
  // A snapshot, then one delta (untimed, and by handleLine: callgrind's toggle below skips
  // it): the first change to a list after a snapshot puts it in order, the later ones (what
  // is measured, and what a running proxy does) edit it in place.
  auto restart = [&] {
    for (RunningProxy* r : {&p, other ? &*other : nullptr})
      if (r != nullptr) {
        r->snapshot(1);
        r->session.handleLine(lines[0]);
      }
    next = 1;
  };
  restart();
  for (auto _ : st) {
    if (next == lines.size() || cold) {
      st.PauseTiming();
      if (next == lines.size())
        restart();
      if (cold)
        rig.chill(lines[next]);
      st.ResumeTiming();
    }
    // As MeshClient hands over what one read brought (a batch of one here); callgrind's
    // --toggle-collect='*MeshSession::handleLines*' then counts these deltas only.
    auto out = p.session.handleLines({lines[next++]});
    if (out.acks.size() != 1 || !out.acks[0].accepted)
      st.SkipWithError("delta rejected");
  }
}
BENCHMARK(BM_MeshEveryServiceDelta)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// One single-service delta (as BM_MeshEndToEnd) with the worker on the main thread, as
// bench/propagation's proxies run: hot (range(0) = 0) or after evictCaches() (1).
void BM_MeshOneServiceDelta(benchmark::State& st) {
  ColdRig rig(st.range(0) != 0);
  RunningProxy& p = rig.p;
  std::optional<RunningProxy>& other = rig.other;
  const bool cold = rig.cold;
  Feed feed(kFeed);
  // As BM_MeshEveryServiceDelta: a snapshot, then a delta to each service untimed.
  auto restart = [&] {
    feed.next = 0;
    for (RunningProxy* r : {&p, other ? &*other : nullptr})
      if (r != nullptr)
        r->snapshot(1);
    for (int k = 0; k < kServices; ++k) {
      const std::string& line = feed.take();
      p.session.handleLine(line);
      if (other)
        other->session.handleLine(line);
    }
  };
  restart();
  for (auto _ : st) {
    if (feed.next == kFeed || cold) {
      st.PauseTiming();
      if (feed.next == kFeed)
        restart();
      if (cold)
        rig.chill(feed.lines[feed.next]);
      st.ResumeTiming();
    }
    auto out = p.session.handleLines({feed.take()});
    if (out.acks.size() != 1 || !out.acks[0].accepted)
      st.SkipWithError("delta rejected");
  }
}
BENCHMARK(BM_MeshOneServiceDelta)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// A burst: `range(1)` deltas that arrived together, handed over one line at a time
// (range(2) = 0, as MeshClient did before bursts were coalesced) or as one batch (1, as
// MeshClient does now: one build and switch, one ack).
void BM_MeshBurst(benchmark::State& st) {
  RunningProxy p(st.range(0) != 0);
  const size_t n = static_cast<size_t>(st.range(1));
  const bool batched = st.range(2) != 0;
  Feed feed(kFeed);
  std::vector<std::string> batch;
  for (auto _ : st) {
    if (feed.next + n > kFeed || feed.next == 0) {
      st.PauseTiming();
      feed.next = 0;
      p.snapshot(1);
      st.ResumeTiming();
    }
    if (batched) {
      batch.clear();
      for (size_t i = 0; i < n; ++i)
        batch.push_back(feed.take());
      auto out = p.session.handleLines(batch);
      if (out.acks.size() != 1 || !out.acks[0].accepted)
        st.SkipWithError("burst rejected");
      continue;
    }
    for (size_t i = 0; i < n; ++i) {
      auto out = p.session.handleLine(feed.take());
      if (!out.ack || !out.ack->accepted)
        st.SkipWithError("delta rejected");
    }
  }
  st.counters["messages"] = static_cast<double>(n);
}
BENCHMARK(BM_MeshBurst)
    ->Args({1, 100, 0})
    ->Args({1, 100, 1})
    ->Args({1, 1000, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

} // namespace
} // namespace trellis::proxy::mesh
