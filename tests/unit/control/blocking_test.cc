#include <gtest/gtest.h>

#include "base/dispatcher.h"
#include "base/time.h"
#include "control/blocking.h"

namespace trellis::control {
namespace {

using namespace std::chrono_literals;
using registry::WatchScope;

class FixedRandom : public registry::RandomSource {
public:
  double value = 0.0;
  double uniform() override { return value; }
};

registry::RegisterRequest instance(const std::string& svc, const std::string& id, uint16_t port) {
  registry::RegisterRequest r;
  r.node.name = "n1";
  r.node.address = "10.0.0.1";
  registry::Service s;
  s.name = svc;
  s.id = id;
  s.port = port;
  r.service = s;
  return r;
}

class BlockingTest : public ::testing::Test {
protected:
  BlockingTest() : loop_("test", time_), queries_(loop_, catalog_, random_) {
    EXPECT_TRUE(catalog_.apply(instance("web", "web-1", 80)).ok());
    EXPECT_TRUE(catalog_.apply(instance("db", "db-1", 5432)).ok());
  }
  void advance(Duration d) {
    time_.advance(d);
    loop_.runReady();
  }

  SimulatedTimeSource time_;
  Dispatcher loop_;
  registry::Catalog catalog_;
  FixedRandom random_;
  BlockingQueries queries_;
};

TEST(BlockingParamsTest, ParsesAndClamps) {
  BlockingSettings s;
  auto p = parseBlockingParams("42", "5s", s);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->index, 42u);
  EXPECT_EQ(p->wait, 5s);
  auto d = parseBlockingParams(std::nullopt, std::nullopt, s);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->index, 0u);
  EXPECT_EQ(d->wait, 5min); // Consul's default
  auto c = parseBlockingParams("1", "1h", s);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->wait, 10min); // Consul's maximum
  EXPECT_FALSE(parseBlockingParams("x1", std::nullopt, s).ok());
  EXPECT_FALSE(parseBlockingParams("-1", std::nullopt, s).ok());
  auto bad = parseBlockingParams("1", "5", s);
  EXPECT_FALSE(bad.ok()); // a unit is required, as Consul's time.ParseDuration
}

TEST(BlockingParamsTest, JitterBounds) {
  BlockingSettings s;
  FixedRandom r;
  r.value = 0.0;
  EXPECT_EQ(jitteredWait(160s, s, r), 160s);
  r.value = 0.999999;
  Duration hi = jitteredWait(160s, s, r);
  EXPECT_GT(hi, 169s);
  EXPECT_LT(hi, 170s); // wait + wait/16, exclusive
  r.value = 0.5;
  EXPECT_EQ(jitteredWait(160s, s, r), 165s);
}

TEST_F(BlockingTest, AnswersAtOnceWithoutIndexOrWhenIndexPassed) {
  int answered = 0;
  EXPECT_EQ(queries_.wait(WatchScope::service("web"), {0, 5s}, [&] { ++answered; }), 0u);
  EXPECT_EQ(answered, 1);
  uint64_t idx = catalog_.scopeIndex(WatchScope::service("web"));
  EXPECT_EQ(queries_.wait(WatchScope::service("web"), {idx - 1, 5s}, [&] { ++answered; }), 0u);
  EXPECT_EQ(answered, 2);
  EXPECT_EQ(queries_.parked(), 0u);
}

TEST_F(BlockingTest, WakesOnlyForItsScope) {
  uint64_t idx = catalog_.scopeIndex(WatchScope::service("web"));
  int web = 0;
  uint64_t id = queries_.wait(WatchScope::service("web"), {idx, 5s}, [&] { ++web; });
  EXPECT_NE(id, 0u);
  EXPECT_EQ(queries_.parked(), 1u);
  // A change to another service does not wake it.
  ASSERT_TRUE(catalog_.apply(instance("db", "db-2", 5433)).ok());
  loop_.runReady();
  EXPECT_EQ(web, 0);
  // A change to web does, at once (no clock movement).
  ASSERT_TRUE(catalog_.apply(instance("web", "web-2", 81)).ok());
  EXPECT_EQ(web, 1);
  EXPECT_EQ(queries_.parked(), 0u);
  loop_.runReady();
  advance(10s);
  EXPECT_EQ(web, 1); // the timer was disarmed
}

TEST_F(BlockingTest, TimesOutAfterWaitPlusJitter) {
  random_.value = 0.5;
  uint64_t idx = catalog_.scopeIndex(WatchScope::service("web"));
  int answered = 0;
  queries_.wait(WatchScope::service("web"), {idx, 16s}, [&] { ++answered; });
  advance(16s);
  EXPECT_EQ(answered, 0); // jitter: 16s + 0.5 * 1s
  advance(499ms);
  EXPECT_EQ(answered, 0);
  advance(1ms);
  EXPECT_EQ(answered, 1);
  EXPECT_EQ(queries_.parked(), 0u);
}

TEST_F(BlockingTest, CancelledQueryNeverAnswers) {
  uint64_t idx = catalog_.scopeIndex(WatchScope::service("web"));
  int answered = 0;
  uint64_t id = queries_.wait(WatchScope::service("web"), {idx, 5s}, [&] { ++answered; });
  queries_.cancel(id);
  EXPECT_EQ(queries_.parked(), 0u);
  EXPECT_EQ(catalog_.watcherCount(), 0u);
  ASSERT_TRUE(catalog_.apply(instance("web", "web-3", 82)).ok());
  advance(10s);
  EXPECT_EQ(answered, 0);
  queries_.cancel(id); // twice is harmless
}

TEST_F(BlockingTest, KvKeyScopeIsExact) {
  registry::KvPutRequest a{"a", "1", 0, std::nullopt};
  ASSERT_TRUE(catalog_.apply(a).ok());
  uint64_t idx = catalog_.scopeIndex(WatchScope::kvKey("a"));
  int answered = 0;
  queries_.wait(WatchScope::kvKey("a"), {idx, 5s}, [&] { ++answered; });
  ASSERT_TRUE(catalog_.apply(registry::KvPutRequest{"b", "1", 0, std::nullopt}).ok());
  EXPECT_EQ(answered, 0);
  ASSERT_TRUE(catalog_.apply(registry::KvPutRequest{"a", "2", 0, std::nullopt}).ok());
  EXPECT_EQ(answered, 1);
}

} // namespace
} // namespace trellis::control
