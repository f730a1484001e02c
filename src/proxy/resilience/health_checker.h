#pragma once

#include <functional>
#include <string>
#include <memory>
#include <vector>

#include "base/dispatcher.h"
#include "http/client.h"
#include "net/address.h"
#include "proxy/config.h"
#include "proxy/lb/random.h"
#include "proxy/resilience/cluster_state.h"

namespace trellis::proxy {

// Runs one active check against one endpoint and reports success or failure, once, on the
// dispatcher's thread. An interface so tests can script results.
class HealthProber {
public:
  virtual ~HealthProber() = default;
  virtual void probe(const HealthCheck& check, const std::string& cluster,
                     const net::SocketAddress& address, std::function<void(bool)> done) = 0;
};

// HTTP checks: `GET path` with the configured Host (default: the cluster name), success on a
// 2xx within the timeout, one connection per check (closed after). TCP checks: a connect that
// completes within the timeout.
class HealthProberImpl : public HealthProber {
public:
  explicit HealthProberImpl(Dispatcher& dispatcher) : dispatcher_(dispatcher), client_(dispatcher) {}
  void probe(const HealthCheck& check, const std::string& cluster,
             const net::SocketAddress& address, std::function<void(bool)> done) override;

private:
  Dispatcher& dispatcher_;
  http::Client client_;
};

// The proxy's one place for periodic cluster work, on the main dispatcher: active health
// checks of every endpoint of every cluster with a health_check (each endpoint on its own
// schedule: the first check within interval/10 of start, spreading them out, then `interval`
// after the previous check ended), and the outlier detectors' interval ticks. Results go to
// the shared ClusterState, which every worker reads. setClusters() switches to a new
// snapshot's states: an endpoint that stays (same cluster name, address and check) keeps its
// schedule and a check in flight reports to the new state, a cluster's outlier tick keeps its
// schedule; checks in flight for endpoints that are gone are dropped.
class HealthChecker {
public:
  HealthChecker(Dispatcher& dispatcher, HealthProber& prober, RandomGenerator& random);
  ~HealthChecker();

  void setClusters(std::vector<std::shared_ptr<ClusterState>> clusters);
  // The same switch for an update that replaced the clusters at `replaced` in place (same
  // position and name; every other entry of `clusters` is the state it had), when none of
  // them has or had health checks and their outlier detection interval is as it was: their
  // ticks move to the new states and nothing else is visited. Returns false, changing
  // nothing, when that does not hold (setClusters() then).
  bool replaceClusters(const std::vector<size_t>& replaced,
                       const ChunkedVector<std::shared_ptr<ClusterState>>& clusters);
  size_t checksInFlight() const { return in_flight_; }

private:
  struct Target;
  struct Ticker;
  void schedule(const std::shared_ptr<Target>& t, Duration after);
  void run(const std::shared_ptr<Target>& t);

  Dispatcher& dispatcher_;
  HealthProber& prober_;
  RandomGenerator& random_;
  std::vector<std::shared_ptr<ClusterState>> clusters_;
  std::vector<std::shared_ptr<Target>> targets_;
  std::vector<std::unique_ptr<Ticker>> tickers_;
  // Per entry of clusters_: its ticker (none without outlier detection) and whether it has
  // health checks.
  struct Slot {
    std::string name; // of the cluster there (an update that only reorders is not seen)
    Ticker* ticker = nullptr;
    bool checked = false;
  };
  std::vector<Slot> slots_;
  size_t in_flight_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true); // for callbacks that outlive us
};

} // namespace trellis::proxy
