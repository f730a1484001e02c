#include "base/time.h"

#include <algorithm>

namespace trellis {

// Starts at a fixed, recognisable instant so logs from simulated tests are reproducible.
SimulatedTimeSource::SimulatedTimeSource()
    : mono_(std::chrono::hours(1000)), sys_(std::chrono::seconds(1'700'000'000)) {}

void SimulatedTimeSource::advance(Duration d) {
  std::vector<TimeListener*> to_tell;
  {
    std::lock_guard lock(mu_);
    mono_ += d;
    sys_ += std::chrono::duration_cast<SystemTime::duration>(d);
    to_tell = listeners_;
  }
  for (TimeListener* l : to_tell)
    l->onTimeAdvanced();
}

SystemTime SimulatedTimeSource::systemTime() {
  std::lock_guard lock(mu_);
  return sys_;
}

MonotonicTime SimulatedTimeSource::monotonicTime() {
  std::lock_guard lock(mu_);
  return mono_;
}

void SimulatedTimeSource::addListener(TimeListener* l) {
  std::lock_guard lock(mu_);
  listeners_.push_back(l);
}

void SimulatedTimeSource::removeListener(TimeListener* l) {
  std::lock_guard lock(mu_);
  listeners_.erase(std::remove(listeners_.begin(), listeners_.end(), l), listeners_.end());
}

TimeSource& realTimeSource() {
  static RealTimeSource source;
  return source;
}

} // namespace trellis
