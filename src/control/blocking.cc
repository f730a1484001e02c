#include "control/blocking.h"

#include <charconv>

namespace trellis::control {

Result<BlockingParams> parseBlockingParams(std::optional<std::string_view> index,
                                           std::optional<std::string_view> wait,
                                           const BlockingSettings& settings) {
  BlockingParams p;
  p.wait = settings.default_wait;
  if (index && !index->empty()) {
    auto [ptr, ec] = std::from_chars(index->data(), index->data() + index->size(), p.index);
    if (ec != std::errc() || ptr != index->data() + index->size())
      return makeError(ErrorCode::kInvalidArgument, "Invalid index: \"{}\" is not an integer",
                       *index);
  }
  if (wait && !wait->empty()) {
    auto d = parseDuration(*wait);
    if (!d)
      return makeError(ErrorCode::kInvalidArgument, "Invalid wait time: {}",
                       d.error().message());
    p.wait = *d;
  }
  if (p.wait > settings.max_wait)
    p.wait = settings.max_wait;
  return p;
}

Duration jitteredWait(Duration wait, const BlockingSettings& settings,
                      registry::RandomSource& random) {
  if (settings.jitter_divisor == 0)
    return wait;
  const double span = double((wait / settings.jitter_divisor).count());
  return wait + Duration(static_cast<int64_t>(span * random.uniform()));
}

BlockingQueries::BlockingQueries(Dispatcher& loop, registry::Catalog& catalog,
                                 registry::RandomSource& random, BlockingSettings settings)
    : loop_(loop), catalog_(catalog), random_(random), settings_(settings) {}

BlockingQueries::~BlockingQueries() { parked_.clear(); }

uint64_t BlockingQueries::wait(const registry::WatchScope& scope, const BlockingParams& params,
                               Respond respond) {
  if (params.index == 0 || catalog_.scopeIndex(scope) > params.index) {
    respond();
    return 0;
  }
  const uint64_t id = next_id_++;
  auto handle = catalog_.watch(scope, [this, id] { onChange(id); });
  if (!handle) {
    respond(); // over max_watchers: answer as a plain read rather than fail
    return 0;
  }
  auto p = std::make_shared<Parked>(Parked{scope, params.index, std::move(*handle), nullptr,
                                           std::move(respond)});
  p->timer = loop_.createTimer([this, id] { finish(id, true); });
  p->timer->enable(jitteredWait(params.wait, settings_, random_));
  parked_.emplace(id, std::move(p));
  return id;
}

void BlockingQueries::onChange(uint64_t id) {
  auto it = parked_.find(id);
  if (it == parked_.end())
    return;
  if (catalog_.scopeIndex(it->second->scope) > it->second->min_index)
    finish(id, true);
}

void BlockingQueries::cancel(uint64_t id) { finish(id, false); }

void BlockingQueries::finish(uint64_t id, bool respond) {
  auto it = parked_.find(id);
  if (it == parked_.end())
    return;
  std::shared_ptr<Parked> p = std::move(it->second);
  parked_.erase(it);
  p->watch.cancel();
  p->timer->disable();
  Respond r = std::move(p->respond);
  // The timer (whose callback may be running now) is destroyed later, on the loop.
  loop_.post([p] {});
  if (respond && r)
    r();
}

} // namespace trellis::control
