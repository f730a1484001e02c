#include "telemetry/metrics.h"

#include <thread>

#include <gtest/gtest.h>

namespace trellis::telemetry {
namespace {

TEST(MetricsTest, ShardedCountersFromManyThreadsMergeExactly) {
  constexpr size_t kThreads = 4;
  constexpr uint64_t kIters = 200'000;
  Registry registry(RegistryOptions{.shards = kThreads});
  CounterFamily* requests = registry.counter("t_requests_total", "Requests.", {"code"}).value();
  GaugeFamily* active = registry.gauge("t_active", "Active.").value();
  HistogramFamily* latency =
      registry.histogram("t_latency_seconds", "Latency.", {}, {0.001, 0.01, 0.1}).value();

  std::vector<std::thread> threads;
  for (size_t w = 0; w < kThreads; ++w) {
    threads.emplace_back([&, w] {
      Scope scope = registry.scope(w);
      CounterHandle ok = scope.counter(*requests, {"200"});
      CounterHandle err = scope.counter(*requests, {"503"});
      GaugeHandle act = scope.gauge(*active);
      HistogramHandle lat = scope.histogram(*latency);
      for (uint64_t i = 0; i < kIters; ++i) {
        ok.inc();
        if (i % 4 == 0)
          err.add(2);
        act.inc();
        lat.observe(i % 2 == 0 ? 0.0078125 : 0.5); // exact in binary: the sum is exact
        if (i % 2 == 0)
          act.dec();
      }
    });
  }
  // Scrapes race with the updates: a counter never goes backwards between them, and a
  // histogram's +Inf bucket is always its _count.
  uint64_t last = 0;
  for (int i = 0; i < 50; ++i) {
    const uint64_t now = requests->value({"200"});
    EXPECT_GE(now, last);
    last = now;
    HistogramSnapshot s = latency->snapshot();
    EXPECT_EQ(s.cumulative.back(), s.count);
    EXPECT_NE(registry.renderPrometheus().find("t_active "), std::string::npos);
  }
  for (auto& t : threads)
    t.join();

  EXPECT_EQ(requests->value({"200"}), kThreads * kIters);
  EXPECT_EQ(requests->value({"503"}), kThreads * (kIters / 4) * 2);
  EXPECT_EQ(active->value(), static_cast<double>(kThreads * kIters / 2));
  HistogramSnapshot snap = latency->snapshot();
  EXPECT_EQ(snap.count, kThreads * kIters);
  EXPECT_EQ(snap.cumulative, (std::vector<uint64_t>{0, kThreads * kIters / 2,
                                                     kThreads * kIters / 2, kThreads * kIters}));
  EXPECT_EQ(snap.sum, kThreads * (kIters / 2) * (0.0078125 + 0.5));
}

TEST(MetricsTest, HandlesForTheSameChildShareTheSeries) {
  Registry registry(RegistryOptions{.shards = 2});
  CounterFamily* c = registry.counter("t_total", "T.", {"a"}).value();
  CounterHandle h1 = c->handle(0, {"x"});
  CounterHandle h2 = c->handle(0, {"x"});
  CounterHandle h3 = c->handle(1, {"x"});
  h1.inc();
  h2.add(10);
  h3.add(100);
  EXPECT_EQ(c->value({"x"}), 111u);
  EXPECT_EQ(c->value({"y"}), 0u);
  EXPECT_EQ(c->childCount(), 1u);
}

TEST(MetricsTest, DefaultHandlesDiscardUpdates) {
  CounterHandle c;
  GaugeHandle g;
  HistogramHandle h;
  c.inc();
  g.set(5);
  h.observe(1.0);
  Registry registry;
  EXPECT_EQ(registry.renderPrometheus(), "");
}

TEST(MetricsTest, GaugeSetIsPerShardAndSumsAcrossShards) {
  Registry registry(RegistryOptions{.shards = 3});
  GaugeFamily* g = registry.gauge("t_gauge", "G.", {"k"}).value();
  g->handle(0, {"a"}).set(2.5);
  g->handle(1, {"a"}).set(-1);
  GaugeHandle h2 = g->handle(2, {"a"});
  h2.add(4);
  h2.sub(1.5);
  EXPECT_DOUBLE_EQ(g->value({"a"}), 4.0);
  g->handle(0, {"a"}).set(0);
  EXPECT_DOUBLE_EQ(g->value({"a"}), 1.5);
}

TEST(MetricsTest, HistogramBucketsAreCumulativeAndInclusive) {
  Registry registry;
  HistogramFamily* h = registry.histogram("t_seconds", "H.", {}, {1, 2, 5}).value();
  HistogramHandle handle = h->handle(0);
  for (double v : {0.5, 1.0, 1.5, 2.0, 4.0, 5.0, 7.0, -1.0})
    handle.observe(v);
  handle.observe(std::numeric_limits<double>::quiet_NaN()); // ignored
  handle.observe(std::chrono::milliseconds(1500));
  HistogramSnapshot s = h->snapshot();
  // le=1: 0.5, 1.0, -1.0; le=2: +1.5, 2.0, 1.5s; le=5: +4, 5; +Inf: +7
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{3, 6, 8, 9}));
  EXPECT_EQ(s.count, 9u);
  EXPECT_DOUBLE_EQ(s.sum, 0.5 + 1 + 1.5 + 2 + 4 + 5 + 7 - 1 + 1.5);
  for (size_t i = 1; i < s.cumulative.size(); ++i)
    EXPECT_GE(s.cumulative[i], s.cumulative[i - 1]);
}

