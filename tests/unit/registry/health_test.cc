#include "registry/health.h"

#include <deque>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/dispatcher.h"
#include "registry/store/memory_store.h"
#include "registry/test_util.h"

namespace trellis::registry {
namespace {

using namespace testing;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

// Records every probe; answers them when the test says so, or at once through `responder`.
class FakeProber : public CheckProber {
public:
  struct Probe {
    ProbeTarget target;
    ProbeCallback done;
    MonotonicTime started;
    std::shared_ptr<bool> cancelled = std::make_shared<bool>(false);
    bool answered = false;
  };

  explicit FakeProber(Dispatcher& d) : d_(d) {}

  std::unique_ptr<ProbeHandle> probe(const ProbeTarget& target, ProbeCallback done) override {
    probes.push_back(Probe{target, std::move(done), d_.now()});
    const size_t i = probes.size() - 1;
    auto handle = std::make_unique<Handle>(probes[i].cancelled);
    if (responder)
      if (auto r = responder(target))
        answer(i, std::move(*r));
    return handle;
  }

  void answer(size_t i, ProbeResult r) {
    Probe& p = probes.at(i);
    if (*p.cancelled || p.answered)
      return;
    p.answered = true;
    p.done(std::move(r));
  }
  // Answers every probe still outstanding.
  void answerAll(ProbeResult r) {
    for (size_t i = 0; i < probes.size(); ++i)
      answer(i, r);
  }
  size_t outstanding() const {
    size_t n = 0;
    for (const auto& p : probes)
      n += (!p.answered && !*p.cancelled) ? 1 : 0;
    return n;
  }

  std::vector<Probe> probes;
  std::function<std::optional<ProbeResult>(const ProbeTarget&)> responder;

private:
  struct Handle : ProbeHandle {
    explicit Handle(std::shared_ptr<bool> c) : cancelled(std::move(c)) {}
    ~Handle() override { *cancelled = true; }
    std::shared_ptr<bool> cancelled;
  };
  Dispatcher& d_;
};

// Returns scripted values, then repeats the last one.
class ScriptedRandom : public RandomSource {
public:
  explicit ScriptedRandom(std::deque<double> values) : values_(std::move(values)) {}
  double uniform() override {
    if (values_.size() > 1) {
      double v = values_.front();
      values_.pop_front();
      return v;
    }
    return values_.front();
  }

private:
  std::deque<double> values_;
};

ProbeResult http(int status, std::string body = "") {
  return ProbeResult{ProbeResult::Outcome::kHttpResponse, status, std::move(body)};
}

class HealthTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_TRUE(registry_.start().ok());
    ASSERT_TRUE(write(reg(node("n1"))).ok());
  }

  void start(HealthSettings s = {}) {
    health_ = std::make_unique<HealthScheduler>(d_, registry_, prober_, random_, s);
    health_->start();
    d_.runReady();
  }
  // Advances simulated time in one-second steps, running the loop after each.
  void advance(Duration total, Duration step = 1s) {
    for (Duration done{0}; done < total; done += step) {
      time_.advance(std::min(step, total - done));
      d_.runReady();
    }
  }
  Result<WriteResult> write(WriteRequest req) {
    std::optional<Result<WriteResult>> out;
    registry_.submit(std::move(req), [&](Result<WriteResult> r) { out = std::move(r); });
    d_.runReady();
    EXPECT_TRUE(out.has_value());
    return out ? std::move(*out) : Result<WriteResult>(Error(ErrorCode::kInternal, "no answer"));
  }
  void addService(const std::string& id, std::vector<Check> checks) {
    AgentServiceRequest r;
    r.node = "n1";
    r.service = service("web", id);
    r.checks = std::move(checks);
    auto res = write(r);
    ASSERT_TRUE(res.ok()) << res.error().message();
  }
  CheckPtr checkOf(const std::string& id) { return registry_.catalog().check("n1", id); }
  CheckStatus statusOf(const std::string& id) {
    CheckPtr c = checkOf(id);
    EXPECT_TRUE(c) << id;
    return c ? c->status : CheckStatus::kCritical;
  }
  double secondsSinceStart(MonotonicTime t) {
    return std::chrono::duration<double>(t - t0_).count();
  }

  SimulatedTimeSource time_;
  Dispatcher d_{"health", time_};
  MonotonicTime t0_ = time_.monotonicTime();
  MemoryStore store_;
  Registry registry_{d_, store_};
  FakeProber prober_{d_};
  ScriptedRandom random_{{0.5}};
  std::unique_ptr<HealthScheduler> health_;
};

