#pragma once

#include <cstdint>
#include <mutex>

#include "base/time.h"
#include "base/units.h"

namespace trellis::proxy {

// A token bucket: holds at most `burst` tokens (full at the start), refilled continuously at
// `rate` tokens per second. The arithmetic is in integer nanoseconds-of-a-token, so refills
// neither drift nor lose fractions. The caller passes `now`; not thread-safe (see
// SharedTokenBucket).
class TokenBucket {
public:
  TokenBucket(uint32_t rate, uint32_t burst, MonotonicTime now);

  // Takes one token if there is one.
  bool tryTake(MonotonicTime now);
  // Whole tokens available at `now`.
  uint64_t available(MonotonicTime now);
  // Time until the next token (0 when one is available); for Retry-After.
  Duration timeToNext(MonotonicTime now);

private:
  void refill(MonotonicTime now);

  // A token is kUnit "credits"; one second of refill adds rate * kUnit credits, i.e. one
  // credit per nanosecond per unit of rate.
  static constexpr uint64_t kUnit = 1'000'000'000;
  uint64_t rate_;
  uint64_t capacity_; // burst * kUnit
  uint64_t credits_;
  MonotonicTime last_;
};

// A TokenBucket shared by every worker of one proxy (one per rate-limited route), so the
// limit holds for the proxy as a whole. A short critical section; only routes with a
// rate_limit pay for it.
class SharedTokenBucket {
public:
  SharedTokenBucket(uint32_t rate, uint32_t burst, MonotonicTime now) : bucket_(rate, burst, now) {}

  bool tryTake(MonotonicTime now) {
    std::lock_guard lock(mu_);
    return bucket_.tryTake(now);
  }
  Duration timeToNext(MonotonicTime now) {
    std::lock_guard lock(mu_);
    return bucket_.timeToNext(now);
  }

private:
  std::mutex mu_;
  TokenBucket bucket_;
};

} // namespace trellis::proxy