TEST(MetricsTest, DefaultDurationBucketsSpanHalfAMillisecondToTenSeconds) {
  const auto& b = defaultDurationBuckets();
  ASSERT_FALSE(b.empty());
  EXPECT_DOUBLE_EQ(b.front(), 0.0005);
  EXPECT_DOUBLE_EQ(b.back(), 10);
  EXPECT_TRUE(std::is_sorted(b.begin(), b.end()));
  Registry registry;
  EXPECT_EQ(registry.histogram("t_d_seconds", "D.").value()->bounds(), b);
}

TEST(MetricsTest, CallbackGaugesAreEvaluatedAtEachScrape) {
  Registry registry;
  std::atomic<int> capacity{10};
  auto reg = registry.gaugeCallback("t_capacity", "Remaining capacity.",
                                    [&] { return static_cast<double>(capacity.load()); });
  ASSERT_TRUE(reg.ok()) << reg.error().message();
  EXPECT_EQ(registry.renderPrometheus(), "# HELP t_capacity Remaining capacity.\n"
                                         "# TYPE t_capacity gauge\n"
                                         "t_capacity 10\n");
  capacity = 7;
  EXPECT_EQ(registry.renderPrometheus(), "# HELP t_capacity Remaining capacity.\n"
                                         "# TYPE t_capacity gauge\n"
                                         "t_capacity 7\n");
  reg->reset();
  EXPECT_EQ(registry.renderPrometheus(), "");
  // Once removed, the same family can take a new callback.
  auto again = registry.gaugeCallback("t_capacity", "Remaining capacity.", [] { return 1.0; });
  ASSERT_TRUE(again.ok());
  EXPECT_DOUBLE_EQ(registry.gauge("t_capacity", "Remaining capacity.").value()->value(), 1.0);
}

