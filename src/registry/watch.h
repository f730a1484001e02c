#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "registry/model.h"

// Watches: how blocking queries and config push learn that what they read has changed.
// A watcher names one scope; a write wakes the watchers of exactly the scopes it touched.
namespace trellis::registry {

enum class ScopeKind : uint8_t {
  kAll,           // any change at all
  kNodes,         // the node list (a node added, removed or changed)
  kNode,          // one node: its fields, its services, its checks
  kServices,      // the service list: the set of names and each name's tag union
  kService,       // one service name: its instances, their checks, their nodes and node checks
  kChecksInState, // checks entering or leaving one state (or any check change)
  kKvKey,         // one KV key
  kKvPrefix,      // every KV key starting with a prefix
};

// What a watcher waits for. Node and service names are matched case-insensitively (they are
// folded here); KV keys and prefixes are exact.
class WatchScope {
public:
  static WatchScope all() { return WatchScope(ScopeKind::kAll, ""); }
  static WatchScope nodes() { return WatchScope(ScopeKind::kNodes, ""); }
  static WatchScope node(std::string_view name) {
    return WatchScope(ScopeKind::kNode, foldName(name));
  }
  static WatchScope services() { return WatchScope(ScopeKind::kServices, ""); }
  static WatchScope service(std::string_view name) {
    return WatchScope(ScopeKind::kService, foldName(name));
  }
  // nullopt: any check change (Consul's /v1/health/state/any).
  static WatchScope checksInState(std::optional<CheckStatus> status) {
    return WatchScope(ScopeKind::kChecksInState,
                      status ? std::string(checkStatusName(*status)) : std::string("any"));
  }
  static WatchScope kvKey(std::string_view key) { return WatchScope(ScopeKind::kKvKey, key); }
  static WatchScope kvPrefix(std::string_view prefix) {
    return WatchScope(ScopeKind::kKvPrefix, prefix);
  }

  ScopeKind kind() const { return kind_; }
  // The folded node/service name, the state name, the key or prefix; empty for list scopes.
  const std::string& name() const { return name_; }
  bool operator==(const WatchScope&) const = default;

private:
  WatchScope(ScopeKind kind, std::string_view name) : kind_(kind), name_(name) {}
  ScopeKind kind_;
  std::string name_;
};

class WatchTable;

// Owns one registration. Destroying or cancel()ing it unregisters the watcher; after that its
// callback never runs again, even when cancelled from inside a wake-up round. Outliving the
// catalog is safe (cancel becomes a no-op).
class WatchHandle {
public:
  WatchHandle() = default;
  WatchHandle(WatchHandle&& other) noexcept;
  WatchHandle& operator=(WatchHandle&& other) noexcept;
  WatchHandle(const WatchHandle&) = delete;
  WatchHandle& operator=(const WatchHandle&) = delete;
  ~WatchHandle() { cancel(); }

  void cancel();
  bool active() const;

private:
  friend class WatchTable;
  WatchHandle(std::weak_ptr<WatchTable> table, uint64_t id) : table_(std::move(table)), id_(id) {}
  std::weak_ptr<WatchTable> table_;
  uint64_t id_ = 0;
};

using WatchCallback = std::function<void()>;

// The catalog's watcher registry. Watchers are grouped by scope in a hash map, so finding the
// watchers of a touched scope is one lookup and a wake-up costs O(watchers woken). KV prefix
// scopes are found by looking up the key's prefixes at the lengths some prefix watcher uses.
// Single-threaded: used on the catalog's thread only.
class WatchTable : public std::enable_shared_from_this<WatchTable> {
public:
  explicit WatchTable(size_t max_watchers) : max_watchers_(max_watchers) {}

  // Registers `cb` for `scope`. kResourceExhausted past max_watchers.
  Result<WatchHandle> add(const WatchScope& scope, WatchCallback cb);
  void cancel(uint64_t id);
  bool active(uint64_t id) const { return entries_.count(id) != 0; }
  size_t size() const { return entries_.size(); }

  // A wake-up round: begin, mark the touched scopes (a watcher is collected at most once per
  // round however many of its scopes' changes it sees), then fire.
  void beginRound() {
    ++round_;
    pending_.clear();
  }
  void touch(ScopeKind kind, std::string_view name);
  // Touches kvKey(key) and every watched kvPrefix that `key` starts with.
  void touchKv(std::string_view key);
  // Runs the callbacks collected this round, in the order their scopes were touched. A callback
  // may cancel watchers (cancelled ones are skipped), add watchers (they wait for the next
  // round) and read the catalog.
  void fire();

  // True when any watcher waits on (kind, name); lets the catalog skip work nobody waits for.
  bool watched(ScopeKind kind, std::string_view name) const;
  bool hasKvPrefixWatchers() const { return !prefix_lengths_.empty(); }

private:
  struct Key {
    ScopeKind kind;
    std::string name;
    bool operator==(const Key&) const = default;
  };
  struct KeyView {
    ScopeKind kind;
    std::string_view name;
  };
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(const Key& k) const { return hash(k.kind, k.name); }
    size_t operator()(const KeyView& k) const { return hash(k.kind, k.name); }
    static size_t hash(ScopeKind kind, std::string_view name) {
      return std::hash<std::string_view>()(name) * 31 + static_cast<size_t>(kind);
    }
  };
  struct KeyEq {
    using is_transparent = void;
    template <typename A, typename B> bool operator()(const A& a, const B& b) const {
      return a.kind == b.kind && std::string_view(a.name) == std::string_view(b.name);
    }
  };
  struct Entry {
    uint64_t id;
    Key key;
    WatchCallback cb;
    uint64_t collected_round = 0;
  };
  using EntryPtr = std::shared_ptr<Entry>;
  // Per scope: its watchers, in registration order; erased with the last one.
  using ScopeMap = std::unordered_map<Key, std::map<uint64_t, EntryPtr>, KeyHash, KeyEq>;

  size_t max_watchers_;
  uint64_t next_id_ = 1;
  uint64_t round_ = 0;
  std::unordered_map<uint64_t, EntryPtr> entries_;
  ScopeMap by_scope_;
  std::map<size_t, size_t> prefix_lengths_; // KV prefix length -> number of prefix scopes
  std::vector<EntryPtr> pending_;
};

} // namespace trellis::registry