TEST_F(HealthTest, RunsOnItsIntervalAfterAStaggeredStart) {
  HealthSettings s;
  s.jitter = 0;
  start(s);
  prober_.responder = [](const ProbeTarget&) { return http(200, "ok"); };
  addService("w1", {httpCheck("h", "http://10.0.0.1/health", 10s)});
  advance(36s);
  // Stagger 0.5 of the interval, then every 10 s.
  ASSERT_EQ(prober_.probes.size(), 4u);
  EXPECT_DOUBLE_EQ(secondsSinceStart(prober_.probes[0].started), 5.0);
  EXPECT_DOUBLE_EQ(secondsSinceStart(prober_.probes[1].started), 15.0);
  EXPECT_DOUBLE_EQ(secondsSinceStart(prober_.probes[2].started), 25.0);
  EXPECT_DOUBLE_EQ(secondsSinceStart(prober_.probes[3].started), 35.0);
  EXPECT_EQ(prober_.probes[0].target.method, "GET");
  EXPECT_EQ(prober_.probes[0].target.url, "http://10.0.0.1/health");
  EXPECT_EQ(prober_.probes[0].target.timeout, 10s) << "the default timeout";
  EXPECT_EQ(statusOf("h"), CheckStatus::kPassing);
  EXPECT_EQ(checkOf("h")->output, "HTTP GET http://10.0.0.1/health: 200 Output: ok");
  // One status write (critical -> passing); identical results afterwards write nothing.
  EXPECT_EQ(health_->stats().status_writes, 1u);
}

TEST_F(HealthTest, JitterStaysWithinItsBounds) {
  HealthSettings s;
  s.jitter = 0.2;
  // Stagger 0, then alternate the extremes of the jitter range.
  random_ = ScriptedRandom({0.0, 0.0, 0.999, 0.0, 0.999, 0.5});
  start(s);
  prober_.responder = [](const ProbeTarget&) { return http(200); };
  addService("w1", {httpCheck("h", "http://10.0.0.1/", 10s)});
  advance(60s, 100ms);
  ASSERT_GE(prober_.probes.size(), 5u);
  std::vector<double> gaps;
  for (size_t i = 1; i < prober_.probes.size(); ++i)
    gaps.push_back(secondsSinceStart(prober_.probes[i].started) -
                   secondsSinceStart(prober_.probes[i - 1].started));
  for (double g : gaps) {
    EXPECT_GE(g, 8.0 - 1e-9);
    EXPECT_LE(g, 12.0 + 0.1);
  }
  EXPECT_NEAR(gaps[0], 8.0, 0.11) << "u=0 gives interval * (1 - jitter)";
  EXPECT_NEAR(gaps[1], 12.0, 0.11) << "u~1 gives interval * (1 + jitter)";
}

TEST_F(HealthTest, NeverMoreThanTheConcurrencyLimit) {
  HealthSettings s;
  s.max_concurrent_probes = 3;
  random_ = ScriptedRandom({0.0});
  start(s);
  std::vector<Check> checks;
  for (int i = 0; i < 10; ++i)
    checks.push_back(httpCheck("h" + std::to_string(i), "http://10.0.0.1/", 10s));
  addService("w1", checks);
  advance(1s);
  EXPECT_EQ(prober_.outstanding(), 3u);
  EXPECT_EQ(health_->stats().queued, 7u);
  // Each answer frees a slot for the next queued check.
  size_t answered = 0;
  while (answered < 10) {
    for (size_t i = 0; i < prober_.probes.size(); ++i)
      if (!prober_.probes[i].answered && !*prober_.probes[i].cancelled) {
        prober_.answer(i, http(200));
        ++answered;
        break;
      }
    d_.runReady();
    EXPECT_LE(prober_.outstanding(), 3u);
  }
  EXPECT_EQ(prober_.probes.size(), 10u);
  EXPECT_EQ(health_->stats().max_running, 3u);
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(statusOf("h" + std::to_string(i)), CheckStatus::kPassing);
}

