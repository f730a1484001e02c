#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "base/dispatcher.h"
#include "base/result.h"
#include "registry/catalog.h"
#include "registry/health.h"

// Consul's blocking queries: a read with ?index=N waits until the index of what it reads
// passes N, or until ?wait (plus jitter) elapses, then answers with the current result.
namespace trellis::control {

struct BlockingSettings {
  Duration default_wait = std::chrono::minutes(5); // ?wait absent
  Duration max_wait = std::chrono::minutes(10);    // longer ?wait values are clamped
  // The timeout is wait + u * wait / jitter_divisor, u uniform in [0, 1) (Consul: 16), so
  // clients that started together do not all come back together.
  uint32_t jitter_divisor = 16;
};

struct BlockingParams {
  uint64_t index = 0; // 0: answer at once
  Duration wait{0};   // clamped, without jitter
};

// Parses ?index= and ?wait= (a duration with a unit: "5s", "1m"). Errors name the parameter.
Result<BlockingParams> parseBlockingParams(std::optional<std::string_view> index,
                                           std::optional<std::string_view> wait,
                                           const BlockingSettings& settings);

// The wait with its jitter: in [wait, wait + wait / jitter_divisor).
Duration jitteredWait(Duration wait, const BlockingSettings& settings,
                      registry::RandomSource& random);

// The parked queries of one catalog. Threading: the catalog's loop thread only.
class BlockingQueries {
public:
  using Respond = std::function<void()>;

  BlockingQueries(Dispatcher& loop, registry::Catalog& catalog, registry::RandomSource& random,
                  BlockingSettings settings = {});
  ~BlockingQueries();
  BlockingQueries(const BlockingQueries&) = delete;
  BlockingQueries& operator=(const BlockingQueries&) = delete;

  // Runs `respond` now when params.index is 0 or the scope's index already passed it (or no
  // watcher can be added: the query then degrades to a plain read). Otherwise parks it until
  // a change moves the scope's index past params.index, or the jittered wait elapses, and
  // returns an id for cancel(). Returns 0 when it responded at once.
  uint64_t wait(const registry::WatchScope& scope, const BlockingParams& params, Respond respond);
  // Drops a parked query without responding (the client went away). Unknown ids are ignored.
  void cancel(uint64_t id);
  // Parked queries now.
  size_t parked() const { return parked_.size(); }
  const BlockingSettings& settings() const { return settings_; }

private:
  struct Parked {
    registry::WatchScope scope;
    uint64_t min_index;
    registry::WatchHandle watch;
    std::unique_ptr<Timer> timer;
    Respond respond;
  };
  void onChange(uint64_t id);
  void finish(uint64_t id, bool respond);

  Dispatcher& loop_;
  registry::Catalog& catalog_;
  registry::RandomSource& random_;
  BlockingSettings settings_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::shared_ptr<Parked>> parked_;
};

} // namespace trellis::control
