#include "proxy/mesh/registration.h"

#include <nlohmann/json.hpp>

#include "base/log.h"

namespace trellis::proxy::mesh {

std::string registrationBody(const InstanceRegistration& r) {
  nlohmann::json check{
      {"Name", "app " + (r.health_tcp ? r.app.toString() : r.health_path)},
      {"Interval", formatDuration(r.check_interval)},
      {"Timeout", formatDuration(r.check_timeout)},
      {"DeregisterCriticalServiceAfter", formatDuration(r.deregister_critical_after)}};
  if (r.health_tcp)
    check["TCP"] = r.app.toString();
  else
    check["HTTP"] = "http://" + r.app.toString() + r.health_path;
  nlohmann::json body{{"ID", r.id},
                      {"Name", r.service},
                      {"Address", r.address.ip.to_string()},
                      {"Port", r.address.port},
                      {"Tags", r.tags},
                      {"Meta", r.meta},
                      {"Check", std::move(check)}};
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Registrar::Registrar(Dispatcher& dispatcher, std::vector<net::SocketAddress> servers,
                     std::string token, InstanceRegistration reg, uint64_t seed)
    : dispatcher_(dispatcher), servers_(std::move(servers)), token_(std::move(token)),
      reg_(std::move(reg)),
      backoff_(std::chrono::milliseconds(100), std::chrono::seconds(10), seed), http_(dispatcher) {
  server_ = servers_.empty() ? 0 : seed % servers_.size();
  retry_timer_ = dispatcher_.createTimer([this] { attempt(); });
}

Registrar::~Registrar() {
  pending_.cancel();
}

std::map<std::string, std::string> Registrar::headers() const {
  std::map<std::string, std::string> h{{"content-type", "application/json"}};
  if (!token_.empty())
    h["x-consul-token"] = token_;
  return h;
}

void Registrar::start() {
  if (!servers_.empty())
    attempt();
}

void Registrar::attempt() {
  if (stopping_)
    return;
  http::HeaderMap h;
  for (const auto& [k, v] : headers())
    h.add(k, v);
  const net::SocketAddress to = servers_[server_];
  pending_ = http_.request(
      to, "PUT", "/v1/agent/service/register", std::move(h), registrationBody(reg_),
      std::chrono::seconds(5), [this, to](Result<http::ClientResponse> r) {
        if (r.ok() && r->status == 200) {
          registered_ = true;
          TLOG_INFO("registered instance {} of {} at {} with {}", reg_.id, reg_.service,
                    reg_.address.toString(), to.toString());
          return;
        }
        const std::string why =
            r.ok() ? fmt::format("answered {}: {}", r->status, r->body) : r.error().message();
        const Duration wait = backoff_.next();
        server_ = (server_ + 1) % servers_.size();
        TLOG_WARN("registering instance {} with {} failed ({}); retrying in {}", reg_.id,
                  to.toString(), why, formatDuration(wait));
        retry_timer_->enable(wait);
      });
}

void Registrar::deregister(Duration timeout, std::function<void()> done) {
  stopping_ = true;
  retry_timer_->disable();
  pending_.cancel();
  if (servers_.empty()) {
    done();
    return;
  }
  deregisterFrom(0, timeout, std::move(done));
}

void Registrar::deregisterFrom(size_t i, Duration timeout, std::function<void()> done) {
  if (i == servers_.size()) {
    TLOG_WARN("could not deregister instance {}: no server answered", reg_.id);
    done();
    return;
  }
  http::HeaderMap h;
  for (const auto& [k, v] : headers())
    h.add(k, v);
  const net::SocketAddress to = servers_[(server_ + i) % servers_.size()];
  pending_ = http_.request(
      to, "PUT", "/v1/agent/service/deregister/" + reg_.id, std::move(h), "", timeout,
      [this, i, to, timeout, done = std::move(done)](Result<http::ClientResponse> r) mutable {
        if (r.ok() && (r->status == 200 || r->status == 404)) {
          TLOG_INFO("deregistered instance {} from {}", reg_.id, to.toString());
          done();
          return;
        }
        deregisterFrom(i + 1, timeout, std::move(done));
      });
}

} // namespace trellis::proxy::mesh
