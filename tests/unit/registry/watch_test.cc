#include <chrono>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "registry/catalog.h"
#include "registry/test_util.h"

namespace trellis::registry {
namespace {

using namespace testing;
using ::testing::ElementsAre;

WatchHandle watchOk(Catalog& c, const WatchScope& scope, WatchCallback cb) {
  auto h = c.watch(scope, std::move(cb));
  EXPECT_TRUE(h.ok());
  return h.ok() ? std::move(h).value() : WatchHandle();
}

// Counts wake-ups of one watcher.
struct Counter {
  int wakes = 0;
  WatchHandle handle;
  Counter(Catalog& c, const WatchScope& scope) {
    auto h = c.watch(scope, [this] { ++wakes; });
    EXPECT_TRUE(h.ok());
    handle = std::move(*h);
  }
};

TEST(WatchTest, ChangeToServiceADoesNotWakeServiceB) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("a", "a1")));
  applyOk(c, reg(node("n2"), service("b", "b1")));
  Counter a(c, WatchScope::service("a"));
  Counter b(c, WatchScope::service("b"));
  applyOk(c, reg(node("n1"), service("a", "a1", 1234)));
  EXPECT_EQ(a.wakes, 1);
  EXPECT_EQ(b.wakes, 0);
  applyOk(c, reg(node("n3"), service("b", "b2")));
  EXPECT_EQ(a.wakes, 1);
  EXPECT_EQ(b.wakes, 1);
}

TEST(WatchTest, InstanceHealthDependsOnNodeChecks) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("a", "a1")));
  applyOk(c, reg(node("n1"), service("b", "b1")));
  applyOk(c, reg(node("n2"), service("z", "z1")));
  Counter a(c, WatchScope::service("a"));
  Counter b(c, WatchScope::service("b"));
  Counter z(c, WatchScope::service("z"));
  Counter n1(c, WatchScope::node("n1"));
  // A node check on n1 gates every instance on n1.
  applyOk(c, reg(node("n1"), std::nullopt, {check("serf", CheckStatus::kPassing)}));
  EXPECT_EQ(a.wakes, 1);
  EXPECT_EQ(b.wakes, 1);
  EXPECT_EQ(z.wakes, 0);
  EXPECT_EQ(n1.wakes, 1);
  // A service check of a1 concerns a only.
  applyOk(c, AgentCheckRequest{"n1", check("ca", CheckStatus::kPassing, "a1")});
  EXPECT_EQ(a.wakes, 2);
  EXPECT_EQ(b.wakes, 1);
  EXPECT_EQ(n1.wakes, 2);
  // The node's own fields concern all its instances.
  applyOk(c, reg(node("n1", "10.1.1.1")));
  EXPECT_EQ(a.wakes, 3);
  EXPECT_EQ(b.wakes, 2);
  EXPECT_EQ(z.wakes, 0);
}

TEST(WatchTest, ServicesListWakesOnlyWhenNamesOrTagsChange) {
  Catalog c;
  Counter list(c, WatchScope::services());
  applyOk(c, reg(node("n1"), service("web", "w1", 80, {"x"})));
  EXPECT_EQ(list.wakes, 1);
  applyOk(c, reg(node("n1"), service("web", "w1", 81, {"x"}))); // port only
  EXPECT_EQ(list.wakes, 1);
  applyOk(c, reg(node("n2"), service("web", "w2", 80, {"x"}))); // same name, same tags
  EXPECT_EQ(list.wakes, 1);
  applyOk(c, reg(node("n2"), service("web", "w2", 80, {"x", "y"}))); // new tag
  EXPECT_EQ(list.wakes, 2);
  applyOk(c, DeregisterRequest{"n2", "w2", ""}); // "y" disappears
  EXPECT_EQ(list.wakes, 3);
  applyOk(c, DeregisterRequest{"n1", "w1", ""}); // the name disappears
  EXPECT_EQ(list.wakes, 4);
}

TEST(WatchTest, NodesListAndOneNode) {
  Catalog c;
  Counter nodes(c, WatchScope::nodes());
  Counter n1(c, WatchScope::node("N1"));
  applyOk(c, reg(node("n2")));
  EXPECT_EQ(nodes.wakes, 1);
  EXPECT_EQ(n1.wakes, 0);
  applyOk(c, reg(node("n1")));
  EXPECT_EQ(nodes.wakes, 2);
  EXPECT_EQ(n1.wakes, 1);
  applyOk(c, reg(node("n1"), service("web")));
  EXPECT_EQ(nodes.wakes, 2) << "a service on a node does not change the node list";
  EXPECT_EQ(n1.wakes, 2);
  applyOk(c, DeregisterRequest{"n1", "", ""});
  EXPECT_EQ(nodes.wakes, 3);
  EXPECT_EQ(n1.wakes, 3) << "the cascade is one batch: one wake-up";
}

