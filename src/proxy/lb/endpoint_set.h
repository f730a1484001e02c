#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace trellis::proxy {

// What health checking and outlier detection say about an endpoint. Only kHealthy endpoints
// receive traffic, unless the cluster is in panic (see LbConfig::panic_threshold).
enum class EndpointState : uint8_t {
  kHealthy,
  kUnhealthy, // failed active health checks
  kEjected,   // ejected by outlier detection
};

const char* endpointStateName(EndpointState s);

// An endpoint as load balancers see it. `key` identifies it for consistent hashing (the
// address, "10.0.0.7:8080"), so an endpoint keeps its ring positions when others come and go;
// policies that do not hash have none (endpointSetOf).
struct LbEndpoint {
  std::string key;
  uint32_t weight = 1;
};

// A cluster's endpoints on one worker, with their current state and active request counts.
// Owned by the worker (no locks): health checking, outlier detection and request accounting
// on that worker update it, and that worker's load balancer reads it on every pick.
// The endpoint list itself is fixed; a new list (a pushed update) means a new EndpointSet and
// a new LoadBalancer.
class EndpointSet {
public:
  // Weights of 0 are treated as 1; configuration rejects them before they get here.
  explicit EndpointSet(const std::vector<LbEndpoint>& endpoints);
  // The same from the weights, and the keys when a hashing policy reads them (else empty: a
  // mesh update makes a set per changed cluster, and keys nobody reads were most of its cost).
  explicit EndpointSet(std::vector<uint32_t> weights, std::vector<std::string> keys = {});

  size_t size() const { return weights_.size(); }
  // Endpoint i's key; empty when the set was made without keys.
  const std::string& key(size_t i) const;
  uint32_t weight(size_t i) const { return weights_[i]; }

  EndpointState state(size_t i) const { return per_[i].state; }
  bool available(size_t i) const { return per_[i].state == EndpointState::kHealthy; }
  size_t availableCount() const { return available_; }
  // Changes one endpoint's state. Bumps generation() when its availability changes.
  void setState(size_t i, EndpointState s);

  // Requests in flight to endpoint i; least_request reads these. Callers pair every
  // onRequestStart with one onRequestEnd (an unmatched end is ignored, never underflows).
  uint32_t activeRequests(size_t i) const { return per_[i].active; }
  void onRequestStart(size_t i) { ++per_[i].active; }
  void onRequestEnd(size_t i) {
    if (per_[i].active > 0)
      --per_[i].active;
  }

  // Changes whenever the set of available endpoints changes; load balancers rebuild derived
  // tables (Maglev table, filtered ring, samplers) lazily when they see a new value.
  uint64_t generation() const { return generation_; }

private:
  std::vector<uint32_t> weights_;
  std::vector<std::string> keys_; // empty, or one per endpoint
  // Per endpoint, together: one allocation per set (a mesh update makes a set per changed
  // cluster).
  struct PerEndpoint {
    uint32_t active = 0;
    EndpointState state = EndpointState::kHealthy;
  };
  std::vector<PerEndpoint> per_;
  size_t available_ = 0;
  uint64_t generation_ = 0;
};

} // namespace trellis::proxy
