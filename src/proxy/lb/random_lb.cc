#include "proxy/lb/random_lb.h"

namespace trellis::proxy {

void RandomLoadBalancer::onUsableChanged() {
  sampler_.rebuild(endpoints_, [this](size_t i) { return usable(i); });
}

std::optional<size_t> RandomLoadBalancer::pick(const LbContext& ctx) {
  refresh();
  if (sampler_.empty())
    return std::nullopt;
  if (honourExclude(ctx))
    return sampler_.pickExcluding(random_.random(), ctx, endpoints_);
  return sampler_.pick(random_.random());
}

} // namespace trellis::proxy
