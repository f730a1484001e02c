#pragma once

#include <cstdint>

#include "base/units.h"
#include "proxy/config.h"

namespace trellis::proxy {

// Why a try failed, as the retry policy's `on` list sees it.
enum class TryFailure : uint8_t {
  kConnectFailure, // never reached the upstream: refused, unreachable, connect timeout
  kReset,          // the connection closed or reset before a response head arrived
  kTimeout,        // per_try_timeout before a response head arrived (a 504)
  kBadResponse,    // the response did not parse (a 502)
  kStatus,         // a complete response head with this status
};

// The mesh's retries where no TrafficPolicy says otherwise: one retry, on connect failure
// (any method: the request reached no app) and on reset (idempotent methods only, by
// methodAllowsRetry). A request in flight to an instance killed at that moment is reset; with
// connect failures alone it would fail. Backoff and budget keep RetryPolicy's defaults.
RetryPolicy meshDefaultRetries();

// Whether `policy.on` covers this failure (`status` matters for kStatus only). 5xx covers
// every failure; gateway-error covers connect failures, resets, timeouts, bad responses and
// 502/503/504; connect-failure and reset cover just those.
bool retryOnCovers(const RetryPolicy& policy, TryFailure f, uint16_t status);

// Whether a request with this method may be retried after `f`: idempotent methods always;
// others only when the request never reached an upstream (connect failure) unless the
// route sets retry_non_idempotent.
bool methodAllowsRetry(const RetryPolicy& policy, std::string_view method, TryFailure f);

// The wait before retry number `retry` (1 for the first retry): "full jitter" exponential
// backoff, uniform in [0, min(backoff_max, backoff_base * 2^(retry-1))]. `random` is a
// uniform 64-bit value.
Duration retryBackoff(const RetryPolicy& policy, uint32_t retry, uint64_t random);

// The retry budget: whether one more retry may be decided when `active_requests` requests
// (to the cluster, this one included) are in flight, `retries_trying` of them on a retry try
// and `retries_waiting` in a retry's backoff. A retry is concurrent from the moment it is
// decided: allowed while fewer than budget_min_concurrency are, or while they (this one
// included) stay within budget_percent of the active requests. Counting the waiting ones
// matters when failures are instant: retries then spend their life in backoff, and counting
// only tries would let almost every request retry.
bool retryBudgetAllows(const RetryPolicy& policy, uint64_t active_requests,
                       uint64_t retries_trying, uint64_t retries_waiting = 0);

} // namespace trellis::proxy
