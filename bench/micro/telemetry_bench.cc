// Hot-path costs of telemetry: a counter increment, a histogram observation, an access-log
// line, a request id; and the scrape cost of a registry with many series. main() comes from
// benchmark::benchmark_main, shared by every file of trellis_micro.
#include <benchmark/benchmark.h>

#include "telemetry/access_log.h"
#include "telemetry/metrics.h"
#include "telemetry/trace.h"

namespace trellis::telemetry {
namespace {

void BM_CounterInc(benchmark::State& state) {
  Registry registry;
  CounterHandle h =
      registry.counter("b_requests_total", "B.", {"code"}).value()->handle(0, {"200"});
  for (auto _ : state)
    h.inc();
  benchmark::DoNotOptimize(registry.renderPrometheus());
}
BENCHMARK(BM_CounterInc);

void BM_HistogramObserve(benchmark::State& state) {
  Registry registry;
  HistogramHandle h = registry.histogram("b_duration_seconds", "B.").value()->handle(0);
  double v = 0.0001;
  for (auto _ : state) {
    h.observe(v);
    v = v > 20 ? 0.0001 : v * 1.7;
  }
}
BENCHMARK(BM_HistogramObserve);

// Each worker thread increments its own shard: should scale with no contention.
void BM_CounterIncPerWorker(benchmark::State& state) {
  static Registry* registry = nullptr;
  static CounterFamily* family = nullptr;
  if (state.thread_index() == 0) {
    registry = new Registry(RegistryOptions{.shards = static_cast<size_t>(state.threads())});
    family = registry->counter("b_total", "B.").value();
  }
  // google-benchmark starts the timing loop only after every thread reached it.
  CounterHandle h;
  bool resolved = false;
  for (auto _ : state) {
    if (!resolved) {
      h = family->handle(static_cast<size_t>(state.thread_index()));
      resolved = true;
    }
    h.inc();
  }
  if (state.thread_index() == 0) {
    delete registry;
    registry = nullptr;
  }
}
BENCHMARK(BM_CounterIncPerWorker)->Threads(1)->Threads(2);

void BM_RenderPrometheus(benchmark::State& state) {
  const auto series = static_cast<size_t>(state.range(0));
  Registry registry(RegistryOptions{.shards = 4});
  CounterFamily* c = registry.counter("b_rq_total", "B.", {"cluster", "code"}).value();
  HistogramFamily* h = registry.histogram("b_rq_seconds", "B.", {"cluster"}).value();
  for (size_t i = 0; i < series; ++i) {
    for (size_t s = 0; s < 4; ++s) {
      c->handle(s, {"cluster-" + std::to_string(i), "200"}).add(i);
      h->handle(s, {"cluster-" + std::to_string(i)}).observe(0.01);
    }
  }
  std::string out;
  for (auto _ : state) {
    out.clear();
    registry.renderPrometheus(out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * out.size()));
}
BENCHMARK(BM_RenderPrometheus)->Arg(100)->Arg(1000);

void BM_AccessLogFormat(benchmark::State& state) {
  AccessLogEntry e;
  e.start_time = SystemTime(std::chrono::seconds(1'700'000'000));
  e.method = "GET";
  e.authority = "api.example.com";
  e.path = "/v1/items?id=7&q=some+search";
  e.code = 200;
  e.bytes_sent = 1234;
  e.duration = std::chrono::microseconds(1234);
  e.upstream = "10.0.0.7:8080";
  e.request_id = "7f1c3c1e-2a4b-4c7d-9e0f-0123456789ab";
  e.listener = "outbound_http";
  e.route = "items";
  e.cluster = "items-v1";
  std::string out;
  for (auto _ : state) {
    out.clear();
    formatAccessLogJson(e, out);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_AccessLogFormat);

void BM_RequestId(benchmark::State& state) {
  IdGenerator gen(1);
  char buf[kRequestIdLength];
  for (auto _ : state) {
    gen.writeRequestId(buf);
    benchmark::DoNotOptimize(buf);
  }
}
BENCHMARK(BM_RequestId);

void BM_TraceparentParseAndChild(benchmark::State& state) {
  IdGenerator gen(1);
  for (auto _ : state) {
    TraceContext ctx =
        gen.propagate("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false);
    benchmark::DoNotOptimize(ctx);
  }
}
BENCHMARK(BM_TraceparentParseAndChild);

} // namespace
} // namespace trellis::telemetry
