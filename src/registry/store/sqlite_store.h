#pragma once

#include <memory>
#include <string>

#include "registry/store.h"

namespace trellis::registry {

struct SqliteStoreSettings {
  std::string path; // the database file; created (with its schema) when absent
  // Group commit: batches queued while the previous transaction synced are committed together,
  // up to this many mutations per transaction.
  size_t max_group_mutations = 100'000;
  // commit() fails fast (kResourceExhausted) when this many batches wait for the committer.
  size_t max_queued_batches = 10'000;
  // Delete history kept for changesSince/watch, in revisions; older tombstones are compacted.
  uint64_t tombstone_retention = 1'000'000;
  // SQLite's page cache; large enough to hold the catalog's working set avoids re-reading
  // B-tree pages on every commit.
  size_t cache_size_kib = 64 * 1024;
  // Run PRAGMA quick_check at open: a damaged file is refused at start, not found mid-flight.
  bool verify_on_open = true;
};

// The embedded store: one SQLite 3 database in WAL mode with synchronous=FULL, held with an
// exclusive lock (one server per file). One committer thread owns the connection: commits and
// reads (load, changesSince, watch backlog) are jobs it runs in order. Consecutive queued
// commits share one transaction and so one WAL fsync (group commit); every batch's callback
// runs on the committer thread after that COMMIT returned. Durability: with WAL and
// synchronous=FULL, COMMIT returns only after the WAL frames including the commit record are
// fsynced, so a process killed (or a machine losing power) after the callback recovers the
// batch from the WAL on the next open. docs/registry.md has the full argument.
//
// A COMMIT that fails (e.g. fsync EIO) leaves it unknown whether the transaction is durable;
// the store then refuses every later commit (kUnavailable) until it is reopened, which
// re-reads the truth from disk.
class SqliteStore final : public Store {
public:
  static constexpr int kSchemaVersion = 1;

  // Opens or creates the database. Clear errors (never a crash) for: a file that is not a
  // database or is damaged, a database that is not a Trellis store, a schema version newer
  // than this binary's, a file locked by another process, an unwritable location.
  static Result<std::unique_ptr<SqliteStore>> open(SqliteStoreSettings settings);
  // Completes every queued commit, then closes the database.
  ~SqliteStore() override;

  const SqliteStoreSettings& settings() const;

  // Store. load, changesSince and watch block until the committer thread ran them; do not call
  // them from a commit or watch callback.
  Result<StoreSnapshot> load() override;
  void commit(std::shared_ptr<const Batch> batch, CommitCallback done) override;
  uint64_t revision() const override;
  Result<ChangeSet> changesSince(uint64_t revision) override;
  Result<std::unique_ptr<StoreWatch>> watch(uint64_t revision, ChangeCallback cb) override;
  void flush() override;
  StoreStats stats() const override;

private:
  struct Impl;
  explicit SqliteStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

} // namespace trellis::registry
