#include "proxy/lb/endpoint_set.h"

namespace trellis::proxy {

const char* endpointStateName(EndpointState s) {
  switch (s) {
  case EndpointState::kHealthy:
    return "healthy";
  case EndpointState::kUnhealthy:
    return "unhealthy";
  case EndpointState::kEjected:
    return "ejected";
  }
  return "unknown";
}

EndpointSet::EndpointSet(std::vector<LbEndpoint> endpoints)
    : endpoints_(std::move(endpoints)), states_(endpoints_.size(), EndpointState::kHealthy),
      active_(endpoints_.size(), 0), available_(endpoints_.size()) {
  for (auto& ep : endpoints_) {
    if (ep.weight == 0)
      ep.weight = 1;
  }
}

void EndpointSet::setState(size_t i, EndpointState s) {
  const bool was = available(i);
  states_[i] = s;
  const bool now = available(i);
  if (was != now) {
    if (now)
      ++available_;
    else
      --available_;
    ++generation_;
  }
}

} // namespace trellis::proxy
