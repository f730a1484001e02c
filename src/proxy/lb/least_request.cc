#include "proxy/lb/least_request.h"

namespace trellis::proxy {

void LeastRequestLoadBalancer::onUsableChanged() {
  sampler_.rebuild(endpoints_, [this](size_t i) { return usable(i); });
}

std::optional<size_t> LeastRequestLoadBalancer::pick(const LbContext& ctx) {
  refresh();
  if (sampler_.empty())
    return std::nullopt;
  const bool exclude = honourExclude(ctx);
  auto draw = [&] {
    return exclude ? sampler_.pickExcluding(random_.random(), ctx, endpoints_)
                   : sampler_.pick(random_.random());
  };
  size_t best = draw();
  const uint32_t choices = config_.choice_count < 1 ? 1 : config_.choice_count;
  for (uint32_t c = 1; c < choices; ++c) {
    const size_t cand = draw();
    // active(cand)/weight(cand) < active(best)/weight(best), without division.
    const uint64_t lhs = uint64_t{endpoints_.activeRequests(cand)} * endpoints_.weight(best);
    const uint64_t rhs = uint64_t{endpoints_.activeRequests(best)} * endpoints_.weight(cand);
    if (lhs < rhs)
      best = cand;
  }
  return best;
}

} // namespace trellis::proxy
