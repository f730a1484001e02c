#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include "base/time.h"

namespace trellis {

// A one-shot timer owned by one dispatcher; used only on that dispatcher's thread.
class Timer {
public:
  virtual ~Timer() = default;
  // Arms (or re-arms) the timer to fire once after `d` of the dispatcher's time source.
  virtual void enable(Duration d) = 0;
  virtual void disable() = 0;
  virtual bool enabled() const = 0;
};

// Something destroyed later on its loop, because it is being torn down from its own callback.
class DeferredDeletable {
public:
  virtual ~DeferredDeletable() = default;
};

class DispatcherTimer;

// One event loop (one asio::io_context) run by one thread. Objects created on a dispatcher
// live on its thread; other threads reach them only through post(). Timers are kept in the
// dispatcher's own ordered set, keyed by the TimeSource's monotonic time, so a simulated clock
// drives them exactly as the real one does.
class Dispatcher : private TimeListener {
public:
  Dispatcher(std::string name, TimeSource& time_source);
  ~Dispatcher() override;

  const std::string& name() const { return name_; }
  TimeSource& timeSource() { return time_; }
  MonotonicTime now() { return time_.monotonicTime(); }
  // The io_context that sockets of this loop are bound to.
  asio::io_context& io() { return io_; }

  // Creates a timer whose callback runs on this dispatcher's thread.
  std::unique_ptr<Timer> createTimer(std::function<void()> cb);

  // Queues `cb` to run on this dispatcher's thread. Thread-safe.
  void post(std::function<void()> cb);

  // Destroys `obj` on a later turn of the loop. Call on this dispatcher's thread.
  void deferredDelete(std::unique_ptr<DeferredDeletable> obj);

  // Runs the loop on the calling thread until exit() is called.
  void run();
  // Runs whatever is ready now (handlers, due timers) without blocking; returns how many
  // handlers ran. For tests and for draining before teardown.
  size_t runReady();
  // Makes run() return. Thread-safe.
  void exit();
  // Destroys, without running them, every handler still queued or waiting for I/O (and what
  // they own: sessions that reference objects about to go). For teardown, before destroying
  // what those handlers reference; call on the loop's thread while it is not running.
  // Afterwards the loop no longer runs (run() and runReady() return at once, posted handlers
  // are destroyed with the dispatcher); sockets and timers may still be closed and destroyed.
  // The destructor does it first. Idempotent.
  void shutdown();

  // True when called on the thread that is running (or last ran) this loop.
  bool isThreadSafe() const { return std::this_thread::get_id() == owner_.load(); }

private:
  friend class DispatcherTimer;
  using TimerSet = std::multimap<MonotonicTime, DispatcherTimer*>;
  // An io_context whose services can be shut down before it is destroyed (asio's shutdown()
  // is protected: the destructor is its only caller otherwise).
  class Context : public asio::io_context {
  public:
    using asio::io_context::io_context;
    void shutdownServices() { shutdown(); }
  };

  TimerSet::iterator schedule(MonotonicTime at, DispatcherTimer* t);
  void unschedule(TimerSet::iterator it);
  void armOsTimer();
  void fireDueTimers();
  void clearDeferred();
  // TimeListener
  void onTimeAdvanced() override;

  std::string name_;
  TimeSource& time_;
  Context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  asio::steady_timer os_timer_;
  MonotonicTime os_timer_at_{MonotonicTime::max()};
  TimerSet timers_;
  std::vector<std::unique_ptr<DeferredDeletable>> deferred_;
  bool deferred_posted_ = false;
  uint64_t next_seq_ = 0;
  bool fire_posted_ = false;
  bool shut_down_ = false;
  std::atomic<std::thread::id> owner_;
};

// N dispatchers on N threads: the data plane's workers.
class WorkerPool {
public:
  WorkerPool(size_t n, TimeSource& time_source, const std::string& name_prefix = "worker");
  ~WorkerPool();

  size_t size() const { return dispatchers_.size(); }
  Dispatcher& dispatcher(size_t i) { return *dispatchers_[i]; }

  // Starts one thread per dispatcher, each running its loop.
  void start();
  // Asks every loop to exit and joins the threads. Idempotent.
  void stop();

private:
  std::vector<std::unique_ptr<Dispatcher>> dispatchers_;
  std::vector<std::thread> threads_;
};

} // namespace trellis
