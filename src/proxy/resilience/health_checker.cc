#include "proxy/resilience/health_checker.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include <asio/ip/tcp.hpp>

#include "base/log.h"

namespace trellis::proxy {

// ---- probes -------------------------------------------------------------------------------

void HealthProberImpl::probe(const HealthCheck& check, const std::string& cluster,
                             const net::SocketAddress& address, std::function<void(bool)> done) {
  if (check.kind == HealthCheckKind::kHttp) {
    http::ClientRequest req;
    req.method = "GET";
    req.target = check.path;
    req.headers.add("host", check.host.empty() ? cluster : check.host);
    req.headers.add("user-agent", "trellis-health-check");
    req.headers.add("connection", "close");
    http::RequestOptions opts;
    opts.connect_timeout = check.timeout;
    opts.timeout = check.timeout;
    opts.max_response_body_bytes = 64 * 1024;
    client_.request(address, std::move(req), opts,
                    [done = std::move(done)](Result<http::ClientResponse> r) {
                      done(r.ok() && r->status >= 200 && r->status < 300);
                    });
    return;
  }
  // TCP: connect, then close. The timer and the connect race; whichever ends first reports.
  struct Probe {
    explicit Probe(Dispatcher& d) : socket(d.io()) {}
    asio::ip::tcp::socket socket;
    std::unique_ptr<Timer> timer;
    std::function<void(bool)> done;
    void finish(bool ok) {
      if (!done)
        return;
      auto cb = std::move(done);
      done = nullptr;
      timer->disable();
      std::error_code ec;
      socket.close(ec);
      cb(ok);
    }
  };
  auto p = std::make_shared<Probe>(dispatcher_);
  p->done = std::move(done);
  p->timer = dispatcher_.createTimer([w = std::weak_ptr<Probe>(p)] {
    if (auto p = w.lock())
      p->finish(false);
  });
  p->timer->enable(check.timeout);
  p->socket.async_connect(address.tcp(), [p](const std::error_code& ec) { p->finish(!ec); });
}

// ---- scheduling ---------------------------------------------------------------------------

// What a target or ticker needs of the configuration it was made for is copied: the old
// snapshot (which a ClusterState's config() refers to) may be gone when setClusters() runs.
struct HealthChecker::Target {
  std::shared_ptr<ClusterState> cluster;
  size_t endpoint = 0;
  std::string cluster_name;
  HealthCheck check;
  net::SocketAddress address;
  std::unique_ptr<Timer> timer;
  bool retired = false; // its snapshot was replaced: results are dropped
};

struct HealthChecker::Ticker {
  std::shared_ptr<ClusterState> cluster;
  std::string cluster_name;
  Duration interval{0};
  std::unique_ptr<Timer> timer;
};

HealthChecker::HealthChecker(Dispatcher& dispatcher, HealthProber& prober, RandomGenerator& random)
    : dispatcher_(dispatcher), prober_(prober), random_(random) {}

HealthChecker::~HealthChecker() {
  for (auto& t : targets_)
    t->retired = true;
}

namespace {

// (cluster name, address): what identifies an endpoint's check across configurations.
struct TargetKeyHash {
  size_t operator()(const std::pair<std::string_view, net::SocketAddress>& k) const {
    return std::hash<std::string_view>()(k.first) * 31 +
           std::hash<asio::ip::address>()(k.second.ip) * 7 + k.second.port;
  }
};

} // namespace

void HealthChecker::setClusters(std::vector<std::shared_ptr<ClusterState>> clusters) {
  // What stays keeps its schedule: a mesh may update many times per interval, and restarting
  // every timer on each update would postpone checks and outlier ticks (so ejections would
  // never end) for as long as updates keep coming. A check of an endpoint that stays (same
  // cluster name, address and check) goes on, and a check in flight reports to the new state.
  //
  // Old targets by the state they checked (a cluster that is the very same object keeps
  // them as they are) and by (cluster name, address) for a cluster with new content.
  std::unordered_map<const ClusterState*, std::vector<std::shared_ptr<Target>>> by_state;
  std::unordered_map<std::pair<std::string_view, net::SocketAddress>, std::shared_ptr<Target>,
                     TargetKeyHash>
      by_address;
  std::vector<std::shared_ptr<Target>> old_targets = std::move(targets_);
  targets_.clear();
  for (auto& t : old_targets)
    by_state[t->cluster.get()].push_back(t);
  // Old tickers in cluster order: while the order holds (an update that changed clusters in
  // place) each one is found at the cursor, and the name index is built only if it is not.
  std::vector<std::unique_ptr<Ticker>> old_tickers = std::move(tickers_);
  tickers_.clear();
  size_t cursor = 0;
  std::unordered_map<std::string_view, size_t> ticker_index;
  auto oldTicker = [&](const std::string& name) -> std::unique_ptr<Ticker>* {
    while (cursor < old_tickers.size() && !old_tickers[cursor])
      ++cursor; // taken through the index already
    if (cursor < old_tickers.size() && old_tickers[cursor]->cluster_name == name)
      return &old_tickers[cursor++];
    if (ticker_index.empty())
      for (size_t k = 0; k < old_tickers.size(); ++k)
        if (old_tickers[k])
          ticker_index.emplace(old_tickers[k]->cluster_name, k);
    auto it = ticker_index.find(name);
    return it == ticker_index.end() || !old_tickers[it->second] ? nullptr
                                                                : &old_tickers[it->second];
  };

  clusters_ = std::move(clusters);
  slots_.assign(clusters_.size(), Slot{});
  for (size_t ci = 0; ci < clusters_.size(); ++ci) {
    const auto& c = clusters_[ci];
    const Cluster& cfg = c->config();
    slots_[ci].name = cfg.name;
    slots_[ci].checked = cfg.health_check.has_value();
    if (cfg.health_check) {
      if (auto same = by_state.find(c.get()); same != by_state.end()) {
        for (auto& t : same->second) // the very same cluster: its targets as they are
          targets_.push_back(t);
        by_state.erase(same);
      } else {
        if (by_address.empty() && !by_state.empty()) {
          for (auto& [state, ts] : by_state)
            for (auto& t : ts)
              by_address.emplace(std::make_pair(std::string_view(t->cluster_name), t->address),
                                 t);
        }
        const Duration spread = cfg.health_check->interval / 10;
        for (size_t i = 0; i < cfg.endpoints.size(); ++i) {
          auto old = by_address.find({cfg.name, cfg.endpoints[i].address});
          if (old != by_address.end() && old->second && old->second->check == *cfg.health_check) {
            auto t = std::move(old->second);
            t->cluster = c;
            t->endpoint = i;
            targets_.push_back(std::move(t));
            continue;
          }
          auto t = std::make_shared<Target>();
          t->cluster = c;
          t->endpoint = i;
          t->cluster_name = cfg.name;
          t->check = *cfg.health_check;
          t->address = cfg.endpoints[i].address;
          std::weak_ptr<Target> w = t;
          t->timer = dispatcher_.createTimer([this, w] {
            if (auto t = w.lock())
              run(t);
          });
          const uint64_t span = static_cast<uint64_t>(std::max<int64_t>(spread.count(), 0)) + 1;
          schedule(t, Duration(static_cast<int64_t>(scaleRandom(random_.random(), span))));
          targets_.push_back(std::move(t));
        }
      }
    }
    if (cfg.outlier_detection) {
      const Duration interval = cfg.outlier_detection->interval;
      if (auto* old = oldTicker(cfg.name); old != nullptr && (*old)->interval == interval) {
        (*old)->cluster = c; // the next tick, when it was due, ticks the new state
        slots_[ci].ticker = old->get();
        tickers_.push_back(std::move(*old));
        continue;
      }
      auto k = std::make_unique<Ticker>();
      k->cluster = c;
      k->cluster_name = cfg.name;
      k->interval = interval;
      Ticker* raw = k.get();
      k->timer = dispatcher_.createTimer([this, raw] {
        raw->cluster->tick(dispatcher_.now());
        raw->timer->enable(raw->interval);
      });
      k->timer->enable(interval);
      slots_[ci].ticker = raw;
      tickers_.push_back(std::move(k));
    }
  }
  // What is gone: results of its checks in flight are dropped. A target taken over by the
  // new configuration is in targets_ again (and no longer retired-to-be).
  std::unordered_set<const Target*> live;
  if (!old_targets.empty())
    for (const auto& t : targets_)
      live.insert(t.get());
  for (auto& t : old_targets) {
    if (live.count(t.get()))
      continue;
    t->retired = true;
    t->timer->disable();
  }
}

bool HealthChecker::replaceClusters(const std::vector<size_t>& replaced,
                                    const ChunkedVector<std::shared_ptr<ClusterState>>& clusters) {
  if (clusters.size() != clusters_.size())
    return false;
  // The old states' configuration may be gone (see Target): what they had is in slots_.
  for (size_t i : replaced) {
    const Cluster& cfg = clusters[i]->config();
    const Slot& s = slots_[i];
    if (s.name != cfg.name || s.checked || cfg.health_check ||
        cfg.outlier_detection.has_value() != (s.ticker != nullptr))
      return false;
    if (s.ticker && s.ticker->interval != cfg.outlier_detection->interval)
      return false;
  }
  for (size_t i : replaced) {
    clusters_[i] = clusters[i];
    if (Ticker* k = slots_[i].ticker)
      k->cluster = clusters[i]; // the next tick, when it was due, ticks the new state
  }
  return true;
}

void HealthChecker::schedule(const std::shared_ptr<Target>& t, Duration after) {
  t->timer->enable(after);
}

void HealthChecker::run(const std::shared_ptr<Target>& t) {
  if (t->retired)
    return;
  const Cluster& cfg = t->cluster->config();
  ++in_flight_;
  std::weak_ptr<bool> alive = alive_;
  prober_.probe(*cfg.health_check, cfg.name, cfg.endpoints[t->endpoint].address,
                [this, t, alive](bool ok) {
                  if (alive.expired())
                    return; // the checker is gone
                  --in_flight_;
                  if (t->retired)
                    return;
                  t->cluster->reportHealthCheck(t->endpoint, ok);
                  schedule(t, t->cluster->config().health_check->interval);
                });
}

} // namespace trellis::proxy