TEST_F(HealthTest, HttpStatusMapping) {
  start();
  std::map<std::string, ProbeResult> answers = {
      {"http://a/", http(204)},
      {"http://b/", http(429, "slow down")},
      {"http://c/", http(503)},
      {"http://d/", ProbeResult{ProbeResult::Outcome::kFailed, 0, "connection refused"}},
  };
  prober_.responder = [&](const ProbeTarget& t) { return answers.at(t.url); };
  addService("w1", {httpCheck("a", "http://a/", 10s), httpCheck("b", "http://b/", 10s),
                    httpCheck("c", "http://c/", 10s), httpCheck("d", "http://d/", 10s)});
  advance(10s);
  EXPECT_EQ(statusOf("a"), CheckStatus::kPassing);
  EXPECT_EQ(statusOf("b"), CheckStatus::kWarning);
  EXPECT_EQ(statusOf("c"), CheckStatus::kCritical);
  EXPECT_EQ(statusOf("d"), CheckStatus::kCritical);
  EXPECT_EQ(checkOf("d")->output, "HTTP GET http://d/: connection refused");
  EXPECT_EQ(statusForProbe(ProbeResult{ProbeResult::Outcome::kConnected, 0, ""}),
            CheckStatus::kPassing);
  EXPECT_EQ(statusForProbe(http(199)), CheckStatus::kCritical);
  EXPECT_EQ(statusForProbe(http(300)), CheckStatus::kCritical);
}

TEST_F(HealthTest, TcpCheck) {
  start();
  prober_.responder = [](const ProbeTarget&) {
    return ProbeResult{ProbeResult::Outcome::kConnected, 0, ""};
  };
  Check tcp;
  tcp.id = tcp.name = "t";
  tcp.definition.type = CheckType::kTcp;
  tcp.definition.tcp = "10.0.0.1:5432";
  tcp.definition.interval = 10s;
  tcp.definition.timeout = 3s;
  addService("w1", {tcp});
  advance(10s);
  ASSERT_EQ(prober_.probes.size(), 1u);
  EXPECT_EQ(prober_.probes[0].target.type, CheckType::kTcp);
  EXPECT_EQ(prober_.probes[0].target.address, "10.0.0.1:5432");
  EXPECT_EQ(prober_.probes[0].target.timeout, 3s);
  EXPECT_EQ(statusOf("t"), CheckStatus::kPassing);
  EXPECT_EQ(checkOf("t")->output, "TCP connect 10.0.0.1:5432: Success");
}

TEST_F(HealthTest, TimeoutIsCriticalAndCancelsTheProbe) {
  random_ = ScriptedRandom({0.0});
  start();
  Check c = httpCheck("h", "http://10.0.0.1/", 10s);
  c.definition.timeout = 2s;
  addService("w1", {c}); // a zero stagger: the probe starts at once
  ASSERT_EQ(prober_.probes.size(), 1u);
  ASSERT_TRUE(write(CheckUpdateRequest{"n1", "h", CheckStatus::kPassing, ""}).ok());
  advance(1s);
  EXPECT_EQ(statusOf("h"), CheckStatus::kPassing);
  advance(1s);
  EXPECT_EQ(statusOf("h"), CheckStatus::kCritical);
  EXPECT_THAT(checkOf("h")->output, HasSubstr("timed out after 2s"));
  EXPECT_TRUE(*prober_.probes[0].cancelled) << "the prober is told to give up";
  EXPECT_EQ(health_->stats().probes_timed_out, 1u);
  EXPECT_EQ(health_->stats().running, 0u);
  // A late answer changes nothing.
  prober_.probes[0].done(http(200));
  d_.runReady();
  EXPECT_EQ(statusOf("h"), CheckStatus::kCritical);
}

TEST_F(HealthTest, TtlExpiresWhenNotRefreshed) {
  start();
  addService("w1", {ttlCheck("ttl", 30s)});
  Result<WriteResult> got = Error(ErrorCode::kInternal, "unset");
  health_->updateTtl("n1", "ttl", CheckStatus::kPassing, "all good",
                     [&](Result<WriteResult> r) { got = std::move(r); });
  d_.runReady();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(statusOf("ttl"), CheckStatus::kPassing);
  advance(29s);
  EXPECT_EQ(statusOf("ttl"), CheckStatus::kPassing);
  // A refresh restarts the TTL.
  health_->updateTtl("n1", "ttl", CheckStatus::kPassing, "still good", [](Result<WriteResult>) {});
  advance(29s);
  EXPECT_EQ(statusOf("ttl"), CheckStatus::kPassing);
  advance(2s);
  EXPECT_EQ(statusOf("ttl"), CheckStatus::kCritical);
  EXPECT_EQ(checkOf("ttl")->output, "TTL expired (last output before timeout follows): still good");
  EXPECT_EQ(health_->stats().ttl_expired, 1u);
  // The service reports again and is back.
  health_->updateTtl("n1", "ttl", CheckStatus::kWarning, "degraded", [](Result<WriteResult>) {});
  d_.runReady();
  EXPECT_EQ(statusOf("ttl"), CheckStatus::kWarning);
}

