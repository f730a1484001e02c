#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "base/dispatcher.h"
#include "control/blocking.h"
#include "http/server.h"
#include "registry/health.h"
#include "registry/registry.h"
#include "telemetry/metrics.h"

// The Consul-compatible HTTP API (docs/api.md): agent, catalog, health, KV and status
// endpoints, blocking queries, and /metrics. Threading: everything runs on the loop thread
// that owns the registry.
namespace trellis::control {

struct ApiSettings {
  std::string node_name;       // the agent's node (agent endpoints act on it)
  std::string advertise;       // host:port reported by /v1/status/leader and /v1/agent/self
  size_t max_kv_value_bytes = 512 * 1024; // larger KV PUT bodies get 413 (Consul's limit)
  BlockingSettings blocking;
};

class Api {
public:
  Api(Dispatcher& loop, registry::Registry& registry, registry::HealthScheduler& health,
      telemetry::Registry& metrics, registry::RandomSource& random, ApiSettings settings);
  ~Api();

  // The http::Server's handler.
  void handle(http::ServerRequest& req, std::shared_ptr<http::ResponseWriter> w);

  // The address /v1/status/* reports, known once the listener is bound.
  void setAdvertise(std::string address) { settings_.advertise = std::move(address); }

  size_t parkedQueries() const { return blocking_.parked(); }

private:
  using Writer = std::shared_ptr<http::ResponseWriter>;
  // What a read produces: its index and the JSON (or raw) body; status 200 unless set.
  struct ReadResult {
    uint64_t index = 1;
    std::string body;
    uint16_t status = 200;
    std::string content_type = "application/json";
  };
  using Render = std::function<Result<ReadResult>()>;

  void route(http::ServerRequest& req, const Writer& w);
  void agent(http::ServerRequest& req, const Writer& w, std::string_view rest);
  void catalog(http::ServerRequest& req, const Writer& w, std::string_view rest);
  void health(http::ServerRequest& req, const Writer& w, std::string_view rest);
  void kv(http::ServerRequest& req, const Writer& w, std::string_view key);
  void status(http::ServerRequest& req, const Writer& w, std::string_view rest);

  // Answers a read, as a blocking query when ?index is given.
  void read(http::ServerRequest& req, const Writer& w, const std::string& endpoint,
            const registry::WatchScope& scope, Render render);
  // Submits a write and answers with `ok_body` (or the error) once it is durable.
  void write(const Writer& w, const std::string& endpoint, registry::WriteRequest req,
             std::string ok_body);
  void writeKv(const Writer& w, const std::string& endpoint, registry::WriteRequest req);
  void ttlUpdate(const Writer& w, const std::string& endpoint, std::string check_id,
                 registry::CheckStatus status, std::string output);

  void reply(const Writer& w, const std::string& endpoint, uint16_t status, std::string_view body,
             std::string_view content_type = "text/plain; charset=utf-8", uint64_t index = 0);
  void replyError(const Writer& w, const std::string& endpoint, const Error& e);
  bool requireMethod(http::ServerRequest& req, const Writer& w, const std::string& endpoint,
                     http::Method m);
  bool legacyPut(http::ServerRequest& req, const Writer& w, const std::string& endpoint);
  void countRequest(const std::string& endpoint, uint16_t status);

  Dispatcher& loop_;
  registry::Registry& registry_;
  registry::HealthScheduler& health_;
  telemetry::Registry& metrics_;
  ApiSettings settings_;
  BlockingQueries blocking_;

  telemetry::CounterFamily* requests_ = nullptr;
  telemetry::HistogramHandle write_latency_;
  std::map<std::pair<std::string, uint16_t>, telemetry::CounterHandle> request_handles_;
  std::vector<telemetry::CallbackRegistration> callbacks_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

} // namespace trellis::control
