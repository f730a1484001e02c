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

namespace {

std::vector<uint32_t> weightsOf(const std::vector<LbEndpoint>& eps) {
  std::vector<uint32_t> w;
  w.reserve(eps.size());
  for (const auto& ep : eps)
    w.push_back(ep.weight);
  return w;
}

std::vector<std::string> keysOf(const std::vector<LbEndpoint>& eps) {
  std::vector<std::string> k;
  k.reserve(eps.size());
  for (const auto& ep : eps)
    k.push_back(ep.key);
  return k;
}

} // namespace

EndpointSet::EndpointSet(const std::vector<LbEndpoint>& endpoints)
    : EndpointSet(weightsOf(endpoints), keysOf(endpoints)) {}

EndpointSet::EndpointSet(std::vector<uint32_t> weights, std::vector<std::string> keys)
    : weights_(std::move(weights)), keys_(std::move(keys)), per_(weights_.size()),
      available_(weights_.size()) {
  for (auto& w : weights_)
    if (w == 0)
      w = 1;
  if (keys_.size() != weights_.size())
    keys_.clear();
}

const std::string& EndpointSet::key(size_t i) const {
  static const std::string kNone;
  return keys_.empty() ? kNone : keys_[i];
}

void EndpointSet::setState(size_t i, EndpointState s) {
  const bool was = available(i);
  per_[i].state = s;
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
