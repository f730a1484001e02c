#include "base/signals.h"

#include <csignal>

#include <gtest/gtest.h>

namespace trellis {
namespace {

using namespace std::chrono_literals;

// Runs the loop until `done` or a real-time bound passes (the bound only stops a broken test).
void runUntil(Dispatcher& d, const bool& done) {
  auto guard = d.createTimer([&] { d.exit(); });
  guard->enable(10s);
  while (!done && guard->enabled()) {
    d.runReady();
    if (!done)
      d.post([] {});
    d.io().run_one_for(std::chrono::milliseconds(50));
  }
}

TEST(SignalWatcherTest, HupReloadsAndTermStopsOnTheLoopThread) {
  Dispatcher d("main", realTimeSource());
  int reloads = 0, stop_signo = 0;
  bool done = false;
  SignalWatcher w(
      d,
      [&](int signo) {
        stop_signo = signo;
        done = true;
      },
      [&] { ++reloads; });
  std::raise(SIGHUP);
  // Wait (bounded) for the reload to be delivered, then send TERM.
  for (int i = 0; i < 200 && reloads == 0; ++i)
    d.io().run_one_for(std::chrono::milliseconds(50));
  EXPECT_EQ(reloads, 1);
  EXPECT_EQ(stop_signo, 0) << "SIGHUP must not stop";
  std::raise(SIGTERM);
  runUntil(d, done);
  EXPECT_EQ(stop_signo, SIGTERM);
  EXPECT_EQ(reloads, 1);
}

} // namespace
} // namespace trellis
