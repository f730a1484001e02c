#include "registry/registry.h"

#include <algorithm>

#include "base/log.h"

namespace trellis::registry {

Registry::Registry(Dispatcher& loop, Store& store, CatalogSettings catalog_settings,
                   RegistrySettings settings)
    : loop_(loop), store_(store), settings_(settings), catalog_(std::move(catalog_settings)) {
  if (settings_.max_batch_requests == 0)
    settings_.max_batch_requests = 1;
}

Registry::~Registry() {
  alive_.reset();
  store_.flush();
}

Status Registry::start() {
  if (started_)
    return makeError(ErrorCode::kFailedPrecondition, "registry already started");
  auto snap = store_.load();
  if (!snap.ok())
    return snap.error();
  TRELLIS_RETURN_IF_ERROR(catalog_.restore(*snap));
  started_ = true;
  auto c = catalog_.counts();
  TLOG_INFO("registry: loaded index {}: {} nodes, {} services, {} checks, {} KV entries",
            catalog_.index(), c.nodes, c.services, c.checks, c.kv);
  return okStatus();
}

void Registry::fail(WriteCallback done, Error e) {
  ++stats_.writes_failed;
  std::weak_ptr<bool> alive = alive_;
  loop_.post([alive, done = std::move(done), e = std::move(e)] {
    if (alive.lock())
      done(e);
  });
}

void Registry::submit(WriteRequest req, WriteCallback done) {
  ++stats_.writes_submitted;
  if (!started_)
    return fail(std::move(done),
                makeError(ErrorCode::kFailedPrecondition, "registry is not started"));
  if (queue_.size() >= settings_.max_pending_writes) {
    ++stats_.writes_rejected_full;
    return fail(std::move(done),
                makeError(ErrorCode::kResourceExhausted,
                          "registry: {} writes already wait for the store (max_pending_writes)",
                          settings_.max_pending_writes));
  }
  queue_.push_back(Pending{std::move(req), std::move(done)});
  schedule();
}

void Registry::schedule() {
  if (in_flight_ || batch_posted_ || queue_.empty())
    return;
  // Start on a later turn, so every write submitted during this turn joins the batch.
  batch_posted_ = true;
  std::weak_ptr<bool> alive = alive_;
  loop_.post([this, alive] {
    if (alive.lock())
      startBatch();
  });
}

void Registry::startBatch() {
  batch_posted_ = false;
  if (in_flight_ || queue_.empty())
    return;
  const size_t n = std::min(queue_.size(), settings_.max_batch_requests);
  std::vector<Pending> writes;
  writes.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    writes.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  stats_.largest_batch = std::max(stats_.largest_batch, n);
  std::vector<const WriteRequest*> reqs;
  reqs.reserve(n);
  for (const auto& w : writes)
    reqs.push_back(&w.req);
  PreparedBatch prepared = catalog_.prepare(reqs);

  if (prepared.batch.mutations.empty()) {
    // Nothing to persist (failed or no-op writes): the state they saw is already durable.
    finish(writes, prepared.results);
    schedule();
    return;
  }
  ++stats_.batches;
  in_flight_ = InFlight{std::move(writes), std::move(prepared.results),
                        std::make_shared<const Batch>(std::move(prepared.batch))};
  std::weak_ptr<bool> alive = alive_;
  Dispatcher* loop = &loop_;
  store_.commit(in_flight_->batch, [this, alive, loop](Status st) {
    // Any thread: hop to the loop before touching anything.
    loop->post([this, alive, st = std::move(st)]() mutable {
      if (alive.lock())
        onCommitted(std::move(st));
    });
  });
}

void Registry::onCommitted(Status st) {
  InFlight f = std::move(*in_flight_);
  in_flight_.reset();
  if (st.ok()) {
    // Durable: make it visible (watchers wake inside commit), then acknowledge.
    catalog_.commit(*f.batch);
  } else {
    TLOG_ERROR("registry: batch of {} writes (index {}..{}) not applied: {}", f.writes.size(),
               f.batch->base_revision + 1, f.batch->revision, st.error().message());
    for (auto& r : f.results)
      if (r.ok())
        r = Error(st.error().code() == ErrorCode::kFailedPrecondition ? ErrorCode::kUnavailable
                                                                      : st.error().code(),
                  fmt::format("write not applied: {}", st.error().message()));
  }
  finish(f.writes, f.results);
  schedule();
}

void Registry::finish(std::vector<Pending>& writes, std::vector<Result<WriteResult>>& results) {
  for (size_t i = 0; i < writes.size(); ++i) {
    if (results[i].ok())
      ++stats_.writes_ok;
    else
      ++stats_.writes_failed;
    writes[i].done(std::move(results[i]));
  }
}

RegistryStats Registry::stats() const {
  RegistryStats s = stats_;
  s.pending = queue_.size();
  return s;
}

} // namespace trellis::registry
