#include "proxy/resilience/retry.h"

#include <algorithm>

#include "proxy/lb/random.h"

namespace trellis::proxy {

RetryPolicy meshDefaultRetries() {
  RetryPolicy p;
  p.attempts = 1;
  p.on = RetryOn{.connect_failure = true,
                 .refused_stream = false,
                 .reset = true,
                 .status_5xx = false,
                 .gateway_error = false,
                 .retriable_status_codes = false};
  return p;
}

bool retryOnCovers(const RetryPolicy& p, TryFailure f, uint16_t status) {
  const RetryOn& on = p.on;
  switch (f) {
  case TryFailure::kConnectFailure:
    return on.connect_failure || on.gateway_error || on.status_5xx;
  case TryFailure::kReset:
    return on.reset || on.gateway_error || on.status_5xx;
  case TryFailure::kTimeout:
  case TryFailure::kBadResponse:
    return on.gateway_error || on.status_5xx;
  case TryFailure::kStatus:
    if (on.status_5xx && status >= 500 && status <= 599)
      return true;
    if (on.gateway_error && status >= 502 && status <= 504)
      return true;
    if (on.retriable_status_codes)
      return std::find(p.retriable_status_codes.begin(), p.retriable_status_codes.end(),
                       status) != p.retriable_status_codes.end();
    return false;
  }
  return false;
}

bool methodAllowsRetry(const RetryPolicy& p, std::string_view m, TryFailure f) {
  if (f == TryFailure::kConnectFailure || p.retry_non_idempotent)
    return true;
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "PUT" || m == "DELETE" ||
         m == "TRACE";
}

Duration retryBackoff(const RetryPolicy& p, uint32_t retry, uint64_t random) {
  if (retry == 0)
    retry = 1;
  Duration ceiling = p.backoff_base;
  for (uint32_t i = 1; i < retry && ceiling < p.backoff_max; ++i)
    ceiling *= 2;
  ceiling = std::min(ceiling, p.backoff_max);
  if (ceiling.count() <= 0)
    return Duration(0);
  return Duration(static_cast<int64_t>(
      scaleRandom(random, static_cast<uint64_t>(ceiling.count()) + 1)));
}

bool retryBudgetAllows(const RetryPolicy& p, uint64_t active_requests, uint64_t retries_trying,
                       uint64_t retries_waiting) {
  if (retries_trying + retries_waiting < p.budget_min_concurrency)
    return true;
  // (decided retries + 1) / requests <= percent / 100, in integers.
  return (retries_trying + retries_waiting + 1) * 100 <= active_requests * p.budget_percent;
}

} // namespace trellis::proxy
