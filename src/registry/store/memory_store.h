#pragma once

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "registry/store.h"

namespace trellis::registry {

struct MemoryStoreSettings {
  // Batches kept for changesSince/watch; older history is compacted away.
  size_t history_batches = 10'000;
};

// A store that keeps everything in process memory: `trellis server -dev` and tests. Nothing
// survives the process. Commits complete inside commit() on the caller's thread, which keeps
// tests on a simulated clock deterministic. Thread-safe.
class MemoryStore final : public Store {
public:
  explicit MemoryStore(MemoryStoreSettings settings = {});
  ~MemoryStore() override;

  // Store
  Result<StoreSnapshot> load() override;
  void commit(std::shared_ptr<const Batch> batch, CommitCallback done) override;
  uint64_t revision() const override;
  Result<ChangeSet> changesSince(uint64_t revision) override;
  Result<std::unique_ptr<StoreWatch>> watch(uint64_t revision, ChangeCallback cb) override;
  void flush() override {}
  StoreStats stats() const override;

private:
  class Watch;
  struct Watcher {
    std::recursive_mutex mu; // held while delivering, so destroying the handle waits for a delivery
    ChangeCallback cb;
    bool active = true;
  };
  Status commitAndDeliver(std::shared_ptr<const Batch> batch);
  Status applyLocked(const Batch& b);
  Result<ChangeSet> changesSinceLocked(uint64_t revision) const;

  MemoryStoreSettings settings_;
  mutable std::mutex mu_;
  std::mutex commit_mu_; // serialises commit() + delivery so watchers see batches in order
  uint64_t revision_ = 0;
  uint64_t compacted_ = 0;
  std::map<std::string, NodePtr> nodes_;
  std::map<std::pair<std::string, std::string>, ServicePtr> services_;
  std::map<std::pair<std::string, std::string>, CheckPtr> checks_;
  std::map<std::string, KvPtr> kv_;
  std::deque<std::shared_ptr<const Batch>> history_;
  std::vector<std::shared_ptr<Watcher>> watchers_;
  StoreStats stats_;
};

} // namespace trellis::registry
