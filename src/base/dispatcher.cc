#include "base/dispatcher.h"

#include <asio/post.hpp>

namespace trellis {

class DispatcherTimer : public Timer {
public:
  DispatcherTimer(Dispatcher& d, std::function<void()> cb) : d_(d), cb_(std::move(cb)) {}
  ~DispatcherTimer() override { disable(); }

  // Timer
  void enable(Duration dur) override {
    disable();
    armed_seq_ = d_.next_seq_++;
    it_ = d_.schedule(d_.now() + dur, this);
    enabled_ = true;
  }
  void disable() override {
    if (enabled_) {
      d_.unschedule(it_);
      enabled_ = false;
    }
  }
  bool enabled() const override { return enabled_; }

private:
  friend class Dispatcher;
  Dispatcher& d_;
  std::function<void()> cb_;
  Dispatcher::TimerSet::iterator it_;
  uint64_t armed_seq_ = 0;
  bool enabled_ = false;
};

Dispatcher::Dispatcher(std::string name, TimeSource& time_source)
    // Sockets and timers of a loop are used only by its own thread (post() stays
    // thread-safe), so the reactor's per-descriptor locking can go.
    : name_(std::move(name)), time_(time_source), io_(ASIO_CONCURRENCY_HINT_UNSAFE_IO), work_(asio::make_work_guard(io_)),
      os_timer_(io_), owner_(std::this_thread::get_id()) {
  time_.addListener(this);
}

Dispatcher::~Dispatcher() {
  time_.removeListener(this);
  // Pending handlers go first, while the timers and deferred deletions they may touch exist
  // (as members, those would be destroyed before the io_context).
  shutdown();
  deferred_.clear();
}

void Dispatcher::shutdown() {
  if (shut_down_)
    return;
  shut_down_ = true;
  io_.shutdownServices();
}

std::unique_ptr<Timer> Dispatcher::createTimer(std::function<void()> cb) {
  return std::make_unique<DispatcherTimer>(*this, std::move(cb));
}

void Dispatcher::post(std::function<void()> cb) { asio::post(io_, std::move(cb)); }

void Dispatcher::deferredDelete(std::unique_ptr<DeferredDeletable> obj) {
  deferred_.push_back(std::move(obj));
  if (!deferred_posted_) {
    deferred_posted_ = true;
    post([this] { clearDeferred(); });
  }
}

void Dispatcher::clearDeferred() {
  deferred_posted_ = false;
  // Destructors may defer more deletions; those land in the fresh vector.
  auto batch = std::move(deferred_);
  deferred_.clear();
  batch.clear();
}

void Dispatcher::run() {
  if (shut_down_)
    return; // nothing would ever wake the loop up
  owner_ = std::this_thread::get_id();
  // An exit() that came before run() (another thread asked to stop before this one got
  // here) makes run() return at once; the loop is restarted afterwards for the next run().
  io_.run();
  io_.restart();
}

size_t Dispatcher::runReady() {
  if (shut_down_)
    return 0;
  owner_ = std::this_thread::get_id();
  if (io_.stopped())
    io_.restart();
  return io_.poll();
}

void Dispatcher::exit() { io_.stop(); }

Dispatcher::TimerSet::iterator Dispatcher::schedule(MonotonicTime at, DispatcherTimer* t) {
  auto it = timers_.emplace(at, t);
  if (!time_.isManual()) {
    if (at < os_timer_at_)
      armOsTimer();
  } else if (at <= time_.monotonicTime() && !fire_posted_) {
    // Simulated time does not move by itself: a timer already due fires on the next turn.
    fire_posted_ = true;
    post([this] {
      fire_posted_ = false;
      fireDueTimers();
    });
  }
  return it;
}

void Dispatcher::unschedule(TimerSet::iterator it) {
  // The OS timer stays armed; a wake-up with nothing due is cheap and re-arms for the next.
  timers_.erase(it);
}

void Dispatcher::armOsTimer() {
  if (timers_.empty()) {
    os_timer_at_ = MonotonicTime::max();
    return;
  }
  MonotonicTime at = timers_.begin()->first;
  if (at == os_timer_at_)
    return;
  os_timer_at_ = at;
  os_timer_.expires_at(at);
  os_timer_.async_wait([this](const std::error_code& ec) {
    if (ec)
      return; // re-armed or cancelled
    os_timer_at_ = MonotonicTime::max();
    fireDueTimers();
  });
}

void Dispatcher::fireDueTimers() {
  const MonotonicTime now = time_.monotonicTime();
  // Timers armed by callbacks during this pass wait for the next pass, so a timer that
  // re-arms itself with a zero delay cannot starve the loop.
  const uint64_t seq_limit = next_seq_;
  bool deferred_due = false;
  for (;;) {
    DispatcherTimer* due = nullptr;
    for (auto it = timers_.begin(); it != timers_.end() && it->first <= now; ++it) {
      if (it->second->armed_seq_ < seq_limit) {
        due = it->second;
        break;
      }
      deferred_due = true;
    }
    if (due == nullptr)
      break;
    due->disable();
    // Copy: the callback may destroy its own timer.
    auto cb = due->cb_;
    cb();
  }
  if (deferred_due)
    post([this] { fireDueTimers(); });
  if (!time_.isManual())
    armOsTimer();
}

void Dispatcher::onTimeAdvanced() {
  post([this] { fireDueTimers(); });
}

WorkerPool::WorkerPool(size_t n, TimeSource& time_source, const std::string& name_prefix) {
  for (size_t i = 0; i < n; ++i)
    dispatchers_.push_back(
        std::make_unique<Dispatcher>(name_prefix + "-" + std::to_string(i), time_source));
}

WorkerPool::~WorkerPool() { stop(); }

void WorkerPool::start() {
  for (auto& d : dispatchers_)
    threads_.emplace_back([dp = d.get()] { dp->run(); });
}

void WorkerPool::stop() {
  for (auto& d : dispatchers_)
    d->exit();
  for (auto& t : threads_)
    if (t.joinable())
      t.join();
  threads_.clear();
}

} // namespace trellis