TEST(WatchTest, ChecksInState) {
  Catalog c;
  applyOk(c, reg(node("n1"), std::nullopt, {check("c", CheckStatus::kPassing)}));
  Counter passing(c, WatchScope::checksInState(CheckStatus::kPassing));
  Counter warning(c, WatchScope::checksInState(CheckStatus::kWarning));
  Counter critical(c, WatchScope::checksInState(CheckStatus::kCritical));
  Counter any(c, WatchScope::checksInState(std::nullopt));
  applyOk(c, CheckUpdateRequest{"n1", "c", CheckStatus::kCritical, ""});
  EXPECT_EQ(passing.wakes, 1) << "a check left passing";
  EXPECT_EQ(warning.wakes, 0);
  EXPECT_EQ(critical.wakes, 1);
  EXPECT_EQ(any.wakes, 1);
  applyOk(c, CheckUpdateRequest{"n1", "c", CheckStatus::kCritical, "new output"});
  EXPECT_EQ(passing.wakes, 1);
  EXPECT_EQ(critical.wakes, 2);
  EXPECT_EQ(any.wakes, 2);
}

TEST(WatchTest, KvKeyAndPrefixScopes) {
  Catalog c;
  Counter key(c, WatchScope::kvKey("app/db/url"));
  Counter other_key(c, WatchScope::kvKey("app/db/user"));
  Counter app(c, WatchScope::kvPrefix("app/"));
  Counter ap(c, WatchScope::kvPrefix("ap"));
  Counter everything(c, WatchScope::kvPrefix(""));
  Counter web(c, WatchScope::kvPrefix("app/web/"));
  Counter longer(c, WatchScope::kvPrefix("app/db/url/extra"));
  applyOk(c, KvPutRequest{"app/db/url", "pg://", 0, std::nullopt});
  EXPECT_EQ(key.wakes, 1);
  EXPECT_EQ(other_key.wakes, 0);
  EXPECT_EQ(app.wakes, 1);
  EXPECT_EQ(ap.wakes, 1);
  EXPECT_EQ(everything.wakes, 1);
  EXPECT_EQ(web.wakes, 0);
  EXPECT_EQ(longer.wakes, 0);
  // A recursive delete of two keys under app/ wakes app/ once.
  applyOk(c, KvPutRequest{"app/db/user", "u", 0, std::nullopt});
  EXPECT_EQ(app.wakes, 2);
  applyOk(c, KvDeleteRequest{"app/", true, std::nullopt});
  EXPECT_EQ(app.wakes, 3);
  EXPECT_EQ(key.wakes, 2);
  EXPECT_EQ(other_key.wakes, 2);
  // Catalog changes do not wake KV watchers.
  applyOk(c, reg(node("n1")));
  EXPECT_EQ(everything.wakes, 3);
}

TEST(WatchTest, AllScopeSeesEverything) {
  Catalog c;
  Counter all(c, WatchScope::all());
  applyOk(c, reg(node("n1")));
  applyOk(c, KvPutRequest{"k", "v", 0, std::nullopt});
  EXPECT_EQ(all.wakes, 2);
}

TEST(WatchTest, WokenWatcherSeesANewIndex) {
  Catalog c;
  applyOk(c, reg(node("n1"), service("web", "w1")));
  applyOk(c, reg(node("n2"), service("db", "d1")));
  uint64_t seen = c.serviceInstances("web").index;
  uint64_t after = 0;
  auto h = c.watch(WatchScope::service("web"), [&] { after = c.serviceInstances("web").index; });
  ASSERT_TRUE(h.ok());
  applyOk(c, DeregisterRequest{"n1", "w1", ""});
  EXPECT_GT(after, seen) << "a blocking query woken must find the index moved";
  EXPECT_TRUE(c.serviceInstances("web").value.empty());
}

TEST(WatchTest, TenThousandWatchersWakeOnlyTheAffected) {
  Catalog c;
  constexpr int kServices = 10'000;
  for (int i = 0; i < kServices; ++i)
    applyOk(c, reg(node("n" + std::to_string(i % 100)),
                   service("svc-" + std::to_string(i), "id-" + std::to_string(i))));
  std::vector<int> wakes(kServices, 0);
  std::vector<WatchHandle> handles;
  handles.reserve(kServices);
  for (int i = 0; i < kServices; ++i) {
    auto h = c.watch(WatchScope::service("svc-" + std::to_string(i)), [&wakes, i] { ++wakes[i]; });
    ASSERT_TRUE(h.ok());
    handles.push_back(std::move(*h));
  }
  EXPECT_EQ(c.watcherCount(), static_cast<size_t>(kServices));
  auto t0 = std::chrono::steady_clock::now();
  for (int round = 0; round < 1000; ++round)
    applyOk(c, reg(node("n7"), service("svc-7", "id-7", static_cast<uint16_t>(1000 + round))));
  auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(wakes[7], 1000);
  int others = 0;
  for (int i = 0; i < kServices; ++i)
    if (i != 7)
      others += wakes[i];
  EXPECT_EQ(others, 0);
  // 1000 writes with 10k watchers registered: the cost must not scale with the watchers
  // (a scan of all of them per write would be ~10M callbacks checked).
  EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count(), 2000);
  handles.clear();
  EXPECT_EQ(c.watcherCount(), 0u);
}

