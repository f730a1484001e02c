#pragma once

#include <array>

#include "base/result.h"
#include "http/codec.h"
#include "telemetry/metrics.h"

namespace trellis::proxy {

// The proxy's metric families, registered once at start. Workers resolve per-shard handles
// from them when they build their runtime state, and never touch the families on the hot
// path. docs/metrics.md lists every series.
struct ProxyStats {
  telemetry::CounterFamily* requests = nullptr;        // listener, route, cluster, code_class
  telemetry::HistogramFamily* duration = nullptr;      // listener, cluster
  telemetry::CounterFamily* downstream_cx = nullptr;   // listener
  telemetry::GaugeFamily* downstream_cx_active = nullptr;
  telemetry::CounterFamily* downstream_cx_rejected = nullptr; // listener (max_connections)
  telemetry::CounterFamily* upstream_cx = nullptr;     // cluster
  telemetry::GaugeFamily* upstream_cx_active = nullptr;
  telemetry::CounterFamily* pool_reuse = nullptr;      // cluster
  telemetry::CounterFamily* upstream_errors = nullptr; // cluster, kind
  telemetry::CounterFamily* bytes_received = nullptr;  // listener (from downstream)
  telemetry::CounterFamily* bytes_sent = nullptr;      // listener (to downstream)
  telemetry::CounterFamily* parse_errors = nullptr;    // listener, kind
  telemetry::CounterFamily* local_replies = nullptr;   // listener, flag
  telemetry::CounterFamily* reloads = nullptr;         // result
  telemetry::GaugeFamily* config_info = nullptr;       // generation
  // Fault tolerance (docs/metrics.md). Endpoint health, ejections and circuit-breaker
  // remaining capacity live in the shared ClusterState and are rendered from it at scrape.
  telemetry::CounterFamily* retries = nullptr;                 // cluster
  telemetry::CounterFamily* retries_succeeded = nullptr;       // cluster
  telemetry::CounterFamily* retries_budget_exhausted = nullptr; // cluster
  telemetry::CounterFamily* overflow = nullptr;                // cluster, limit
  telemetry::CounterFamily* panic = nullptr;                   // cluster
  telemetry::CounterFamily* timeouts = nullptr;                // listener, kind
  telemetry::CounterFamily* rate_limited = nullptr;            // listener, route
  telemetry::CounterFamily* faults = nullptr;                  // listener, route, kind

  static Result<ProxyStats> create(telemetry::Registry& registry);
};

// "1xx".."5xx" for a status code, as the code_class label.
inline const char* codeClass(uint16_t status) {
  static const char* kNames[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
  size_t i = status / 100;
  return i >= 1 && i <= 5 ? kNames[i - 1] : "5xx";
}

} // namespace trellis::proxy
