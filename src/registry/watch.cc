#include "registry/watch.h"

namespace trellis::registry {

WatchHandle::WatchHandle(WatchHandle&& other) noexcept
    : table_(std::move(other.table_)), id_(other.id_) {
  other.id_ = 0;
}

WatchHandle& WatchHandle::operator=(WatchHandle&& other) noexcept {
  if (this != &other) {
    cancel();
    table_ = std::move(other.table_);
    id_ = other.id_;
    other.id_ = 0;
  }
  return *this;
}

void WatchHandle::cancel() {
  if (id_ == 0)
    return;
  if (auto t = table_.lock())
    t->cancel(id_);
  id_ = 0;
  table_.reset();
}

bool WatchHandle::active() const {
  if (id_ == 0)
    return false;
  auto t = table_.lock();
  return t && t->active(id_);
}

Result<WatchHandle> WatchTable::add(const WatchScope& scope, WatchCallback cb) {
  if (entries_.size() >= max_watchers_)
    return makeError(ErrorCode::kResourceExhausted,
                     "too many watchers: the limit max_watchers is {}", max_watchers_);
  auto e = std::make_shared<Entry>();
  e->id = next_id_++;
  e->key = Key{scope.kind(), scope.name()};
  e->cb = std::move(cb);
  // A watcher added during a round must not be woken by that round.
  e->collected_round = round_;
  auto& slot = by_scope_[e->key];
  slot.emplace(e->id, e);
  if (scope.kind() == ScopeKind::kKvPrefix && slot.size() == 1)
    ++prefix_lengths_[scope.name().size()];
  entries_.emplace(e->id, e);
  return WatchHandle(weak_from_this(), e->id);
}

void WatchTable::cancel(uint64_t id) {
  auto it = entries_.find(id);
  if (it == entries_.end())
    return;
  EntryPtr e = std::move(it->second);
  entries_.erase(it);
  auto sit = by_scope_.find(e->key);
  if (sit == by_scope_.end())
    return;
  sit->second.erase(id);
  if (sit->second.empty()) {
    if (e->key.kind == ScopeKind::kKvPrefix) {
      auto lit = prefix_lengths_.find(e->key.name.size());
      if (lit != prefix_lengths_.end() && --lit->second == 0)
        prefix_lengths_.erase(lit);
    }
    by_scope_.erase(sit);
  }
}

void WatchTable::touch(ScopeKind kind, std::string_view name) {
  auto it = by_scope_.find(KeyView{kind, name});
  if (it == by_scope_.end())
    return;
  for (auto& [id, e] : it->second) {
    if (e->collected_round == round_)
      continue;
    e->collected_round = round_;
    pending_.push_back(e);
  }
}

void WatchTable::touchKv(std::string_view key) {
  touch(ScopeKind::kKvKey, key);
  for (const auto& [len, count] : prefix_lengths_) {
    if (len > key.size())
      break;
    touch(ScopeKind::kKvPrefix, key.substr(0, len));
  }
}

bool WatchTable::watched(ScopeKind kind, std::string_view name) const {
  return by_scope_.find(KeyView{kind, name}) != by_scope_.end();
}

void WatchTable::fire() {
  std::vector<EntryPtr> batch;
  batch.swap(pending_);
  for (const EntryPtr& e : batch) {
    // Cancelled earlier in this round (possibly by another watcher's callback): skip. The
    // shared pointer keeps the callback alive while it runs, even if it cancels itself.
    if (entries_.count(e->id) == 0)
      continue;
    e->cb();
  }
}

} // namespace trellis::registry