TEST(WatchTest, CancelledWatcherIsNeverCalled) {
  Catalog c;
  int wakes = 0;
  {
    auto h = c.watch(WatchScope::kvKey("k"), [&] { ++wakes; });
    ASSERT_TRUE(h.ok());
  } // destroyed: cancelled
  applyOk(c, KvPutRequest{"k", "v", 0, std::nullopt});
  EXPECT_EQ(wakes, 0);
  EXPECT_EQ(c.watcherCount(), 0u);

  auto h = c.watch(WatchScope::kvKey("k"), [&] { ++wakes; });
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->active());
  h->cancel();
  EXPECT_FALSE(h->active());
  applyOk(c, KvPutRequest{"k", "v", 0, std::nullopt});
  EXPECT_EQ(wakes, 0);
}

TEST(WatchTest, CancelDuringAWakeUpRound) {
  Catalog c;
  // Both watch the same scope; whichever runs first cancels the other.
  WatchHandle first, second;
  int first_wakes = 0, second_wakes = 0;
  first = watchOk(c, WatchScope::kvKey("k"), [&] {
    ++first_wakes;
    second.cancel();
  });
  second = watchOk(c, WatchScope::kvKey("k"), [&] {
    ++second_wakes;
    first.cancel();
  });
  applyOk(c, KvPutRequest{"k", "v", 0, std::nullopt});
  EXPECT_EQ(first_wakes + second_wakes, 1) << "the cancelled one must not run in that round";

  // A watcher cancelling itself from its own callback (a blocking query that got its answer).
  WatchHandle self;
  int self_wakes = 0;
  self = watchOk(c, WatchScope::kvKey("s"), [&] {
    ++self_wakes;
    self.cancel();
  });
  applyOk(c, KvPutRequest{"s", "v", 0, std::nullopt});
  applyOk(c, KvPutRequest{"s", "v2", 0, std::nullopt});
  EXPECT_EQ(self_wakes, 1);
  first.cancel();
  EXPECT_EQ(c.watcherCount(), 0u);
}

TEST(WatchTest, WatcherAddedDuringARoundWaitsForTheNext) {
  Catalog c;
  WatchHandle outer, inner;
  int inner_wakes = 0;
  outer = watchOk(c, WatchScope::kvKey("k"), [&] {
    if (!inner.active())
      inner = watchOk(c, WatchScope::kvKey("k"), [&] { ++inner_wakes; });
  });
  applyOk(c, KvPutRequest{"k", "1", 0, std::nullopt});
  EXPECT_EQ(inner_wakes, 0);
  applyOk(c, KvPutRequest{"k", "2", 0, std::nullopt});
  EXPECT_EQ(inner_wakes, 1);
}

TEST(WatchTest, CallbacksCannotApplySynchronously) {
  Catalog c;
  Status inner = okStatus();
  auto h = c.watch(WatchScope::kvKey("k"), [&] {
    auto r = c.apply(KvPutRequest{"other", "v", 0, std::nullopt});
    inner = r.ok() ? okStatus() : Status(r.error());
  });
  ASSERT_TRUE(h.ok());
  applyOk(c, KvPutRequest{"k", "v", 0, std::nullopt});
  ASSERT_FALSE(inner.ok());
  EXPECT_EQ(inner.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_FALSE(c.kvGet("other").value);
}

TEST(WatchTest, HandleMayOutliveTheCatalog) {
  WatchHandle h;
  {
    Catalog c;
    h = watchOk(c, WatchScope::nodes(), [] {});
    EXPECT_TRUE(h.active());
  }
  EXPECT_FALSE(h.active());
  h.cancel(); // no-op, no crash
}

TEST(WatchTest, WatcherLimit) {
  CatalogSettings s;
  s.max_watchers = 2;
  Catalog c(s);
  auto a = c.watch(WatchScope::nodes(), [] {});
  auto b = c.watch(WatchScope::nodes(), [] {});
  auto d = c.watch(WatchScope::nodes(), [] {});
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().code(), ErrorCode::kResourceExhausted);
  a->cancel();
  EXPECT_TRUE(c.watch(WatchScope::nodes(), [] {}).ok()) << "a cancelled slot is free again";
}

TEST(WatchTest, ObserverSeesEveryBatchBeforeWatchers) {
  Catalog c;
  struct Recorder : CatalogObserver {
    std::vector<std::string> log;
    void onApplied(const Batch& b) override {
      log.push_back("observer " + std::to_string(b.revision) + " " +
                    std::to_string(b.mutations.size()));
    }
  } rec;
  c.addObserver(&rec);
  auto h = c.watch(WatchScope::nodes(), [&] { rec.log.push_back("watcher"); });
  ASSERT_TRUE(h.ok());
  applyOk(c, reg(node("n1"), service("web")));
  EXPECT_THAT(rec.log, ElementsAre("observer 1 2", "watcher"));
  c.removeObserver(&rec);
  applyOk(c, reg(node("n2")));
  EXPECT_EQ(rec.log.size(), 3u) << "only the watcher after removal";
}

} // namespace
} // namespace trellis::registry
