#include "proxy/stats.h"

namespace trellis::proxy {

Result<ProxyStats> ProxyStats::create(telemetry::Registry& r) {
  ProxyStats s;
  auto counter = [&](telemetry::CounterFamily*& out, std::string_view name,
                     std::string_view help, telemetry::LabelNames labels) -> Status {
    auto f = r.counter(name, help, std::move(labels));
    if (!f.ok())
      return f.error();
    out = *f;
    return okStatus();
  };
  auto gauge = [&](telemetry::GaugeFamily*& out, std::string_view name, std::string_view help,
                   telemetry::LabelNames labels) -> Status {
    auto f = r.gauge(name, help, std::move(labels));
    if (!f.ok())
      return f.error();
    out = *f;
    return okStatus();
  };
  TRELLIS_RETURN_IF_ERROR(counter(s.requests, "trellis_proxy_requests_total",
                                  "HTTP requests answered, by listener, route, cluster and "
                                  "response code class",
                                  {"listener", "route", "cluster", "code_class"}));
  auto h = r.histogram("trellis_proxy_request_duration_seconds",
                       "Time from the first byte of a request to the last byte of its response",
                       {"listener", "cluster"});
  if (!h.ok())
    return h.error();
  s.duration = *h;
  TRELLIS_RETURN_IF_ERROR(counter(s.downstream_cx, "trellis_proxy_downstream_connections_total",
                                  "Downstream connections accepted", {"listener"}));
  TRELLIS_RETURN_IF_ERROR(gauge(s.downstream_cx_active,
                                "trellis_proxy_downstream_connections_active",
                                "Downstream connections open now", {"listener"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.downstream_cx_rejected,
                                  "trellis_proxy_downstream_connections_rejected_total",
                                  "Downstream connections closed at once because the listener "
                                  "was at max_connections",
                                  {"listener"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.upstream_cx, "trellis_proxy_upstream_connections_total",
                                  "Upstream connections opened", {"cluster"}));
  TRELLIS_RETURN_IF_ERROR(gauge(s.upstream_cx_active, "trellis_proxy_upstream_connections_active",
                                "Upstream connections open now (busy or idle in a pool)",
                                {"cluster"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.pool_reuse, "trellis_proxy_upstream_pool_reuse_total",
                                  "Requests sent on a pooled keep-alive upstream connection",
                                  {"cluster"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.upstream_errors, "trellis_proxy_upstream_errors_total",
                                  "Upstream failures by kind (connect_failure, connect_timeout, "
                                  "reset, bad_response, proxy_error)",
                                  {"cluster", "kind"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.bytes_received, "trellis_proxy_downstream_bytes_received_total",
                                  "Bytes read from downstream connections", {"listener"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.bytes_sent, "trellis_proxy_downstream_bytes_sent_total",
                                  "Bytes written to downstream connections", {"listener"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.parse_errors, "trellis_proxy_parse_errors_total",
                                  "Malformed downstream requests, by kind", {"listener", "kind"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.local_replies, "trellis_proxy_local_replies_total",
                                  "Responses the proxy made itself, by response flag",
                                  {"listener", "flag"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.reloads, "trellis_proxy_config_reloads_total",
                                  "Configuration reloads, by result", {"result"}));
  TRELLIS_RETURN_IF_ERROR(gauge(s.config_info, "trellis_proxy_config_generation",
                                "Generation of the active configuration (1 at start)", {}));
  TRELLIS_RETURN_IF_ERROR(counter(s.retries, "trellis_proxy_retries_total",
                                  "Retries started (tries after a request's first)",
                                  {"cluster"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.retries_succeeded, "trellis_proxy_retries_succeeded_total",
                                  "Requests whose retry got a response that was not retried "
                                  "again",
                                  {"cluster"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.retries_budget_exhausted,
                                  "trellis_proxy_retries_budget_exhausted_total",
                                  "Retries not made because the cluster's retry budget was used "
                                  "up",
                                  {"cluster"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.overflow, "trellis_proxy_upstream_overflow_total",
                                  "Requests refused (503 UO) or retries not made because a "
                                  "circuit-breaker limit was reached, by limit",
                                  {"cluster", "limit"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.panic, "trellis_proxy_lb_panic_total",
                                  "Endpoint picks made in panic mode (too few healthy endpoints, "
                                  "so all were used)",
                                  {"cluster"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.timeouts, "trellis_proxy_timeouts_total",
                                  "Timeouts by kind (connect, per_try, request, upstream_idle, "
                                  "downstream_idle, header_read)",
                                  {"listener", "kind"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.rate_limited, "trellis_proxy_rate_limited_total",
                                  "Requests refused by a route's local rate limit",
                                  {"listener", "route"}));
  TRELLIS_RETURN_IF_ERROR(counter(s.faults, "trellis_proxy_faults_injected_total",
                                  "Faults injected by a route's fault configuration, by kind "
                                  "(delay, abort)",
                                  {"listener", "route", "kind"}));
  return s;
}

} // namespace trellis::proxy
