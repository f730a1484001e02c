#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/dispatcher.h"
#include "http/client.h"
#include "net/address.h"
#include "proxy/mesh/mesh_client.h"

// A sidecar's own instance in the registry, through the Consul-compatible API: registered
// once the inbound listener is bound (retried until a server takes it), deregistered on a
// clean shutdown.
namespace trellis::proxy::mesh {

struct InstanceRegistration {
  std::string id;
  std::string service;
  net::SocketAddress address; // the inbound listener's bound address
  std::vector<std::string> tags;
  std::map<std::string, std::string> meta;
  net::SocketAddress app;
  std::string health_path = "/healthz"; // HTTP check of the app; empty with health_tcp
  bool health_tcp = false;
  Duration check_interval = std::chrono::seconds(1);
  Duration check_timeout = std::chrono::seconds(1);
  Duration deregister_critical_after = std::chrono::minutes(1);
};

// The body of PUT /v1/agent/service/register for `r`.
std::string registrationBody(const InstanceRegistration& r);

class Registrar {
public:
  Registrar(Dispatcher& dispatcher, std::vector<net::SocketAddress> servers, std::string token,
            InstanceRegistration reg, uint64_t seed);
  ~Registrar();

  // Registers, retrying with backoff (rotating through servers) until one accepts.
  void start();
  // Stops retrying and deregisters; `done` runs when a server answered or all failed (each
  // tried once, bounded by `timeout` each).
  void deregister(Duration timeout, std::function<void()> done);
  bool registered() const { return registered_; }

private:
  void attempt();
  void deregisterFrom(size_t i, Duration timeout, std::function<void()> done);
  std::map<std::string, std::string> headers() const;

  Dispatcher& dispatcher_;
  std::vector<net::SocketAddress> servers_;
  std::string token_;
  InstanceRegistration reg_;
  ReconnectBackoff backoff_;
  http::Client http_;
  http::RequestHandle pending_;
  std::unique_ptr<Timer> retry_timer_;
  size_t server_ = 0;
  bool registered_ = false;
  bool stopping_ = false;
};

} // namespace trellis::proxy::mesh