TEST_F(HealthTest, TtlUpdateErrors) {
  start();
  addService("w1", {httpCheck("h", "http://x/", 10s)});
  std::vector<Result<WriteResult>> got;
  health_->updateTtl("n1", "h", CheckStatus::kPassing, "",
                     [&](Result<WriteResult> r) { got.push_back(std::move(r)); });
  health_->updateTtl("n1", "nope", CheckStatus::kPassing, "",
                     [&](Result<WriteResult> r) { got.push_back(std::move(r)); });
  EXPECT_TRUE(got.empty()) << "callbacks never run inside the call";
  d_.runReady();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(got[0].error().message(), HasSubstr("not a TTL check"));
  EXPECT_EQ(got[1].error().code(), ErrorCode::kNotFound);
}

TEST_F(HealthTest, DeregistersAServiceCriticalForTooLong) {
  start();
  Check doomed = ttlCheck("t1", 10s);
  doomed.definition.deregister_critical_service_after = 1min;
  Check saved = ttlCheck("t2", 10s);
  saved.definition.deregister_critical_service_after = 1min;
  addService("w1", {doomed});
  addService("w2", {saved});
  // Both start critical (Consul's initial status): the clock runs from registration.
  advance(50s);
  health_->updateTtl("n1", "t2", CheckStatus::kPassing, "", [](Result<WriteResult>) {});
  d_.runReady();
  advance(9s);
  EXPECT_TRUE(registry_.catalog().service("n1", "w1"));
  advance(2s);
  EXPECT_FALSE(registry_.catalog().service("n1", "w1")) << "critical for more than a minute";
  EXPECT_FALSE(checkOf("t1")) << "its checks go with it";
  EXPECT_TRUE(registry_.catalog().service("n1", "w2")) << "it recovered in time";
  EXPECT_EQ(health_->stats().services_deregistered, 1u);
  // w2's TTL then lapses (at 50s + 10s); a minute of critical later (120s) it goes too.
  advance(50s);
  EXPECT_TRUE(registry_.catalog().service("n1", "w2"));
  advance(12s);
  EXPECT_FALSE(registry_.catalog().service("n1", "w2"));
}

TEST_F(HealthTest, FailureAndSuccessThresholds) {
  random_ = ScriptedRandom({0.0});
  HealthSettings s;
  s.jitter = 0;
  start(s);
  Check c = httpCheck("h", "http://x/", 10s);
  c.definition.failures_before_warning = 1;
  c.definition.failures_before_critical = 3;
  c.definition.success_before_passing = 2;
  int code = 200;
  prober_.responder = [&](const ProbeTarget&) { return http(code); };
  addService("w1", {c}); // 1st success at once: deferred (needs 2)
  EXPECT_EQ(statusOf("h"), CheckStatus::kCritical);
  advance(10s); // 2nd success
  EXPECT_EQ(statusOf("h"), CheckStatus::kPassing);
  code = 500;
  advance(10s); // 1st failure: warning
  EXPECT_EQ(statusOf("h"), CheckStatus::kWarning);
  advance(10s); // 2nd failure: still warning
  EXPECT_EQ(statusOf("h"), CheckStatus::kWarning);
  advance(10s); // 3rd failure: critical
  EXPECT_EQ(statusOf("h"), CheckStatus::kCritical);
  code = 200;
  advance(10s); // one success is not enough
  EXPECT_EQ(statusOf("h"), CheckStatus::kCritical);
  advance(10s);
  EXPECT_EQ(statusOf("h"), CheckStatus::kPassing);
}

TEST_F(HealthTest, AFailureResetsTheSuccessCount) {
  random_ = ScriptedRandom({0.0});
  HealthSettings s;
  s.jitter = 0;
  start(s);
  Check c = httpCheck("h", "http://x/", 10s);
  c.definition.success_before_passing = 2;
  int code = 200;
  prober_.responder = [&](const ProbeTarget&) { return http(code); };
  addService("w1", {c}); // success 1
  code = 503;
  advance(10s); // failure: critical, successes back to 0
  code = 200;
  advance(10s); // success 1 again
  EXPECT_EQ(statusOf("h"), CheckStatus::kCritical);
  advance(10s); // success 2
  EXPECT_EQ(statusOf("h"), CheckStatus::kPassing);
}

