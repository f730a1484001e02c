#include "proxy/worker.h"

#include <unistd.h>

#include "base/log.h"
#include "proxy/http_session.h"

namespace trellis::proxy {

// ---- UpstreamPool -------------------------------------------------------------------------

UpstreamPool::~UpstreamPool() {
  closeAll();
}

std::shared_ptr<UpstreamConn> UpstreamPool::take() {
  while (!idle_.empty()) {
    auto conn = std::move(idle_.back());
    idle_.pop_back();
    conn->idle = false;
    std::error_code ec;
    // Cancels the readiness watch; its handler sees idle == false and leaves the socket alone.
    conn->socket.cancel(ec);
    if (!ec && conn->socket.is_open())
      return conn;
    active_gauge.dec();
  }
  return nullptr;
}

void UpstreamPool::release(std::shared_ptr<UpstreamConn> conn, uint32_t max_idle,
                           uint32_t max_requests) {
  if (idle_.size() >= max_idle || (max_requests > 0 && conn->requests >= max_requests) ||
      !conn->socket.is_open()) {
    std::error_code ec;
    conn->socket.close(ec);
    active_gauge.dec();
    return;
  }
  conn->idle = true;
  conn->idle_since = worker_.dispatcher().now();
  watch(conn);
  idle_.push_back(std::move(conn));
}

void UpstreamPool::watch(const std::shared_ptr<UpstreamConn>& conn) {
  // An idle keep-alive connection should not become readable; if it does, the upstream
  // closed it (or misbehaves): drop it so no request is sent on it.
  std::weak_ptr<UpstreamConn> weak = conn;
  conn->socket.async_wait(asio::ip::tcp::socket::wait_read,
                          [this, weak](const std::error_code& ec) {
                            auto c = weak.lock();
                            if (!c || !c->idle || ec == asio::error::operation_aborted)
                              return;
                            drop(c.get());
                          });
}

void UpstreamPool::drop(UpstreamConn* conn) {
  for (size_t i = 0; i < idle_.size(); ++i) {
    if (idle_[i].get() == conn) {
      std::error_code ec;
      idle_[i]->idle = false;
      idle_[i]->socket.close(ec);
      idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(i));
      active_gauge.dec();
      return;
    }
  }
}

void UpstreamPool::sweep(MonotonicTime now) {
  if (idle_timeout.count() <= 0 || idle_.empty())
    return;
  // Oldest first: idle_ is ordered by release time.
  size_t stale = 0;
  while (stale < idle_.size() && now - idle_[stale]->idle_since >= idle_timeout)
    ++stale;
  for (size_t i = 0; i < stale; ++i) {
    std::error_code ec;
    idle_[i]->idle = false;
    idle_[i]->socket.close(ec);
    active_gauge.dec();
  }
  idle_.erase(idle_.begin(), idle_.begin() + static_cast<std::ptrdiff_t>(stale));
}

void UpstreamPool::closeAll() {
  for (auto& c : idle_) {
    std::error_code ec;
    c->idle = false;
    c->socket.close(ec);
    active_gauge.dec();
  }
  idle_.clear();
}

// ---- runtime state ------------------------------------------------------------------------

const char* timeoutKindName(TimeoutKind k) {
  switch (k) {
  case TimeoutKind::kConnect:
    return "connect";
  case TimeoutKind::kPerTry:
    return "per_try";
  case TimeoutKind::kRequest:
    return "request";
  case TimeoutKind::kUpstreamIdle:
    return "upstream_idle";
  case TimeoutKind::kDownstreamIdle:
    return "downstream_idle";
  case TimeoutKind::kHeaderRead:
    return "header_read";
  case TimeoutKind::kCount:
    break;
  }
  return "unknown";
}

ClusterRuntime::ClusterRuntime(const Cluster& c, Worker& w, std::shared_ptr<ClusterState> st)
    : cfg(c), worker(w), state(std::move(st)) {}

void ClusterRuntime::build() {
  endpoints = endpointSetOf(cfg);
  lb = createLoadBalancer(cfg.lb, endpoints, worker.random());
  // The new set has every endpoint healthy: that is generation 0 (no endpoint state was ever
  // published, ClusterState); syncHealth() copies any other.
  seen_generation_ = 0;
}

