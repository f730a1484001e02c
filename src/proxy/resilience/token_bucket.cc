#include "proxy/resilience/token_bucket.h"

#include <algorithm>

namespace trellis::proxy {

TokenBucket::TokenBucket(uint32_t rate, uint32_t burst, MonotonicTime now)
    : rate_(rate), capacity_(static_cast<uint64_t>(std::max<uint32_t>(burst, 1)) * kUnit),
      credits_(capacity_), last_(now) {}

void TokenBucket::refill(MonotonicTime now) {
  if (now <= last_)
    return; // time never runs backwards here; a stale `now` from another thread adds nothing
  const uint64_t elapsed = static_cast<uint64_t>((now - last_).count());
  last_ = now;
  if (rate_ == 0)
    return;
  // elapsed * rate can overflow only after ~584 years / rate of idleness; cap first.
  const uint64_t room = capacity_ - credits_;
  if (elapsed >= room / rate_ + 1) {
    credits_ = capacity_;
    return;
  }
  credits_ += elapsed * rate_;
}

bool TokenBucket::tryTake(MonotonicTime now) {
  refill(now);
  if (credits_ < kUnit)
    return false;
  credits_ -= kUnit;
  return true;
}

uint64_t TokenBucket::available(MonotonicTime now) {
  refill(now);
  return credits_ / kUnit;
}

Duration TokenBucket::timeToNext(MonotonicTime now) {
  refill(now);
  if (credits_ >= kUnit)
    return Duration(0);
  if (rate_ == 0)
    return Duration::max();
  // (kUnit - credits) credits at `rate` credits per nanosecond, rounded up.
  return Duration((kUnit - credits_ + rate_ - 1) / rate_);
}

} // namespace trellis::proxy
