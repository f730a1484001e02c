#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "base/dispatcher.h"
#include "base/result.h"
#include "registry/catalog.h"
#include "registry/store.h"
#include "registry/write.h"

namespace trellis::registry {

struct RegistrySettings {
  // Writes waiting behind the batch the store is committing; more fail with kResourceExhausted.
  size_t max_pending_writes = 100'000;
  // Requests evaluated into one batch (one store transaction, one fsync).
  size_t max_batch_requests = 10'000;
};

struct RegistryStats {
  uint64_t writes_submitted = 0;
  uint64_t writes_ok = 0;
  uint64_t writes_failed = 0;        // rejected by evaluation or lost to a store error
  uint64_t writes_rejected_full = 0; // max_pending_writes reached
  uint64_t batches = 0;              // batches sent to the store
  size_t pending = 0;                // writes waiting now
  size_t largest_batch = 0;          // most requests in one batch so far
};

// The write path: the catalog plus its store. Every write is evaluated against the catalog,
// made durable by the store, then applied to the catalog (readers and watchers see it) and
// only then acknowledged. Writes arriving while the store syncs one batch are evaluated
// together into the next batch: one transaction, one fsync for all of them (group commit).
//
// Threading: lives on the control plane's event-loop thread (`loop`); submit() and every
// callback run there. The store may complete on its own thread; completions are posted here.
class Registry {
public:
  Registry(Dispatcher& loop, Store& store, CatalogSettings catalog_settings = {},
           RegistrySettings settings = {});
  // Waits for the batch in flight (store.flush()) so no store thread calls back into a dead
  // registry. Queued writes are dropped without their callbacks: stop the API first.
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Loads the store into the catalog. Call once, before submit(); the error (corrupt store,
  // inconsistent data) is fatal for the server.
  Status start();

  // Reads and watches go straight to the catalog.
  Catalog& catalog() { return catalog_; }
  const Catalog& catalog() const { return catalog_; }

  // Submits a write. `done` runs later on the loop thread, never inside submit(): with the
  // index it was applied at once it is durable and visible in the catalog (its watchers
  // already woken), or with an error and nothing of the write applied.
  void submit(WriteRequest req, WriteCallback done);

  RegistryStats stats() const;

private:
  struct Pending {
    WriteRequest req;
    WriteCallback done;
  };
  struct InFlight {
    std::vector<Pending> writes;
    std::vector<Result<WriteResult>> results;
    std::shared_ptr<const Batch> batch;
  };

  void schedule();
  void startBatch();
  void onCommitted(Status st);
  void finish(std::vector<Pending>& writes, std::vector<Result<WriteResult>>& results);
  void fail(WriteCallback done, Error e);

  Dispatcher& loop_;
  Store& store_;
  RegistrySettings settings_;
  Catalog catalog_;
  bool started_ = false;
  bool batch_posted_ = false;
  std::deque<Pending> queue_;
  std::optional<InFlight> in_flight_;
  RegistryStats stats_;
  // Posted completions check this, so they do nothing once the registry is gone.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

} // namespace trellis::registry
