#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "telemetry/metrics.h"

namespace trellis::telemetry {
namespace {

constexpr const char* kPromtool = "/usr/bin/promtool";

TEST(ExpositionTest, SmallRegistryRendersExactly) {
  Registry registry(RegistryOptions{.shards = 2});
  CounterFamily* req =
      registry.counter("trellis_test_requests_total", "Requests handled.", {"code", "method"})
          .value();
  GaugeFamily* conns = registry.gauge("trellis_test_connections", "Open connections.").value();
  HistogramFamily* lat = registry
                             .histogram("trellis_test_duration_seconds", "Request duration.",
                                        {"route"}, {0.1, 1})
                             .value();
  registry.counter("trellis_test_unused_total", "Has labels, no series yet.", {"x"}).value();

  Scope s0 = registry.scope(0);
  Scope s1 = registry.scope(1);
  // Created out of order: the output is sorted by label values regardless.
  s1.counter(*req, {"503", "POST"}).inc();
  s0.counter(*req, {"200", "GET"}).add(3);
  s1.counter(*req, {"200", "GET"}).add(2);
  GaugeHandle g0 = s0.gauge(*conns);
  GaugeHandle g1 = s1.gauge(*conns);
  g0.inc();
  g0.inc();
  g1.dec();
  s0.histogram(*lat, {"a"}).observe(0.0625);
  HistogramHandle h1 = s1.histogram(*lat, {"a"});
  h1.observe(0.5);
  h1.observe(3);

  EXPECT_EQ(registry.renderPrometheus(),
            "# HELP trellis_test_connections Open connections.\n"
            "# TYPE trellis_test_connections gauge\n"
            "trellis_test_connections 1\n"
            "# HELP trellis_test_duration_seconds Request duration.\n"
            "# TYPE trellis_test_duration_seconds histogram\n"
            "trellis_test_duration_seconds_bucket{route=\"a\",le=\"0.1\"} 1\n"
            "trellis_test_duration_seconds_bucket{route=\"a\",le=\"1\"} 2\n"
            "trellis_test_duration_seconds_bucket{route=\"a\",le=\"+Inf\"} 3\n"
            "trellis_test_duration_seconds_sum{route=\"a\"} 3.5625\n"
            "trellis_test_duration_seconds_count{route=\"a\"} 3\n"
            "# HELP trellis_test_requests_total Requests handled.\n"
            "# TYPE trellis_test_requests_total counter\n"
            "trellis_test_requests_total{code=\"200\",method=\"GET\"} 5\n"
            "trellis_test_requests_total{code=\"503\",method=\"POST\"} 1\n");
}

TEST(ExpositionTest, UnlabelledHistogramAndSpecialValues) {
  Registry registry;
  HistogramFamily* h = registry.histogram("t_size_bytes", "Sizes.", {}, {1024, 1e6}).value();
  h->handle(0).observe(2048);
  GaugeFamily* g = registry.gauge("t_ratio", "Ratio.", {"k"}).value();
  g->handle(0, {"inf"}).set(std::numeric_limits<double>::infinity());
  g->handle(0, {"nan"}).set(std::numeric_limits<double>::quiet_NaN());
  g->handle(0, {"neg"}).set(-0.25);
  EXPECT_EQ(registry.renderPrometheus(), "# HELP t_ratio Ratio.\n"
                                         "# TYPE t_ratio gauge\n"
                                         "t_ratio{k=\"inf\"} +Inf\n"
                                         "t_ratio{k=\"nan\"} NaN\n"
                                         "t_ratio{k=\"neg\"} -0.25\n"
                                         "# HELP t_size_bytes Sizes.\n"
                                         "# TYPE t_size_bytes histogram\n"
                                         "t_size_bytes_bucket{le=\"1024\"} 0\n"
                                         "t_size_bytes_bucket{le=\"1000000\"} 1\n"
                                         "t_size_bytes_bucket{le=\"+Inf\"} 1\n"
                                         "t_size_bytes_sum 2048\n"
                                         "t_size_bytes_count 1\n");
}

TEST(ExpositionTest, LabelValuesAndHelpAreEscaped) {
  Registry registry;
  GaugeFamily* g =
      registry.gauge("t_esc", "Help with \\ backslash\nand newline \"quotes\" kept.", {"v"})
          .value();
  g->handle(0, {"a\\b\"c\nd"}).set(1);
  g->handle(0, {"bad\xff utf8 \xc3\xa9"}).set(2);
  EXPECT_EQ(registry.renderPrometheus(),
            "# HELP t_esc Help with \\\\ backslash\\nand newline \"quotes\" kept.\n"
            "# TYPE t_esc gauge\n"
            "t_esc{v=\"a\\\\b\\\"c\\nd\"} 1\n"
            "t_esc{v=\"bad\xef\xbf\xbd utf8 \xc3\xa9\"} 2\n");
}

// Each sample's series (name and labels) must appear once.
void expectNoDuplicateSeries(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  std::set<std::string> seen;
  std::set<std::string> typed;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      std::string name = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_TRUE(typed.insert(name).second) << "TYPE twice for " << name;
      continue;
    }
    if (line.empty() || line[0] == '#')
      continue;
    const size_t brace = line.find('}');
    std::string series =
        brace != std::string::npos ? line.substr(0, brace + 1) : line.substr(0, line.find(' '));
    EXPECT_TRUE(seen.insert(series).second) << "duplicate series " << series;
  }
}