TEST(MetricsTest, LabelledCallbacksAndConflicts) {
  Registry registry(RegistryOptions{.shards = 2});
  GaugeFamily* g = registry.gauge("t_conns", "Conns.", {"cluster"}).value();
  int a = 3;
  auto ra = g->addCallback({"a"}, [&] { return static_cast<double>(a); });
  ASSERT_TRUE(ra.ok());
  g->handle(1, {"b"}).set(2);
  EXPECT_DOUBLE_EQ(g->value({"a"}), 3);
  // A callback cannot take the labels of an existing series, sharded or callback.
  auto dup = g->addCallback({"b"}, [] { return 0.0; });
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_FALSE(g->addCallback({"a"}, [] { return 0.0; }).ok());
  // A sharded handle on a callback's labels is refused and counted.
  g->handle(0, {"a"}).set(100);
  EXPECT_DOUBLE_EQ(g->value({"a"}), 3);
  EXPECT_NE(registry.renderPrometheus().find(
                "trellis_metrics_series_rejected_total{family=\"t_conns\"} 1\n"),
            std::string::npos);

  // Moving a registration keeps the series; destroying it removes the series.
  {
    CallbackRegistration moved = std::move(*ra);
    EXPECT_FALSE(ra->active());
    EXPECT_TRUE(moved.active());
    EXPECT_EQ(g->childCount(), 2u);
  }
  EXPECT_EQ(g->childCount(), 1u);
  EXPECT_DOUBLE_EQ(g->value({"a"}), 0);

  // Unlabelled families get their series at registration, so a callback cannot join them.
  registry.counter("t_plain_total", "P.").value();
  auto clash = registry.counterCallback("t_plain_total", "P.", [] { return uint64_t{1}; });
  ASSERT_FALSE(clash.ok());
  EXPECT_EQ(clash.error().code(), ErrorCode::kAlreadyExists);

  CounterFamily* cf = registry.counter("t_cb_total", "CB.", {"k"}).value();
  auto rc = cf->addCallback({"v"}, [] { return uint64_t{42}; });
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ(cf->value({"v"}), 42u);
}

TEST(MetricsTest, RegistrationIsIdempotentForTheSameDefinition) {
  Registry registry;
  auto a = registry.counter("t_x_total", "X.", {"a"});
  auto b = registry.counter("t_x_total", "X.", {"a"});
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*a, *b);

  auto other_help = registry.counter("t_x_total", "Other.", {"a"});
  ASSERT_FALSE(other_help.ok());
  EXPECT_EQ(other_help.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_FALSE(registry.counter("t_x_total", "X.", {"b"}).ok());
  EXPECT_FALSE(registry.gauge("t_x_total", "X.", {"a"}).ok());
  EXPECT_FALSE(registry.histogram("t_h_seconds", "H.", {}, {1}).ok() &&
               registry.histogram("t_h_seconds", "H.", {}, {2}).ok());
}

TEST(MetricsTest, RegistrationRejectsBadDefinitions) {
  Registry registry;
  struct Case {
    Result<CounterFamily*> result;
    std::string fragment;
  };
  auto expectError = [](auto result, ErrorCode code, const std::string& fragment) {
    ASSERT_FALSE(result.ok()) << fragment;
    EXPECT_EQ(result.error().code(), code) << result.error().message();
    EXPECT_NE(result.error().message().find(fragment), std::string::npos)
        << result.error().message();
  };
  expectError(registry.counter("t_requests", "R."), ErrorCode::kInvalidArgument, "_total");
  expectError(registry.gauge("9lives", "N."), ErrorCode::kInvalidArgument, "9lives");
  expectError(registry.gauge("t-dash", "N."), ErrorCode::kInvalidArgument, "t-dash");
  expectError(registry.gauge("", "N."), ErrorCode::kInvalidArgument, "invalid");
  expectError(registry.gauge("t_g", "N.", {"bad-label"}), ErrorCode::kInvalidArgument,
              "bad-label");
  expectError(registry.gauge("t_g", "N.", {"__name"}), ErrorCode::kInvalidArgument, "reserved");
  expectError(registry.gauge("t_g", "N.", {"a", "a"}), ErrorCode::kInvalidArgument, "twice");
  expectError(registry.gauge("t_g", "bad \xff help"), ErrorCode::kInvalidArgument, "UTF-8");
  expectError(registry.histogram("t_h", "H.", {"le"}), ErrorCode::kInvalidArgument, "le");
  expectError(registry.histogram("t_h", "H.", {}, {}), ErrorCode::kInvalidArgument, "buckets");
  expectError(registry.histogram("t_h", "H.", {}, {1, 1}), ErrorCode::kInvalidArgument,
              "increase");
  expectError(registry.histogram("t_h", "H.", {}, {1, std::numeric_limits<double>::infinity()}),
              ErrorCode::kInvalidArgument, "finite");
  expectError(registry.histogram("t_h", "H.", {}, std::vector<double>(65, 1.0)),
              ErrorCode::kInvalidArgument, "buckets");
  // Names a histogram generates collide with other families, in both orders.
  ASSERT_TRUE(registry.histogram("t_rt_seconds", "H.").ok());
  expectError(registry.gauge("t_rt_seconds_count", "G."), ErrorCode::kAlreadyExists,
              "t_rt_seconds_count");
  ASSERT_TRUE(registry.counter("t_q_sum_total", "C.").ok());
  ASSERT_TRUE(registry.gauge("t_q_sum", "G.").ok());
  expectError(registry.histogram("t_q", "H."), ErrorCode::kAlreadyExists, "t_q_sum");
}

