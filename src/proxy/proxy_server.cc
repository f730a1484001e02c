#include "proxy/proxy_server.h"

#include <future>
#include <thread>
#include <unordered_map>

#include <malloc.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/log.h"

namespace trellis::proxy {

namespace {

size_t defaultConcurrency() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

} // namespace

ProxyServer::ProxyServer(Dispatcher& main, ProxyOptions options)
    : main_(main), options_(std::move(options)),
      concurrency_(options_.concurrency),
      registry_(telemetry::RegistryOptions{
          .shards = (options_.concurrency ? options_.concurrency : defaultConcurrency()) + 1}) {}

ProxyServer::~ProxyServer() {
  stop();
  // Sessions and tunnels are owned by the pending handlers of their worker's dispatcher (a
  // read on an idle keep-alive connection, a request waiting for a slow upstream) and use the
  // Worker, the stats and the access log: destroy them, unrun, while all of that exists. The
  // worker threads are joined; a worker on main_ shares its loop, which main's owner has
  // stopped running before destroying this (see the class comment).
  if (pool_) {
    for (size_t i = 0; i < pool_->size(); ++i)
      pool_->dispatcher(i).shutdown();
  } else if (!workers_.empty()) {
    main_.shutdown();
  }
  // Workers before their dispatchers: a Worker closes its acceptors and pools on its loop.
  workers_.clear();
  pool_.reset();
}

void ProxyServer::onWorkers(size_t from, size_t to, const std::function<void(size_t)>& fn) {
  std::vector<std::promise<void>> done(pool_ ? to - from : 0);
  for (size_t i = from; i < to; ++i) {
    Dispatcher& d = workerDispatcher(i);
    if (&d == &main_) {
      fn(i);
      continue;
    }
    d.post([&fn, i, &p = done[i - from]] {
      fn(i);
      p.set_value();
    });
  }
  for (auto& p : done)
    p.get_future().wait();
}

net::SocketAddress ProxyServer::adminAddress() const {
  return admin_ ? admin_->boundAddress() : net::SocketAddress{};
}

std::optional<net::SocketAddress> ProxyServer::listenerAddress(std::string_view name) const {
  auto it = bound_.find(std::string(name));
  if (it == bound_.end())
    return std::nullopt;
  return it->second.group.bound;
}

Status ProxyServer::start() {
  auto snap = loadConfigFile(options_.config_path);
  if (!snap.ok())
    return snap.error();
  return start(std::move(snap).value());
}

Status ProxyServer::start(std::shared_ptr<const Snapshot> initial) {
  if (concurrency_ == 0)
    concurrency_ = initial->concurrency ? initial->concurrency : defaultConcurrency();
  if (concurrency_ + 1 > registry_.shardCount())
    concurrency_ = registry_.shardCount() - 1;
  auto stats = ProxyStats::create(registry_);
  if (!stats.ok())
    return stats.error();
  stats_ = *stats;
  reload_ok_ = stats_.reloads->handle(0, {"success"});
  reload_failed_ = stats_.reloads->handle(0, {"failure"});
  generation_gauge_ = stats_.config_info->handle(0);

  if (initial->access_log) {
    telemetry::AccessLogOptions o;
    o.path = initial->access_log->path;
    auto log = telemetry::AccessLog::open(o, concurrency_);
    if (!log.ok())
      return log.error().withContext("access_log");
    access_log_ = std::move(log).value();
    TRELLIS_RETURN_IF_ERROR(access_log_->registerMetrics(registry_));
  }

  // One worker runs on the main dispatcher: a sidecar's usual setting, where handing every
  // update (and admin query) to a second thread and waiting costs more than it buys.
  if (concurrency_ > 1)
    pool_ = std::make_unique<WorkerPool>(concurrency_, main_.timeSource(), "worker");
  for (size_t i = 0; i < concurrency_; ++i)
    workers_.push_back(std::make_unique<Worker>(i, workerDispatcher(i), stats_,
                                                access_log_ ? &access_log_->worker(i) : nullptr));
  if (pool_)
    pool_->start();
  if (access_log_)
    onWorkers(0, concurrency_,
              [this](size_t i) { access_log_->worker(i).startTimer(workerDispatcher(i)); });

  auto st = apply(initial);
  if (!st.ok())
    return st;

  http::ServerSettings admin_settings;
  admin_ = std::make_unique<http::Server>(
      main_, admin_settings,
      [this](http::ServerRequest& req, std::shared_ptr<http::ResponseWriter> w) {
        handleAdmin(req, std::move(w));
      });
  if (auto s = admin_->listen(snapshot_->admin.address); !s.ok())
    return s.error().withContext("admin");
  TLOG_INFO("admin listening on {}", admin_->boundAddress().toString());
  TLOG_INFO("proxy started with {} workers, configuration {}", concurrency_, snapshot_->source);
  return okStatus();
}

Status ProxyServer::apply(std::shared_ptr<const Snapshot> snap) {
  if (snapshot_ && !(snap->admin == snapshot_->admin))
    TLOG_WARN("admin address changes need a restart; keeping {}",
              admin_ ? admin_->boundAddress().toString() : "");
  // Bind what is new first, so that a failure leaves everything as it was.
  std::map<std::string, BoundListener> fresh;
  for (const auto& l : snap->listeners) {
    auto it = bound_.find(l.name);
    if (it != bound_.end() && it->second.requested == l.address)
      continue;
    auto g = net::bindReusePortGroup(l.address, concurrency_);
    if (!g.ok())
      return g.error().withContext(fmt::format("listener {}", l.name));
    fresh[l.name] = BoundListener{l.address, std::move(g).value()};
  }
  // Each worker gets its own socket of each new group (a dup the worker owns).
  std::vector<std::map<std::string, int>> fds(concurrency_);
  for (auto& [name, b] : fresh)
    for (size_t i = 0; i < concurrency_; ++i)
      fds[i][name] = ::dup(b.group.sockets[i].fd());
  for (auto it = bound_.begin(); it != bound_.end();) {
    if (!snap->findListener(it->first) || fresh.count(it->first))
      it = bound_.erase(it);
    else
      ++it;
  }
  for (auto& [name, b] : fresh) {
    TLOG_INFO("listener {} listening on {}", name, b.group.bound.toString());
    bound_[name] = std::move(b);
  }
  size_t fresh_clusters = 0;
  std::vector<size_t> in_place;
  auto shared = sharedStateFor(*snap, fresh_clusters, in_place);
  const bool clusters_changed =
      fresh_clusters > 0 || !snapshot_ || snapshot_->clusters.size() != snap->clusters.size();
  snapshot_ = snap;
  shared_ = shared;
  onWorkers(0, concurrency_,
            [&](size_t i) { workers_[i]->apply(snap, shared, std::move(fds[i])); });
  if (!health_) {
    prober_ = std::make_unique<HealthProberImpl>(main_);
    health_ = std::make_unique<HealthChecker>(main_, *prober_, random_);
  }
  // A mesh delta replaces a few clusters in place: their ticks move, the rest is not visited.
  if (clusters_changed &&
      !(!in_place.empty() && health_->replaceClusters(in_place, shared->clusters)))
    health_->setClusters(shared->clusters.toVector());
  // The group's own descriptors are no longer needed: each worker holds a dup.
  for (auto& [name, b] : bound_)
    for (auto& s : b.group.sockets)
      s = net::ListenSocket();
  generation_++;
  generation_gauge_.set(static_cast<double>(generation_));
  // Parsing a large file leaves the YAML tree's memory free but held by malloc; give it back
  // so a proxy's resident size reflects what it keeps. Not after an update that replaced
  // clusters in place (a mesh delta, however many clusters it changed: a burst's change most):
  // that frees little, and trimming walks the whole heap (a fifth of such an update's time).
  if (in_place.empty() &&
      (fresh_clusters > kTrimAfterClusters || fresh_clusters * 2 > snap->clusters.size()))
    ::malloc_trim(0);
  return okStatus();
}

std::shared_ptr<SharedState> ProxyServer::sharedStateFor(const Snapshot& snap, size_t& fresh,
                                                       std::vector<size_t>& in_place) {
  fresh = 0;
  if (auto s = sharedStateInPlace(snap, fresh, in_place))
    return s;
  fresh = 0;
  in_place.clear();
  auto s = std::make_shared<SharedState>();
  s->clusters.reserve(snap.clusters.size());
  // The running snapshot's clusters by object (the same Cluster object means the same
  // content: keep its state as it is) and by name (new content: inherit endpoint state).
  std::unordered_map<const Cluster*, size_t> by_object;
  std::unordered_map<std::string_view, size_t> by_name;
  auto index = [&] {
    if (!snapshot_ || !by_object.empty())
      return;
    for (size_t j = 0; j < snapshot_->clusters.size(); ++j) {
      by_object.emplace(&snapshot_->clusters[j], j);
      by_name.emplace(snapshot_->clusters[j].name, j);
    }
  };
  for (size_t i = 0; i < snap.clusters.size(); ++i) {
    const Cluster& c = snap.clusters[i];
    if (snapshot_ && i < snapshot_->clusters.size() && &snapshot_->clusters[i] == &c) {
      s->clusters.push_back(shared_->clusters[i]);
      continue;
    }
    // The state new content inherits endpoint health from: the same name in the same place
    // (a mesh delta that changed this cluster; names are unique, so it can be nowhere else
    // and no index of the whole list is needed), else the same name anywhere.
    const ClusterState* from = nullptr;
    if (snapshot_ && i < snapshot_->clusters.size() && snapshot_->clusters[i].name == c.name) {
      from = shared_->clusters[i].get();
    } else {
      index();
      if (auto it = by_object.find(&c); it != by_object.end()) {
        s->clusters.push_back(shared_->clusters[it->second]);
        continue;
      }
      if (auto it = by_name.find(c.name); it != by_name.end())
        from = shared_->clusters[it->second].get();
    }
    auto cs = std::make_shared<ClusterState>(c);
    if (from != nullptr)
      cs->inheritFrom(*from);
    s->clusters.push_back(std::move(cs));
    fresh++;
  }
  s->addRateLimits(snap, snapshot_.get(), shared_.get(), main_.now());
  return s;
}

std::shared_ptr<SharedState> ProxyServer::sharedStateInPlace(const Snapshot& snap, size_t& fresh,
                                                           std::vector<size_t>& in_place) {
  if (!snapshot_ || snapshot_->clusters.size() != snap.clusters.size())
    return nullptr;
  auto s = std::make_shared<SharedState>();
  s->clusters = shared_->clusters;
  const auto& now = snap.clusters.items();
  const auto& before = snapshot_->clusters.items();
  constexpr size_t kChunk = SharedList<Cluster>::Items::kChunk;
  for (size_t k = 0; k < now.chunkCount(); ++k) {
    if (now.sharesChunk(before, k))
      continue; // the very same clusters: the same states
    for (size_t i = k * kChunk; i < std::min((k + 1) * kChunk, now.size()); ++i) {
      if (now[i] == before[i])
        continue;
      const Cluster& c = *now[i];
      if (before[i]->name != c.name)
        return nullptr; // moved or renamed: matched by name over the whole list
      auto cs = std::make_shared<ClusterState>(c);
      cs->inheritFrom(*shared_->clusters[i]);
      s->clusters.set(i, std::move(cs));
      in_place.push_back(i);
      fresh++;
    }
  }
  s->addRateLimits(snap, snapshot_.get(), shared_.get(), main_.now());
  return s;
}

Status ProxyServer::reload() {
  if (options_.config_path.empty())
    return makeError(ErrorCode::kFailedPrecondition,
                     "no configuration file to reload: the control plane configures this proxy");
  auto snap = loadConfigFile(options_.config_path);
  if (!snap.ok()) {
    reload_failed_.inc();
    TLOG_ERROR("reload rejected, keeping the running configuration: {}", snap.error().message());
    return snap.error();
  }
  auto st = apply(*snap);
  if (!st.ok()) {
    reload_failed_.inc();
    TLOG_ERROR("reload failed, keeping the running configuration: {}", st.error().message());
    return st;
  }
  reload_ok_.inc();
  TLOG_INFO("configuration reloaded from {} (generation {})", options_.config_path, generation_);
  return okStatus();
}

void ProxyServer::stop() {
  if (stopped_ || workers_.empty())
    return;
  stopped_ = true;
  if (admin_)
    admin_->stop();
  health_.reset();
  prober_.reset();
  onWorkers(0, workers_.size(), [this](size_t i) {
    workers_[i]->shutdown();
    if (access_log_)
      access_log_->worker(i).stopTimer();
  });
  if (pool_) {
    pool_->stop();
    // What became ready (cancelled accepts and pool watches) runs here, on this thread; the
    // sessions still open are destroyed by the destructor.
    for (size_t i = 0; i < pool_->size(); ++i) {
      pool_->dispatcher(i).io().restart();
      pool_->dispatcher(i).io().poll();
    }
  }
  // A worker on main_ may still finish a request while main's loop runs: its line is counted
  // as dropped (the writer is stopped), as it would be lost on a stopped worker thread.
  if (access_log_)
    access_log_->stop();
}

void ProxyServer::renderClusterState(std::string& out) const {
  if (!shared_)
    return;
  auto family = [&](const char* name, const char* type, const char* help) {
    out.append("# HELP ").append(name).append(" ").append(help).append("\n# TYPE ");
    out.append(name).append(" ").append(type).append("\n");
  };
  auto sample = [&](const char* name, const std::string& labels, double v) {
    out.append(name).append("{").append(labels).append("} ");
    out.append(fmt::format("{}", v)).append("\n");
  };
  // Cluster names are validated names (no quotes or backslashes): no escaping needed.
  auto cl = [](const ClusterState& c) { return "cluster=\"" + c.config().name + "\""; };
  family("trellis_proxy_circuit_breaker_remaining", "gauge",
         "Remaining capacity of each circuit-breaker limit of a cluster");
  for (const auto& c : shared_->clusters)
    for (size_t k = 0; k < static_cast<size_t>(LimitKind::kCount); ++k)
      sample("trellis_proxy_circuit_breaker_remaining",
             cl(*c) + ",limit=\"" + limitKindName(static_cast<LimitKind>(k)) + "\"",
             c->limit(static_cast<LimitKind>(k)).remaining());
  family("trellis_proxy_endpoints", "gauge",
         "Endpoints of a cluster by state (healthy, unhealthy: failing active checks, ejected: "
         "by outlier detection)");
  for (const auto& c : shared_->clusters) {
    auto counts = c->stateCounts();
    for (size_t k = 0; k < counts.size(); ++k)
      sample("trellis_proxy_endpoints",
             cl(*c) + ",state=\"" + endpointStateName(static_cast<EndpointState>(k)) + "\"",
             static_cast<double>(counts[k]));
  }
  family("trellis_proxy_outlier_ejections_active", "gauge",
         "Endpoints of a cluster ejected by outlier detection now");
  for (const auto& c : shared_->clusters)
    if (c->hasOutlierDetection())
      sample("trellis_proxy_outlier_ejections_active", cl(*c),
             static_cast<double>(c->activeEjections()));
  family("trellis_proxy_outlier_ejections_total", "counter",
         "Ejections by outlier detection, by reason");
  for (const auto& c : shared_->clusters)
    if (c->hasOutlierDetection())
      for (size_t r = 0; r < static_cast<size_t>(EjectReason::kCount); ++r)
        sample("trellis_proxy_outlier_ejections_total",
               cl(*c) + ",reason=\"" + ejectReasonName(static_cast<EjectReason>(r)) + "\"",
               static_cast<double>(c->ejections(static_cast<EjectReason>(r))));
  family("trellis_proxy_outlier_ejections_overflow_total", "counter",
         "Ejections not made because max_ejection_percent of the cluster was already ejected");
  for (const auto& c : shared_->clusters)
    if (c->hasOutlierDetection())
      sample("trellis_proxy_outlier_ejections_overflow_total", cl(*c),
             static_cast<double>(c->ejectionOverflows()));
  family("trellis_proxy_health_checks_total", "counter",
         "Active health checks by result (success, failure)");
  for (const auto& c : shared_->clusters) {
    if (!c->config().health_check)
      continue;
    sample("trellis_proxy_health_checks_total", cl(*c) + ",result=\"success\"",
           static_cast<double>(c->healthChecks(true)));
    sample("trellis_proxy_health_checks_total", cl(*c) + ",result=\"failure\"",
           static_cast<double>(c->healthChecks(false)));
  }
}

std::string ProxyServer::clustersJson() {
  // Endpoint states: the shared state is the truth (workers copy it before each pick);
  // active request counts and idle connections are worker 0's, read on its own thread.
  nlohmann::json out = nlohmann::json::array();
  if (workers_.empty())
    return out.dump();
  onWorkers(0, 1, [&](size_t) {
    const auto& cfg = workers_[0]->config();
    for (const auto& c : cfg->clusters) {
      nlohmann::json cj;
      cj["name"] = c->cfg.name;
      cj["lb"] = lbPolicyName(c->cfg.lb.policy);
      nlohmann::json eps = nlohmann::json::array();
      // A runtime that served no request yet has no endpoint set (ClusterRuntime): none active.
      const bool built = c->lb != nullptr;
      for (size_t i = 0; i < c->cfg.endpoints.size(); ++i) {
        eps.push_back({{"address", c->cfg.endpoints[i].address.toString()},
                       {"weight", c->cfg.endpoints[i].weight},
                       {"state", endpointStateName(c->state->state(i))},
                       {"active_requests", built ? c->endpoints.activeRequests(i) : 0},
                       {"idle_connections",
                        i < c->pools.size() && c->pools[i] ? c->pools[i]->idleCount() : 0}});
      }
      cj["endpoints"] = std::move(eps);
      out.push_back(std::move(cj));
    }
  });
  return out.dump(2);
}

void ProxyServer::handleAdmin(http::ServerRequest& req, std::shared_ptr<http::ResponseWriter> w) {
  http::HeaderMap h;
  auto reply = [&](uint16_t status, std::string_view ctype, std::string_view body) {
    h.set("content-type", ctype);
    w->send(status, h, body);
  };
  const std::string& p = req.path;
  bool get = req.method == http::Method::kGet || req.method == http::Method::kHead;
  if (p == "/metrics" && get) {
    std::string text = registry_.renderPrometheus();
    renderClusterState(text);
    reply(200, telemetry::kPrometheusContentType, text);
  } else if (p == "/ready" && get) {
    bool ready = snapshot_ && !stopped_;
    reply(ready ? 200 : 503, "text/plain", ready ? "ready\n" : "not ready\n");
  } else if (p == "/config" && get) {
    reply(200, "application/json", toJson(*snapshot_).dump(2) + "\n");
  } else if (p == "/clusters" && get) {
    reply(200, "application/json", clustersJson() + "\n");
  } else if (p == "/reload" && req.method == http::Method::kPost) {
    auto st = reload();
    if (st.ok())
      reply(200, "text/plain", "reloaded\n");
    else
      reply(400, "text/plain", st.error().message() + "\n");
  } else if (p == "/metrics" || p == "/ready" || p == "/config" || p == "/clusters" ||
             p == "/reload") {
    h.set("allow", p == "/reload" ? "POST" : "GET, HEAD");
    reply(405, "text/plain", "method not allowed\n");
  } else {
    reply(404, "text/plain", "not found: try /metrics, /ready, /config, /clusters, /reload\n");
  }
}

} // namespace trellis::proxy
