#include "proxy/resilience/outlier.h"

#include <algorithm>

namespace trellis::proxy {

const char* ejectReasonName(EjectReason r) {
  switch (r) {
  case EjectReason::kConsecutive5xx:
    return "consecutive_5xx";
  case EjectReason::kConsecutiveGatewayFailure:
    return "consecutive_gateway_failure";
  case EjectReason::kCount:
    break;
  }
  return "unknown";
}

OutlierDetector::OutlierDetector(const OutlierDetection& config, size_t endpoints)
    : config_(config), eps_(endpoints) {}

size_t OutlierDetector::maxEjected() const {
  if (config_.max_ejection_percent == 0)
    return 0;
  return std::max<size_t>(1, eps_.size() * config_.max_ejection_percent / 100);
}

std::optional<EjectReason> OutlierDetector::onOutcome(size_t ep, Outcome o, MonotonicTime now) {
  EndpointState& s = eps_[ep];
  switch (o) {
  case Outcome::kSuccess:
    s.consecutive_5xx = 0;
    s.consecutive_gateway = 0;
    return std::nullopt;
  case Outcome::k5xx:
    s.consecutive_gateway = 0;
    ++s.consecutive_5xx;
    break;
  case Outcome::kGatewayError:
  case Outcome::kLocalFailure:
    ++s.consecutive_5xx;
    ++s.consecutive_gateway;
    break;
  }
  if (s.ejected)
    return std::nullopt; // traffic that was already on its way when it was ejected
  if (config_.consecutive_gateway_failure > 0 &&
      s.consecutive_gateway >= config_.consecutive_gateway_failure)
    return eject(ep, EjectReason::kConsecutiveGatewayFailure, now);
  if (config_.consecutive_5xx > 0 && s.consecutive_5xx >= config_.consecutive_5xx)
    return eject(ep, EjectReason::kConsecutive5xx, now);
  return std::nullopt;
}

std::optional<EjectReason> OutlierDetector::eject(size_t ep, EjectReason reason,
                                                  MonotonicTime now) {
  EndpointState& s = eps_[ep];
  // Either way the run is over: counting starts again from zero.
  s.consecutive_5xx = 0;
  s.consecutive_gateway = 0;
  if (ejected_ >= maxEjected()) {
    ++overflows_;
    return std::nullopt;
  }
  ++s.multiplier;
  const Duration cap = std::max(config_.max_ejection_time, config_.base_ejection_time);
  // base x multiplier without overflow: the multiplier is small, but stop at the cap anyway.
  Duration d = config_.base_ejection_time;
  for (uint32_t i = 1; i < s.multiplier && d < cap; ++i)
    d += config_.base_ejection_time;
  s.until = now + std::min(d, cap);
  s.ejected = true;
  ++ejected_;
  return reason;
}

std::vector<size_t> OutlierDetector::tick(MonotonicTime now) {
  std::vector<size_t> back;
  for (size_t i = 0; i < eps_.size(); ++i) {
    EndpointState& s = eps_[i];
    if (s.ejected) {
      if (now >= s.until) {
        s.ejected = false;
        --ejected_;
        back.push_back(i);
      }
    } else if (s.multiplier > 0) {
      // A whole interval in service without being ejected: forgive one ejection, so a
      // recovered endpoint's next ejection is short again.
      --s.multiplier;
    }
  }
  return back;
}

void OutlierDetector::inherit(size_t to, const OutlierDetector& other, size_t from) {
  const EndpointState& o = other.eps_[from];
  EndpointState& s = eps_[to];
  if (s.ejected)
    --ejected_;
  s = o;
  if (s.ejected)
    ++ejected_;
}

} // namespace trellis::proxy
