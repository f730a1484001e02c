#include "base/dispatcher.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace trellis {
namespace {

using namespace std::chrono_literals;

class SimulatedDispatcherTest : public testing::Test {
protected:
  SimulatedTimeSource time_;
  Dispatcher dispatcher_{"test", time_};

  void advance(Duration d) {
    time_.advance(d);
    dispatcher_.runReady();
  }
};

TEST_F(SimulatedDispatcherTest, TimerFiresOnlyWhenSimulatedTimeReachesIt) {
  int fired = 0;
  auto t = dispatcher_.createTimer([&] { ++fired; });
  t->enable(30s);
  EXPECT_TRUE(t->enabled());
  advance(29s);
  EXPECT_EQ(fired, 0);
  EXPECT_TRUE(t->enabled());
  advance(1s);
  EXPECT_EQ(fired, 1);
  EXPECT_FALSE(t->enabled());
  advance(1h);
  EXPECT_EQ(fired, 1) << "a one-shot timer fires once";
}

TEST_F(SimulatedDispatcherTest, TimersFireInDeadlineOrder) {
  std::vector<int> order;
  auto a = dispatcher_.createTimer([&] { order.push_back(1); });
  auto b = dispatcher_.createTimer([&] { order.push_back(2); });
  auto c = dispatcher_.createTimer([&] { order.push_back(3); });
  c->enable(300ms);
  a->enable(100ms);
  b->enable(200ms);
  advance(1s);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST_F(SimulatedDispatcherTest, DisableAndReenable) {
  int fired = 0;
  auto t = dispatcher_.createTimer([&] { ++fired; });
  t->enable(10s);
  t->disable();
  advance(20s);
  EXPECT_EQ(fired, 0);
  t->enable(5s);
  t->enable(15s); // re-arming replaces the earlier deadline
  advance(10s);
  EXPECT_EQ(fired, 0);
  advance(5s);
  EXPECT_EQ(fired, 1);
}

TEST_F(SimulatedDispatcherTest, PeriodicTimerRearmsFromItsCallback) {
  int fired = 0;
  std::unique_ptr<Timer> t;
  t = dispatcher_.createTimer([&] {
    ++fired;
    t->enable(1s);
  });
  t->enable(1s);
  for (int i = 0; i < 10; ++i)
    advance(1s);
  EXPECT_EQ(fired, 10);
}

TEST_F(SimulatedDispatcherTest, ZeroDelayRearmLetsOtherWorkRun) {
  int fired = 0;
  std::vector<int> other_seen_at;
  std::unique_ptr<Timer> t;
  t = dispatcher_.createTimer([&] {
    ++fired;
    if (fired < 50)
      t->enable(0s);
    if (fired == 3)
      dispatcher_.post([&] { other_seen_at.push_back(fired); });
  });
  t->enable(0s);
  dispatcher_.runReady();
  EXPECT_EQ(fired, 50);
  // Work posted while the timer keeps re-arming runs before the timer finishes its run,
  // because each pass fires only timers armed before it began.
  ASSERT_EQ(other_seen_at.size(), 1u);
  EXPECT_LT(other_seen_at[0], 50);
}

TEST_F(SimulatedDispatcherTest, TimerMayDeleteItselfInItsCallback) {
  int fired = 0;
  std::unique_ptr<Timer> t = dispatcher_.createTimer([&] {
    ++fired;
    t.reset();
  });
  t->enable(1s);
  advance(1s);
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(t, nullptr);
}

TEST_F(SimulatedDispatcherTest, CallbackMayDeleteAnotherDueTimer) {
  int fired_b = 0;
  std::unique_ptr<Timer> b = dispatcher_.createTimer([&] { ++fired_b; });
  std::unique_ptr<Timer> a = dispatcher_.createTimer([&] { b.reset(); });
  a->enable(1s);
  b->enable(2s);
  advance(5s);
  EXPECT_EQ(fired_b, 0);
}

struct Tracked : DeferredDeletable {
  explicit Tracked(bool* gone) : gone_(gone) {}
  ~Tracked() override { *gone_ = true; }
  bool* gone_;
};

TEST_F(SimulatedDispatcherTest, DeferredDeleteHappensOnALaterTurn) {
  bool gone = false;
  dispatcher_.deferredDelete(std::make_unique<Tracked>(&gone));
  EXPECT_FALSE(gone);
  dispatcher_.runReady();
  EXPECT_TRUE(gone);
}

TEST(DispatcherTest, PostFromOtherThreadsRunsOnTheLoopThread) {
  Dispatcher d("loop", realTimeSource());
  std::thread::id loop_thread;
  std::atomic<int> count{0};
  std::thread loop([&] {
    loop_thread = std::this_thread::get_id();
    d.run();
  });
  constexpr int kPosters = 4, kEach = 1000;
  std::vector<std::thread> posters;
  std::atomic<int> wrong_thread{0};
  for (int i = 0; i < kPosters; ++i)
    posters.emplace_back([&] {
      for (int j = 0; j < kEach; ++j)
        d.post([&] {
          if (!d.isThreadSafe())
            wrong_thread++;
          count++;
        });
    });
  for (auto& p : posters)
    p.join();
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  d.post([&] {
    std::lock_guard l(mu);
    done = true;
    cv.notify_all();
  });
  {
    std::unique_lock l(mu);
    ASSERT_TRUE(cv.wait_for(l, 10s, [&] { return done; }));
  }
  d.exit();
  loop.join();
  EXPECT_EQ(count.load(), kPosters * kEach);
  EXPECT_EQ(wrong_thread.load(), 0);
}

TEST(DispatcherTest, RealTimerFires) {
  Dispatcher d("loop", realTimeSource());
  bool fired = false;
  auto t = d.createTimer([&] {
    fired = true;
    d.exit();
  });
  t->enable(5ms);
  auto guard = d.createTimer([&] { d.exit(); });
  guard->enable(10s); // bounds the test if the timer never fires
  d.run();
  EXPECT_TRUE(fired);
}

TEST(WorkerPoolTest, EachWorkerRunsItsOwnLoop) {
  WorkerPool pool(3, realTimeSource());
  pool.start();
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::thread::id> ids;
  for (size_t i = 0; i < pool.size(); ++i)
    pool.dispatcher(i).post([&] {
      std::lock_guard l(mu);
      ids.push_back(std::this_thread::get_id());
      cv.notify_all();
    });
  {
    std::unique_lock l(mu);
    ASSERT_TRUE(cv.wait_for(l, 10s, [&] { return ids.size() == 3; }));
  }
  pool.stop();
  EXPECT_NE(ids[0], ids[1]);
  EXPECT_NE(ids[1], ids[2]);
  EXPECT_NE(ids[0], ids[2]);
  EXPECT_NE(ids[0], std::this_thread::get_id());
}

TEST(WorkerPoolTest, SimulatedTimeDrivesTimersOnWorkerThreads) {
  SimulatedTimeSource time;
  WorkerPool pool(2, time);
  std::atomic<int> fired{0};
  std::vector<std::unique_ptr<Timer>> timers(2);
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<int> armed{0};
  pool.start();
  for (size_t i = 0; i < 2; ++i)
    pool.dispatcher(i).post([&, i] {
      timers[i] = pool.dispatcher(i).createTimer([&] {
        fired++;
        cv.notify_all();
      });
      timers[i]->enable(10s);
      armed++;
      cv.notify_all();
    });
  {
    std::unique_lock l(mu);
    ASSERT_TRUE(cv.wait_for(l, 10s, [&] { return armed == 2; }));
  }
  time.advance(9s);
  // Nothing is due: a round trip through each loop proves the advance was processed.
  std::atomic<int> ticks{0};
  for (size_t i = 0; i < 2; ++i)
    pool.dispatcher(i).post([&] {
      ticks++;
      cv.notify_all();
    });
  {
    std::unique_lock l(mu);
    ASSERT_TRUE(cv.wait_for(l, 10s, [&] { return ticks == 2; }));
  }
  EXPECT_EQ(fired.load(), 0);
  time.advance(1s);
  {
    std::unique_lock l(mu);
    ASSERT_TRUE(cv.wait_for(l, 10s, [&] { return fired == 2; }));
  }
  for (size_t i = 0; i < 2; ++i)
    pool.dispatcher(i).post([&, i] { timers[i].reset(); });
  pool.stop();
  timers.clear();
}

} // namespace
} // namespace trellis
