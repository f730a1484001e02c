#pragma once

#include <chrono>
#include <mutex>
#include <vector>

#include "base/units.h"

namespace trellis {

using MonotonicTime = std::chrono::steady_clock::time_point;
using SystemTime = std::chrono::system_clock::time_point;

// Told when a manual time source moves; may be called on any thread.
class TimeListener {
public:
  virtual ~TimeListener() = default;
  virtual void onTimeAdvanced() = 0;
};

// The one way code reads the clock, so that tests can substitute simulated time.
class TimeSource {
public:
  virtual ~TimeSource() = default;

  // Wall-clock time, for logs and timestamps shown to people.
  virtual SystemTime systemTime() = 0;
  // Monotonic time, for every timeout, interval and duration.
  virtual MonotonicTime monotonicTime() = 0;

  // True when time moves only when a test says so. Dispatchers then fire timers on
  // onTimeAdvanced() instead of arming OS timers.
  virtual bool isManual() const { return false; }
  // Registers a listener for manual time moves (no-op for real time). Thread-safe.
  virtual void addListener(TimeListener*) {}
  virtual void removeListener(TimeListener*) {}
};

// Reads the real clocks.
class RealTimeSource : public TimeSource {
public:
  // TimeSource
  SystemTime systemTime() override { return std::chrono::system_clock::now(); }
  MonotonicTime monotonicTime() override { return std::chrono::steady_clock::now(); }
};

// Time that moves only by advance(); a test of a 30 s ejection takes microseconds.
// Thread-safe: advance() may be called from the test thread while dispatchers run elsewhere.
class SimulatedTimeSource : public TimeSource {
public:
  SimulatedTimeSource();

  // Moves both clocks forward by `d` and tells every listener.
  void advance(Duration d);

  // TimeSource
  SystemTime systemTime() override;
  MonotonicTime monotonicTime() override;
  bool isManual() const override { return true; }
  void addListener(TimeListener* l) override;
  void removeListener(TimeListener* l) override;

private:
  std::mutex mu_;
  MonotonicTime mono_;
  SystemTime sys_;
  std::vector<TimeListener*> listeners_;
};

// The process-wide real clock, for code that has no injected source (main, tools).
TimeSource& realTimeSource();

} // namespace trellis