struct ProcessResult {
  int exit_code = -1;
  std::string output;
};

// Runs `promtool check metrics` with `text` on its standard input.
ProcessResult promtoolCheck(const std::string& text) {
  std::string dir = testing::TempDir();
  std::string path = dir + "/metrics-XXXXXX";
  int fd = mkstemp(path.data());
  EXPECT_GE(fd, 0);
  ::close(fd);
  {
    std::ofstream f(path, std::ios::binary);
    f << text;
  }
  std::string cmd = std::string(kPromtool) + " check metrics < " + path + " 2>&1";
  ProcessResult r;
  FILE* p = popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr);
  if (p == nullptr)
    return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0)
    r.output.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::remove(path.c_str());
  return r;
}

TEST(ExpositionTest, EveryKindPassesPromtool) {
  if (::access(kPromtool, X_OK) != 0)
    GTEST_SKIP() << kPromtool << " is not installed";

  Registry registry(RegistryOptions{.shards = 3, .max_series_per_family = 3});
  CounterFamily* rq =
      registry.counter("trellis_test_requests_total", "Requests.", {"listener", "code"}).value();
  GaugeFamily* cx = registry.gauge("trellis_test_connections", "Connections.", {"cluster"})
                        .value();
  HistogramFamily* du = registry
                            .histogram("trellis_test_request_duration_seconds",
                                       "Request duration.", {"cluster"})
                            .value();
  HistogramFamily* sz =
      registry.histogram("trellis_test_body_bytes", "Body sizes.", {}, {100, 1e4, 1e6}).value();
  registry.counter("trellis_test_unlabelled_total", "Starts at zero.").value();
  auto cap = registry.gaugeCallback("trellis_test_capacity", "Capacity\\ with \"odd\"\nhelp.",
                                    [] { return 12.5; });
  ASSERT_TRUE(cap.ok());
  auto cbc = registry.counterCallback("trellis_test_callbacks_total", "Callback counter.",
                                      [] { return uint64_t{99}; });
  ASSERT_TRUE(cbc.ok());
  auto lab = cx->addCallback({"from-callback"}, [] { return -3.0; });
  ASSERT_TRUE(lab.ok());

  for (size_t s = 0; s < registry.shardCount(); ++s) {
    Scope scope = registry.scope(s);
    scope.counter(*rq, {"in\"bound\\", "200"}).add(s + 1);
    scope.counter(*rq, {"line\nbreak", "503"}).inc();
    scope.counter(*rq, {"\xff\xfe", "404"}).inc();
    scope.counter(*rq, {"over", "limit"}).inc(); // past the series limit: rejected, counted
    scope.gauge(*cx, {"c\xc3\xa9"}).set(static_cast<double>(s));
    scope.histogram(*du, {"c1"}).observe(0.003 * static_cast<double>(s + 1));
    scope.histogram(*du, {"c2"}).observe(std::chrono::seconds(20));
    scope.histogram(*sz).observe(5000);
  }
  const std::string text = registry.renderPrometheus();
  ASSERT_NE(text.find("trellis_metrics_series_rejected_total"), std::string::npos) << text;
  expectNoDuplicateSeries(text);

  ProcessResult ok = promtoolCheck(text);
  EXPECT_EQ(ok.exit_code, 0) << ok.output << "\n--- exposition ---\n" << text;

  // The check can fail: a broken label quote and a lint problem are both reported.
  ProcessResult broken = promtoolCheck("# HELP x_total X.\n# TYPE x_total counter\n"
                                       "x_total{a=\"b} 1\n");
  EXPECT_NE(broken.exit_code, 0) << broken.output;
  ProcessResult lint = promtoolCheck("# HELP x X.\n# TYPE x counter\nx 1\n");
  EXPECT_NE(lint.exit_code, 0) << lint.output;
}

} // namespace
} // namespace trellis::telemetry