void ClusterRuntime::syncHealthSlow(uint64_t generation) {
  seen_generation_ = generation;
  for (size_t i = 0; i < endpoints.size(); ++i)
    endpoints.setState(i, state->state(i));
}

UpstreamPool& ClusterRuntime::pool(size_t ep) {
  if (pools.empty())
    pools.assign(cfg.endpoints.size(), nullptr);
  UpstreamPool* p = pools[ep];
  if (!p) {
    p = &worker.pool(cfg.endpoints[ep].address);
    pools[ep] = p;
  }
  // Several clusters may share an endpoint; the latest user's settings apply to its pool.
  p->active_gauge = stats().cx_active;
  p->idle_timeout = cfg.pool.idle_timeout;
  p->owner = worker.config().get();
  return *p;
}

ClusterStats& ClusterRuntime::stats() {
  if (!stats_) {
    auto& s = worker.stats();
    size_t shard = worker.shard();
    stats_ = std::make_unique<ClusterStats>();
    stats_->cx_total = s.upstream_cx->handle(shard, {cfg.name});
    stats_->pool_reuse = s.pool_reuse->handle(shard, {cfg.name});
    stats_->cx_active = s.upstream_cx_active->handle(shard, {cfg.name});
    stats_->err_connect = s.upstream_errors->handle(shard, {cfg.name, "connect_failure"});
    stats_->err_connect_timeout = s.upstream_errors->handle(shard, {cfg.name, "connect_timeout"});
    stats_->err_reset = s.upstream_errors->handle(shard, {cfg.name, "reset"});
    stats_->err_bad_response = s.upstream_errors->handle(shard, {cfg.name, "bad_response"});
    stats_->err_proxy_error = s.upstream_errors->handle(shard, {cfg.name, "proxy_error"});
    stats_->retries = s.retries->handle(shard, {cfg.name});
    stats_->retries_succeeded = s.retries_succeeded->handle(shard, {cfg.name});
    stats_->retries_budget_exhausted = s.retries_budget_exhausted->handle(shard, {cfg.name});
    stats_->panic = s.panic->handle(shard, {cfg.name});
    for (size_t k = 0; k < stats_->overflow.size(); ++k)
      stats_->overflow[k] =
          s.overflow->handle(shard, {cfg.name, limitKindName(static_cast<LimitKind>(k))});
  }
  return *stats_;
}

WorkerConfig::~WorkerConfig() = default;

telemetry::CounterHandle& ListenerRuntime::localReply(std::string_view flag) {
  auto it = local_replies.find(flag);
  if (it != local_replies.end())
    return it->second;
  static telemetry::CounterHandle discard;
  return discard;
}

// ---- Worker -------------------------------------------------------------------------------

Worker::Worker(size_t index, Dispatcher& dispatcher, ProxyStats& stats,
               telemetry::AccessLogWorker* access_log)
    : index_(index), dispatcher_(dispatcher), stats_(stats), access_log_(access_log),
      random_(0x7472656c6c6973ull * (index + 1) ^
              static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count())) {
  config_ = std::make_shared<WorkerConfig>();
}

Worker::~Worker() {
  acceptors_.clear();
  config_.reset();
  pools_.clear();
}

size_t Worker::AddressHash::operator()(const net::SocketAddress& a) const {
  size_t h = std::hash<uint16_t>()(a.port);
  if (a.ip.is_v4()) {
    h ^= std::hash<uint32_t>()(a.ip.to_v4().to_uint()) * 0x9E3779B97F4A7C15ull;
  } else {
    const auto bytes = a.ip.to_v6().to_bytes();
    h ^= std::hash<std::string_view>()(
             std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size())) *
         0x9E3779B97F4A7C15ull;
  }
  return h;
}

UpstreamPool& Worker::pool(const net::SocketAddress& address) {
  std::string key = address.toString();
  auto& p = pools_[key];
  if (!p)
    p = std::make_unique<UpstreamPool>(*this, address);
  return *p;
}