TEST_F(HealthTest, StatusChangesBumpTheIndexOutputOnlyChangesAreThrottled) {
  random_ = ScriptedRandom({0.0});
  HealthSettings s;
  s.jitter = 0;
  s.output_update_interval = 1min;
  start(s);
  int n = 0;
  prober_.responder = [&](const ProbeTarget&) {
    return http(200, "request " + std::to_string(++n));
  };
  addService("w1", {httpCheck("h", "http://x/", 10s)}); // probed at once
  ASSERT_EQ(prober_.probes.size(), 1u);
  const CheckPtr first = checkOf("h");
  EXPECT_EQ(first->status, CheckStatus::kPassing) << "critical -> passing is written at once";
  EXPECT_GT(first->modify_index, first->create_index);
  const uint64_t after_first = registry_.catalog().serviceInstances("web").index;
  EXPECT_EQ(after_first, first->modify_index);
  advance(50s); // five more probes, each with a new body
  EXPECT_EQ(prober_.probes.size(), 6u);
  EXPECT_EQ(registry_.catalog().serviceInstances("web").index, after_first);
  EXPECT_THAT(checkOf("h")->output, HasSubstr("request 1"));
  advance(10s); // the probe at 60s is past the output update interval
  EXPECT_GT(registry_.catalog().serviceInstances("web").index, after_first);
  EXPECT_THAT(checkOf("h")->output, HasSubstr("request 7"));
}

TEST_F(HealthTest, RemovedCheckStopsAndRedefinedCheckRestarts) {
  random_ = ScriptedRandom({0.0});
  start();
  addService("w1", {httpCheck("h", "http://old/", 10s)});
  advance(1s);
  ASSERT_EQ(prober_.probes.size(), 1u);
  // Redefined while its probe is outstanding: the old probe is abandoned.
  addService("w1", {httpCheck("h", "http://new/", 10s)});
  EXPECT_TRUE(*prober_.probes[0].cancelled);
  advance(1s);
  ASSERT_EQ(prober_.probes.size(), 2u);
  EXPECT_EQ(prober_.probes[1].target.url, "http://new/");
  // Removed: its outstanding probe is cancelled and nothing runs any more.
  ASSERT_TRUE(write(AgentServiceDeregister{"n1", "w1"}).ok());
  EXPECT_TRUE(*prober_.probes[1].cancelled);
  advance(60s);
  EXPECT_EQ(prober_.probes.size(), 2u);
  EXPECT_EQ(health_->stats().tracked, 0u);
  EXPECT_EQ(health_->stats().running, 0u);
}

TEST_F(HealthTest, StartPicksUpChecksAlreadyInTheCatalog) {
  random_ = ScriptedRandom({0.0});
  addService("w1", {httpCheck("h", "http://x/", 10s)});
  prober_.responder = [](const ProbeTarget&) { return http(200); };
  start();
  EXPECT_EQ(health_->stats().tracked, 1u);
  advance(1s);
  EXPECT_EQ(prober_.probes.size(), 1u);
  EXPECT_EQ(statusOf("h"), CheckStatus::kPassing);
}

TEST_F(HealthTest, DestroyingTheSchedulerCancelsEverything) {
  random_ = ScriptedRandom({0.0});
  start();
  addService("w1", {httpCheck("h", "http://x/", 10s), ttlCheck("t", 5s)});
  ASSERT_TRUE(write(CheckUpdateRequest{"n1", "t", CheckStatus::kPassing, ""}).ok());
  advance(1s);
  ASSERT_EQ(prober_.probes.size(), 1u);
  health_.reset();
  EXPECT_TRUE(*prober_.probes[0].cancelled);
  advance(60s);
  EXPECT_EQ(prober_.probes.size(), 1u);
  EXPECT_EQ(statusOf("t"), CheckStatus::kPassing) << "no TTL runs any more";
  // The catalog keeps working without it.
  EXPECT_TRUE(write(CheckUpdateRequest{"n1", "t", CheckStatus::kWarning, ""}).ok());
}

} // namespace
} // namespace trellis::registry
