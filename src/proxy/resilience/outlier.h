#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "base/time.h"
#include "base/units.h"
#include "proxy/config.h"

namespace trellis::proxy {

// What one request's outcome says about the endpoint that served it.
enum class Outcome : uint8_t {
  kSuccess,       // any response below 500
  k5xx,           // a 5xx response other than 502/503/504
  kGatewayError,  // a 502, 503 or 504 response
  kLocalFailure,  // connect failure or timeout, reset, timeout, unparseable response
};

enum class EjectReason : uint8_t { kConsecutive5xx, kConsecutiveGatewayFailure, kCount };
const char* ejectReasonName(EjectReason r); // "consecutive_5xx", "consecutive_gateway_failure"

// Passive outlier detection for one cluster: the arithmetic only (no locks, no clocks; the
// caller passes `now`). Every 5xx and every local failure counts towards consecutive_5xx;
// gateway errors and local failures count towards consecutive_gateway_failure; anything else
// resets both. Reaching a threshold ejects the endpoint at once (not at the next interval),
// for base_ejection_time x (times ejected), capped at max(max_ejection_time,
// base_ejection_time). At most max_ejection_percent of the endpoints are ejected at a time,
// but never fewer than one (0 percent: never eject). tick(), called every `interval`, returns
// endpoints whose time is up and lowers the multiplier of endpoints that stayed in.
class OutlierDetector {
public:
  OutlierDetector(const OutlierDetection& config, size_t endpoints);

  // Records an outcome. Returns the reason when this outcome ejects the endpoint.
  std::optional<EjectReason> onOutcome(size_t ep, Outcome o, MonotonicTime now);
  // Unejects endpoints whose ejection ended by `now` and returns them.
  std::vector<size_t> tick(MonotonicTime now);

  bool ejected(size_t ep) const { return eps_[ep].ejected; }
  size_t ejectedCount() const { return ejected_; }
  uint32_t ejectionCount(size_t ep) const { return eps_[ep].multiplier; }
  MonotonicTime ejectedUntil(size_t ep) const { return eps_[ep].until; }
  // How many endpoints may be ejected at once.
  size_t maxEjected() const;
  // Ejections refused because maxEjected() were already out.
  uint64_t overflows() const { return overflows_; }

  // Copies endpoint `from` of `other` (same configuration or not) into endpoint `to`: used
  // when a reload keeps an endpoint, so its ejection survives.
  void inherit(size_t to, const OutlierDetector& other, size_t from);

private:
  struct EndpointState {
    uint32_t consecutive_5xx = 0;
    uint32_t consecutive_gateway = 0;
    uint32_t multiplier = 0; // ejections not yet forgiven
    bool ejected = false;
    MonotonicTime until{};
  };
  std::optional<EjectReason> eject(size_t ep, EjectReason reason, MonotonicTime now);

  OutlierDetection config_;
  std::vector<EndpointState> eps_;
  size_t ejected_ = 0;
  uint64_t overflows_ = 0;
};

} // namespace trellis::proxy
