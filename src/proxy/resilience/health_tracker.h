#pragma once

#include <cstdint>

#include "proxy/config.h"

namespace trellis::proxy {

// One endpoint's active-check state: healthy_threshold consecutive successes make an
// unhealthy endpoint healthy, unhealthy_threshold consecutive failures make a healthy one
// unhealthy. Starts as the check's start_healthy says.
class HealthTracker {
public:
  explicit HealthTracker(const HealthCheck& config)
      : healthy_threshold_(config.healthy_threshold),
        unhealthy_threshold_(config.unhealthy_threshold), healthy_(config.start_healthy) {}

  bool healthy() const { return healthy_; }
  // Records one check's result; returns true when this result changed healthy().
  bool onResult(bool success) {
    if (success) {
      failures_ = 0;
      if (!healthy_ && ++successes_ >= healthy_threshold_) {
        healthy_ = true;
        successes_ = 0;
        return true;
      }
      return false;
    }
    successes_ = 0;
    if (healthy_ && ++failures_ >= unhealthy_threshold_) {
      healthy_ = false;
      failures_ = 0;
      return true;
    }
    return false;
  }
  // Carries a previous tracker's state over (a reload that keeps the endpoint).
  void inherit(const HealthTracker& o) {
    healthy_ = o.healthy_;
    successes_ = o.successes_;
    failures_ = o.failures_;
  }

private:
  uint32_t healthy_threshold_;
  uint32_t unhealthy_threshold_;
  bool healthy_;
  uint32_t successes_ = 0;
  uint32_t failures_ = 0;
};

} // namespace trellis::proxy