void Worker::apply(std::shared_ptr<const Snapshot> snapshot,
                   std::shared_ptr<const SharedState> shared,
                   std::map<std::string, int> listen_fds) {
  const size_t shard = this->shard();
  auto cfg = std::make_shared<WorkerConfig>();
  cfg->snapshot = snapshot;
  cfg->shared = shared;
  const auto& old_clusters = config_->clusters;
  std::vector<bool> kept(old_clusters.size(), false);
  std::unordered_map<const Cluster*, size_t> old_index; // built only when the order moved
  std::vector<const Cluster*> added;
  // A cluster whose content changed in place (same name, same position): its new endpoints
  // and those of the runtime it replaces, whose references are counted by difference below.
  std::vector<std::pair<const Cluster*, size_t>> replaced;
  cfg->clusters.reserve(snapshot->clusters.size());
  // A snapshot made from the running one by replacing clusters in place (a mesh delta): the
  // running runtimes with just those replaced, looking only at the chunks where the two
  // snapshots or the two shared states differ.
  bool in_place_only = config_->snapshot && config_->shared &&
                       config_->snapshot->clusters.size() == snapshot->clusters.size() &&
                       config_->shared->clusters.size() == shared->clusters.size();
  if (in_place_only) {
    const auto& now = snapshot->clusters.items();
    const auto& before = config_->snapshot->clusters.items();
    constexpr size_t kChunk = SharedList<Cluster>::Items::kChunk;
    cfg->clusters = config_->clusters;
    for (size_t k = 0; in_place_only && k < now.chunkCount(); ++k) {
      if (now.sharesChunk(before, k) && shared->clusters.sharesChunk(config_->shared->clusters, k))
        continue;
      for (size_t i = k * kChunk; i < std::min((k + 1) * kChunk, now.size()); ++i) {
        if (now[i] == before[i] && old_clusters[i]->state == shared->clusters[i])
          continue;
        if (before[i]->name != now[i]->name) {
          in_place_only = false; // moved or renamed: matched over the whole list below
          break;
        }
        cfg->clusters.set(i, std::make_shared<ClusterRuntime>(*now[i], *this, shared->clusters[i]));
        replaced.emplace_back(now[i].get(), i);
      }
    }
    if (in_place_only) {
      kept.assign(old_clusters.size(), true);
    } else {
      cfg->clusters.clear();
      replaced.clear();
    }
  }
  for (size_t i = 0; !in_place_only && i < snapshot->clusters.size(); ++i) {
    const Cluster& c = snapshot->clusters[i];
    size_t j = i;
    // Same object in the same place: kept. New content under the same name in the same
    // place (a changed cluster): names are unique, so no other old runtime can be it.
    const bool here = j < old_clusters.size();
    bool in_place = false;
    if (here && &old_clusters[j]->cfg != &c && old_clusters[j]->cfg.name == c.name) {
      in_place = !kept[j];
      j = old_clusters.size();
    } else if (!here || &old_clusters[j]->cfg != &c) {
      if (old_index.empty())
        for (size_t k = 0; k < old_clusters.size(); ++k)
          old_index.emplace(&old_clusters[k]->cfg, k);
      auto it = old_index.find(&c);
      j = it == old_index.end() ? old_clusters.size() : it->second;
    }
    if (j < old_clusters.size() && !kept[j] && old_clusters[j]->state == shared->clusters[i]) {
      kept[j] = true;
      cfg->clusters.push_back(old_clusters[j]);
    } else {
      cfg->clusters.push_back(std::make_shared<ClusterRuntime>(c, *this, shared->clusters[i]));
      if (in_place) {
        kept[i] = true; // its references are settled with the new cluster's, not released
        replaced.emplace_back(&c, i);
      } else {
        added.push_back(&c);
      }
    }
  }
  for (const auto& l : snapshot->listeners) {
    auto prev = config_->listeners.find(l.name);
    if (prev != config_->listeners.end() && prev->second->cfg == &l) {
      // The same listener object: its routes and so its metric handles are unchanged.
      cfg->listeners.emplace(l.name, prev->second);
      continue;
    }
    auto& slot = cfg->listeners[l.name];
    slot = std::make_shared<ListenerRuntime>();
    ListenerRuntime& lr = *slot;
    lr.cfg = &l;
    lr.cx_total = stats_.downstream_cx->handle(shard, {l.name});
    lr.cx_rejected = stats_.downstream_cx_rejected->handle(shard, {l.name});
    lr.cx_active = stats_.downstream_cx_active->handle(shard, {l.name});
    lr.bytes_in = stats_.bytes_received->handle(shard, {l.name});
    lr.bytes_out = stats_.bytes_sent->handle(shard, {l.name});
    for (size_t k = 0; k < lr.parse_errors.size(); ++k) {
      // Resolved lazily would save series; but a handful of kinds is cheap and keeps the
      // hot path branch-free. Series appear in /metrics only once non-zero? No: they appear
      // at zero, which is what dashboards want.
      lr.parse_errors[k] = stats_.parse_errors->handle(
          shard, {l.name, http::parseErrorName(static_cast<http::ParseError>(k))});
    }
    for (const char* flag : {"NR", "UH", "UF", "UC", "UPE", "UT", "DPE", "DT", "UO", "RL", "FI"})
      lr.local_replies.emplace(flag, stats_.local_replies->handle(shard, {l.name, flag}));
    for (size_t k = 0; k < lr.timeouts.size(); ++k)
      lr.timeouts[k] =
          stats_.timeouts->handle(shard, {l.name, timeoutKindName(static_cast<TimeoutKind>(k))});
    lr.route_policy.resize(l.routes.size());
    for (size_t r = 0; r < l.routes.size(); ++r) {
      const Route& route = l.routes[r];
      std::string rname = route.name.empty() ? std::to_string(r) : route.name;
      if (route.rate_limit)
        lr.route_policy[r].rate_limited = stats_.rate_limited->handle(shard, {l.name, rname});
      if (route.fault.delay)
        lr.route_policy[r].fault_delay = stats_.faults->handle(shard, {l.name, rname, "delay"});
      if (route.fault.abort)
        lr.route_policy[r].fault_abort = stats_.faults->handle(shard, {l.name, rname, "abort"});
    }
    for (size_t r = 0; r < l.routes.size(); ++r) {
      const Route& route = l.routes[r];
      std::string rname = route.name.empty() ? std::to_string(r) : route.name;
      std::vector<RouteTargetStats> targets;
      for (const auto& wc : route.clusters) {
        RouteTargetStats st;
        for (size_t k = 0; k < 5; ++k)
          st.by_class[k] = stats_.requests->handle(
              shard, {l.name, rname, wc.cluster, std::string(1, char('1' + k)) + "xx"});
        st.duration = stats_.duration->handle(shard, {l.name, wc.cluster});
        targets.push_back(st);
      }
      lr.routes.push_back(std::move(targets));
    }
    for (size_t k = 0; k < 5; ++k)
      lr.no_route_by_class[k] = stats_.requests->handle(
          shard, {l.name, "none", "none", std::string(1, char('1' + k)) + "xx"});
    lr.no_route_duration = stats_.duration->handle(shard, {l.name, "none"});
    // The connection count carries over (shared) for listeners that continue.
    if (auto old = config_->listeners.find(l.name); old != config_->listeners.end())
      lr.connections = old->second->connections;
  }
  // Pools whose endpoint no cluster of the new configuration has are closed; the others
  // keep their warm connections. Counted from what changed: added clusters first, so an
  // endpoint that moves from one cluster to another never drops to zero on the way.
  // A cluster changed in place counts only the difference between its lists, as its lineage
  // lists it (a mesh delta's edit) or walked in step (the usual case of a file: a few endpoints
  // added or removed): an endpoint in both is no change.
  std::vector<const net::SocketAddress*> gone;
  std::vector<size_t> from;
  for (const auto& [c, j] : replaced) {
    const auto& now = c->endpoints;
    const auto& before = old_clusters[j]->cfg.endpoints;
    // A mesh delta's edit lists what came and went: no walk of either list.
    bool same = false;
    if (const EndpointLineage* edit = editedFrom(*c, old_clusters[j]->cfg, same)) {
      if (same)
        continue;
      for (uint32_t i : edit->added)
        endpoint_refs_[now[i].address]++;
      for (uint32_t k : edit->removed)
        gone.push_back(&before[k].address);
      continue;
    }
    std::vector<uint8_t> stays(before.size(), 0);
    if (!pairByLineage(*c, old_clusters[j]->cfg, from))
      matchInStep(now, before, from);
    for (size_t i = 0; i < now.size(); ++i) {
      if (from[i] != kNotInStep)
        stays[from[i]] = 1;
      else
        endpoint_refs_[now[i].address]++; // new here (or moved: its old place is released below)
    }
    for (size_t k = 0; k < before.size(); ++k)
      if (!stays[k])
        gone.push_back(&before[k].address);
  }
  for (const Cluster* c : added)
    for (const auto& ep : c->endpoints)
      endpoint_refs_[ep.address]++;
  auto release = [&](const net::SocketAddress& address) {
    auto ref = endpoint_refs_.find(address);
    if (ref == endpoint_refs_.end() || --ref->second > 0)
      return;
    if (auto p = pools_.empty() ? pools_.end() : pools_.find(address.toString());
        p != pools_.end()) {
      p->second->closeAll();
      retired_pools_.push_back(std::move(p->second));
      pools_.erase(p);
    }
    endpoint_refs_.erase(ref);
  };
  for (const net::SocketAddress* a : gone)
    release(*a);
  for (size_t j = 0; j < old_clusters.size(); ++j) {
    if (kept[j])
      continue;
    for (const auto& ep : old_clusters[j]->cfg.endpoints)
      release(ep.address);
  }
  config_ = std::move(cfg);

  // Listeners: keep those that continue at the same address, open new ones, close removed.
  for (auto it = acceptors_.begin(); it != acceptors_.end();) {
    const Listener* l = snapshot->findListener(it->name);
    if (!l || (l->address.port != 0 && !(l->address == it->address))) {
      std::error_code ec;
      it->acceptor->close(ec);
      it = acceptors_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [name, fd] : listen_fds) {
    const Listener* l = snapshot->findListener(name);
    if (!l) {
      ::close(fd);
      continue;
    }
    Acceptor a;
    a.name = name;
    a.address = l->address;
    a.acceptor = std::make_unique<asio::ip::tcp::acceptor>(dispatcher_.io());
    std::error_code ec;
    a.acceptor->assign(l->address.ip.is_v6() ? asio::ip::tcp::v6() : asio::ip::tcp::v4(), fd, ec);
    if (ec) {
      TLOG_ERROR("worker {}: cannot adopt listener {}: {}", index_, name, ec.message());
      ::close(fd);
      continue;
    }
    acceptors_.push_back(std::move(a));
    accept(acceptors_.back());
  }
  if (!sweep_timer_) {
    sweep_timer_ = dispatcher_.createTimer([this] { sweepPools(); });
    sweep_timer_->enable(std::chrono::seconds(1));
  }
}

void Worker::accept(Acceptor& a) {
  a.acceptor->async_accept(
      [this, &a, name = a.name](const std::error_code& ec, asio::ip::tcp::socket socket) {
        if (ec == asio::error::operation_aborted || shutting_down_ || !a.acceptor->is_open())
          return;
        if (!ec)
          onAccepted(name, std::move(socket));
        else
          TLOG_WARN("listener {}: accept failed: {}", name, ec.message());
        accept(a);
      });
}

void Worker::onAccepted(const std::string& listener, asio::ip::tcp::socket socket) {
  auto it = config_->listeners.find(listener);
  if (it == config_->listeners.end())
    return;
  ListenerRuntime& lr = *it->second;
  lr.cx_total.inc();
  if (*lr.connections >= lr.cfg->max_connections) {
    lr.cx_rejected.inc();
    std::error_code ec;
    socket.close(ec);
    return;
  }
  ++*lr.connections;
  lr.cx_active.inc();
  if (lr.cfg->protocol == Protocol::kTcp) {
    startTcpSession(*this, listener, std::move(socket));
  } else {
    std::make_shared<HttpSession>(*this, listener, std::move(socket))->start();
  }
}

void Worker::sweepPools() {
  MonotonicTime now = dispatcher_.now();
  for (auto& [key, p] : pools_)
    p->sweep(now);
  // Retired pools may still be referenced by requests running on an older configuration;
  // once no configuration but the current one is alive, nobody can reach them.
  if (config_.use_count() == 1)
    retired_pools_.clear();
  sweep_timer_->enable(std::chrono::seconds(1));
}

void Worker::shutdown() {
  shutting_down_ = true;
  for (auto& a : acceptors_) {
    std::error_code ec;
    a.acceptor->close(ec);
  }
  acceptors_.clear();
  for (auto& [k, p] : pools_)
    p->closeAll();
  if (sweep_timer_)
    sweep_timer_->disable();
}

} // namespace trellis::proxy