TEST(MetricsTest, SeriesLimitDropsNewChildrenAndCountsThem) {
  Registry registry(RegistryOptions{.shards = 1, .max_series_per_family = 2});
  CounterFamily* c = registry.counter("t_paths_total", "Paths.", {"path"}).value();
  c->handle(0, {"/a"}).inc();
  c->handle(0, {"/b"}).inc();
  CounterHandle over = c->handle(0, {"/c"});
  over.add(5);
  c->handle(0, {"/d"}).inc();
  c->handle(0, {"/a"}).inc(); // existing children still resolve
  EXPECT_EQ(c->childCount(), 2u);
  EXPECT_EQ(c->value({"/a"}), 2u);
  EXPECT_EQ(c->value({"/c"}), 0u);
  EXPECT_EQ(registry.renderPrometheus(),
            "# HELP t_paths_total Paths.\n"
            "# TYPE t_paths_total counter\n"
            "t_paths_total{path=\"/a\"} 2\n"
            "t_paths_total{path=\"/b\"} 1\n"
            "# HELP trellis_metrics_series_rejected_total Metric series not created because "
            "their family reached its series limit or the label values were taken by a series "
            "of another kind.\n"
            "# TYPE trellis_metrics_series_rejected_total counter\n"
            "trellis_metrics_series_rejected_total{family=\"t_paths_total\"} 2\n");
}

TEST(MetricsTest, LabelValuesAreNormalised) {
  Registry registry(RegistryOptions{.shards = 1, .max_label_value_bytes = 8});
  CounterFamily* c = registry.counter("t_n_total", "N.", {"v"}).value();
  // Longer than 8 bytes: cut, so both land in one series "abcdefgh".
  c->handle(0, {"abcdefgh-1"}).inc();
  c->handle(0, {"abcdefgh-2"}).inc();
  EXPECT_EQ(c->value({"abcdefgh"}), 2u);
  // The cut never splits a UTF-8 sequence: "abcdefg" + "é" (2 bytes) keeps 7 bytes.
  c->handle(0, {"abcdefg\xc3\xa9"}).inc();
  EXPECT_EQ(c->value({"abcdefg"}), 1u);
  // Invalid UTF-8 becomes U+FFFD.
  c->handle(0, {"x\xffy"}).inc();
  EXPECT_EQ(c->value({"x\xef\xbf\xbdy"}), 1u);
  EXPECT_EQ(c->childCount(), 3u);
}

TEST(MetricsTest, WrongLabelArityStopsTheProcess) {
  Registry registry;
  CounterFamily* c = registry.counter("t_arity_total", "A.", {"a", "b"}).value();
  EXPECT_DEATH(c->handle(0, {"only-one"}), "2 label names");
  EXPECT_DEATH(registry.scope(1), "out of range");
}

TEST(MetricsTest, SeriesCountCoversAllFamilies) {
  Registry registry(RegistryOptions{.shards = 2});
  registry.counter("t_a_total", "A.").value();
  GaugeFamily* g = registry.gauge("t_b", "B.", {"x"}).value();
  g->handle(1, {"1"});
  g->handle(0, {"2"});
  EXPECT_EQ(registry.seriesCount(), 3u);
}

} // namespace
} // namespace trellis::telemetry
