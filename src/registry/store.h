#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "base/result.h"
#include "registry/mutation.h"

// Durable storage of the registry. The catalog serves reads from memory; a store keeps what
// must survive a restart and decides, at commit, the order of writes (its revision is the
// catalog's global index). Backends: SqliteStore (embedded default), MemoryStore (dev mode,
// tests), and later an etcd store, which is why the contract speaks of revisions, atomic
// batches, KV preconditions and watch-from-revision rather than of tables.
namespace trellis::registry {

using CommitCallback = std::function<void(Status)>;
using ChangeCallback = std::function<void(const ChangeSet&)>;

// A live change stream; destroying it stops delivery (a delivery already running on the store
// thread finishes first).
class StoreWatch {
public:
  virtual ~StoreWatch() = default;
};

struct StoreStats {
  uint64_t revision = 0;
  uint64_t batches_committed = 0; // batches made durable
  uint64_t batches_failed = 0;    // batches rejected or lost to an I/O error
  uint64_t transactions = 0;      // durable transactions (one sync each): group commit at work
  uint64_t mutations = 0;         // mutations made durable
};

class Store {
public:
  virtual ~Store() = default;

  // Reads the whole durable state, to rebuild the catalog at start. May block on I/O: call it
  // before the event loop serves requests.
  virtual Result<StoreSnapshot> load() = 0;

  // Makes `batch` durable atomically. Thread-safe and non-blocking: it queues the batch.
  // `done` runs exactly once, on any thread (possibly inside this call): ok once every
  // mutation is durable (a crash after that loses nothing); an error means nothing of the
  // batch is applied. Batches take effect in submission order. The store rejects
  // (kFailedPrecondition) a batch whose base_revision is not its revision, or whose KV
  // preconditions (KvPut/KvDelete::expect_modify_index) do not hold.
  virtual void commit(std::shared_ptr<const Batch> batch, CommitCallback done) = 0;

  // The revision of the last durable batch.
  virtual uint64_t revision() const = 0;

  // The changes after `revision` up to the current revision, to catch a follower up.
  // kFailedPrecondition when history that far back has been compacted (reload with load()).
  // Deletes may name objects that did not exist at `revision`; apply them as no-ops. May block.
  virtual Result<ChangeSet> changesSince(uint64_t revision) = 0;

  // Streams changes after `revision`: the backlog first (as changesSince), then every batch as
  // it becomes durable, in order. `cb` runs on a store thread. Same errors as changesSince.
  virtual Result<std::unique_ptr<StoreWatch>> watch(uint64_t revision, ChangeCallback cb) = 0;

  // Blocks until every batch submitted before the call has completed (its callback has run).
  virtual void flush() = 0;

  virtual StoreStats stats() const = 0;
};

} // namespace trellis::registry
