#include "registry/store/memory_store.h"

#include <variant>

namespace trellis::registry {

namespace {
template <class... Ts> struct Overloaded : Ts... { using Ts::operator()...; };
template <class... Ts> Overloaded(Ts...) -> Overloaded<Ts...>;
} // namespace

class MemoryStore::Watch final : public StoreWatch {
public:
  explicit Watch(std::shared_ptr<Watcher> w) : w_(std::move(w)) {}
  ~Watch() override {
    std::lock_guard<std::recursive_mutex> lock(w_->mu);
    w_->active = false;
  }

private:
  std::shared_ptr<Watcher> w_;
};

MemoryStore::MemoryStore(MemoryStoreSettings settings) : settings_(settings) {}
MemoryStore::~MemoryStore() = default;

Result<StoreSnapshot> MemoryStore::load() {
  std::lock_guard<std::mutex> lock(mu_);
  StoreSnapshot s;
  s.revision = revision_;
  for (const auto& [k, v] : nodes_)
    s.nodes.push_back(v);
  for (const auto& [k, v] : services_)
    s.services.push_back(v);
  for (const auto& [k, v] : checks_)
    s.checks.push_back(v);
  for (const auto& [k, v] : kv_)
    s.kv.push_back(v);
  return s;
}

Status MemoryStore::applyLocked(const Batch& b) {
  if (b.base_revision != revision_)
    return makeError(ErrorCode::kFailedPrecondition,
                     "batch is based on revision {} but the store is at revision {}",
                     b.base_revision, revision_);
  if (b.revision < b.base_revision)
    return makeError(ErrorCode::kInvalidArgument, "batch revision {} is below its base {}",
                     b.revision, b.base_revision);
  // Check every KV precondition against the state as the batch itself changes it, before
  // touching anything, so a failing batch leaves no trace.
  std::map<std::string, uint64_t> overlay; // key -> ModifyIndex, 0 when deleted
  auto current = [&](const std::string& key) -> uint64_t {
    if (auto it = overlay.find(key); it != overlay.end())
      return it->second;
    auto it = kv_.find(key);
    return it == kv_.end() ? 0 : it->second->modify_index;
  };
  for (const Mutation& m : b.mutations) {
    if (const auto* p = std::get_if<KvPut>(&m)) {
      if (p->expect_modify_index && current(p->entry->key) != *p->expect_modify_index)
        return makeError(ErrorCode::kFailedPrecondition,
                         "KV precondition failed: key \"{}\" has ModifyIndex {}, expected {}",
                         p->entry->key, current(p->entry->key), *p->expect_modify_index);
      overlay[p->entry->key] = p->entry->modify_index;
    } else if (const auto* d = std::get_if<KvDelete>(&m)) {
      uint64_t cur = current(d->key);
      if (d->expect_modify_index && cur != 0 && cur != *d->expect_modify_index)
        return makeError(ErrorCode::kFailedPrecondition,
                         "KV precondition failed: key \"{}\" has ModifyIndex {}, expected {}",
                         d->key, cur, *d->expect_modify_index);
      overlay[d->key] = 0;
    }
  }
  for (const Mutation& m : b.mutations) {
    std::visit(Overloaded{
                   [&](const NodePut& x) { nodes_[foldName(x.node->name)] = x.node; },
                   [&](const NodeDelete& x) { nodes_.erase(foldName(x.node)); },
                   [&](const ServicePut& x) {
                     services_[{foldName(x.service->node), foldName(x.service->id)}] = x.service;
                   },
                   [&](const ServiceDelete& x) {
                     services_.erase({foldName(x.node), foldName(x.id)});
                   },
                   [&](const CheckPut& x) {
                     checks_[{foldName(x.check->node), foldName(x.check->id)}] = x.check;
                   },
                   [&](const CheckDelete& x) {
                     checks_.erase({foldName(x.node), foldName(x.id)});
                   },
                   [&](const KvPut& x) { kv_[x.entry->key] = x.entry; },
                   [&](const KvDelete& x) { kv_.erase(x.key); },
               },
               m);
  }
  revision_ = b.revision;
  return okStatus();
}

void MemoryStore::commit(std::shared_ptr<const Batch> batch, CommitCallback done) {
  // `done` runs after the locks are released, so it may commit again.
  done(commitAndDeliver(std::move(batch)));
}

Status MemoryStore::commitAndDeliver(std::shared_ptr<const Batch> batch) {
  std::lock_guard<std::mutex> serial(commit_mu_);
  Status st;
  std::vector<std::shared_ptr<Watcher>> watchers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    st = applyLocked(*batch);
    if (st.ok()) {
      ++stats_.batches_committed;
      ++stats_.transactions;
      stats_.mutations += batch->mutations.size();
      history_.push_back(batch);
      while (history_.size() > settings_.history_batches) {
        compacted_ = history_.front()->revision;
        history_.pop_front();
      }
      std::erase_if(watchers_, [](const auto& w) {
        std::lock_guard<std::recursive_mutex> l(w->mu);
        return !w->active;
      });
      watchers = watchers_;
    } else {
      ++stats_.batches_failed;
    }
  }
  if (st.ok() && !watchers.empty()) {
    ChangeSet cs{batch->base_revision, batch->revision, batch->mutations};
    for (const auto& w : watchers) {
      std::lock_guard<std::recursive_mutex> l(w->mu);
      if (w->active)
        w->cb(cs);
    }
  }
  return st;
}

uint64_t MemoryStore::revision() const {
  std::lock_guard<std::mutex> lock(mu_);
  return revision_;
}

Result<ChangeSet> MemoryStore::changesSinceLocked(uint64_t revision) const {
  if (revision > revision_)
    return makeError(ErrorCode::kInvalidArgument,
                     "revision {} is ahead of the store (at revision {})", revision, revision_);
  if (revision < compacted_)
    return makeError(ErrorCode::kFailedPrecondition,
                     "revision {} is compacted; the oldest revision with history is {}", revision,
                     compacted_);
  ChangeSet cs;
  cs.from_revision = revision;
  cs.revision = revision_;
  for (const auto& b : history_) {
    if (b->revision <= revision)
      continue;
    for (const auto& m : b->mutations)
      if (mutationIndex(m) > revision)
        cs.mutations.push_back(m);
  }
  return cs;
}

Result<ChangeSet> MemoryStore::changesSince(uint64_t revision) {
  std::lock_guard<std::mutex> lock(mu_);
  return changesSinceLocked(revision);
}

Result<std::unique_ptr<StoreWatch>> MemoryStore::watch(uint64_t revision, ChangeCallback cb) {
  std::lock_guard<std::mutex> serial(commit_mu_);
  auto w = std::make_shared<Watcher>();
  w->cb = std::move(cb);
  Result<ChangeSet> backlog = makeError(ErrorCode::kInternal, "unset");
  {
    std::lock_guard<std::mutex> lock(mu_);
    backlog = changesSinceLocked(revision);
    if (!backlog.ok())
      return backlog.error();
    watchers_.push_back(w);
  }
  if (!backlog->mutations.empty())
    w->cb(*backlog);
  return std::unique_ptr<StoreWatch>(std::make_unique<Watch>(w));
}

StoreStats MemoryStore::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  StoreStats s = stats_;
  s.revision = revision_;
  return s;
}

} // namespace trellis::registry
