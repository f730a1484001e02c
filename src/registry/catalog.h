#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/result.h"
#include "registry/model.h"
#include "registry/mutation.h"
#include "registry/watch.h"
#include "registry/write.h"

namespace trellis::registry {

struct CatalogSettings {
  Limits limits;
  size_t max_watchers = 100'000;
  // Deleted KV keys remembered so a key's (or prefix's) index still moves after a delete;
  // past this many the oldest are forgotten and their index folds into a floor every KV
  // index is at least (so indexes never go backwards).
  size_t max_kv_tombstones = 100'000;
};

// A read result and the index a blocking query compares against (Consul's X-Consul-Index).
// Indexes are always >= 1.
template <typename T> struct Indexed {
  T value;
  uint64_t index = 1;
};

// Which instances a health query returns.
enum class HealthFilter {
  kAny,
  kPassing,     // ?passing: every check of the instance and of its node is passing
  kNotCritical, // DNS: no check critical (warning still serves, as Consul DNS)
};

struct InstanceQuery {
  std::vector<std::string> tags;                // every tag must be present (case-insensitive)
  std::map<std::string, std::string> node_meta; // every pair must match exactly
  HealthFilter health = HealthFilter::kAny;
};

// One instance as /v1/health/service/<name> returns it.
struct ServiceEntry {
  NodePtr node;
  ServicePtr service;
  std::vector<CheckPtr> checks; // the node's checks, then the instance's, each by CheckID
  // The worst status among `checks` (passing when there are none).
  CheckStatus aggregateStatus() const;
};

struct NodeServices {
  NodePtr node;
  std::vector<ServicePtr> services; // by ID
};

// Told about every applied batch, before watchers are woken (the health scheduler follows
// checks this way; config push can turn it into deltas). Runs on the catalog's thread.
class CatalogObserver {
public:
  virtual ~CatalogObserver() = default;
  virtual void onApplied(const Batch& batch) = 0;
};

// The outcome of Catalog::prepare.
struct PreparedBatch {
  Batch batch;                              // what to make durable, then commit()
  std::vector<Result<WriteResult>> results; // one per request, in order
};

// The in-memory catalog: nodes, service instances, checks and the KV store, the indexes of
// every watchable scope, and the watchers. All reads are served from here.
//
// Threading: not thread-safe and needs no lock; it is owned by the control plane's event-loop
// thread and every method (and every watch and observer callback) runs there. Objects handed
// out are immutable shared pointers, safe to pass to other threads.
//
// Writes come in two forms. apply() evaluates and applies one request at once (an in-memory
// catalog; tests). The durable path (Registry) splits it: prepare() evaluates a group of
// requests into a Batch of resolved mutations without changing anything visible, the store
// makes the Batch durable, then commit() applies it and wakes watchers.
class Catalog {
public:
  explicit Catalog(CatalogSettings settings = {});
  ~Catalog();
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;

  const CatalogSettings& settings() const { return settings_; }
  // The global index: the index of the last applied change.
  uint64_t index() const { return index_; }

  // --- Writes ---

  // Evaluates and applies `req` at once (visible, watchers woken). Not durable: the durable
  // path is Registry::submit. Must not be called from a watch or observer callback.
  Result<WriteResult> apply(const WriteRequest& req);

  // Evaluates `reqs` in order, each against the state left by the ones before it, assigning
  // consecutive indexes from index()+1 to the requests that change something. A request that
  // fails has no effect and takes no index. The catalog is unchanged when this returns
  // (changes are made and rolled back within the call, so no reader can see them).
  PreparedBatch prepare(const std::vector<const WriteRequest*>& reqs);

  // Applies a batch from prepare() once it is durable: updates scope indexes, tells observers,
  // then wakes the watchers of every scope the batch touched (each at most once). The batch
  // must be the one prepared against the current state (base_revision == index()).
  void commit(const Batch& batch);

  // Fills an empty catalog from a store snapshot (start-up). Errors if the snapshot is
  // inconsistent (a service on a missing node, ...) or the catalog is not empty. Afterwards
  // every scope's index is at least the snapshot's revision, so indexes never go backwards
  // across a restart.
  Status restore(const StoreSnapshot& snapshot);

  // --- Reads (Consul endpoint in brackets) ---

  // [/v1/catalog/nodes] by name, optionally filtered by node meta.
  Indexed<std::vector<NodePtr>>
  nodes(const std::map<std::string, std::string>& node_meta = {}) const;
  // [/v1/catalog/node/<n>] null when absent.
  Indexed<std::optional<NodeServices>> nodeServices(std::string_view node) const;
  NodePtr node(std::string_view name) const;
  // [/v1/health/node/<n>] the node's checks (node and service checks) by CheckID.
  Indexed<std::vector<CheckPtr>> nodeChecks(std::string_view node) const;
  // [/v1/catalog/services] name -> union of its instances' tags (sorted), optionally only
  // instances on nodes matching node_meta.
  Indexed<std::map<std::string, std::vector<std::string>>>
  services(const std::map<std::string, std::string>& node_meta = {}) const;
  // [/v1/health/service/<s>, /v1/catalog/service/<s>] instances by (node, ID).
  Indexed<std::vector<ServiceEntry>> serviceInstances(std::string_view name,
                                                      const InstanceQuery& query = {}) const;
  // [/v1/health/checks/<s>] the checks of the service's instances (not node checks).
  Indexed<std::vector<CheckPtr>> serviceChecks(std::string_view name) const;
  // [/v1/health/state/<state>] nullopt: any state.
  Indexed<std::vector<CheckPtr>> checksInState(std::optional<CheckStatus> state) const;
  ServicePtr service(std::string_view node, std::string_view id) const;
  // One instance as serviceInstances gives it (its node's checks, then its own), or nullopt.
  std::optional<ServiceEntry> instance(std::string_view node, std::string_view id) const;
  // Whether any instance (of any health) of the service is registered.
  bool hasInstances(std::string_view name) const;
  CheckPtr check(std::string_view node, std::string_view id) const;

  // [/v1/kv/<key>] null when absent.
  Indexed<KvPtr> kvGet(std::string_view key) const;
  // [/v1/kv/<prefix>?recurse] every entry whose key starts with `prefix`, by key.
  Indexed<std::vector<KvPtr>> kvList(std::string_view prefix) const;
  // [/v1/kv/<prefix>?keys&separator=<sep>] keys under prefix; with a separator, a key that has
  // it after the prefix is cut just after it and listed once ("a/b/c" -> "a/b/").
  Indexed<std::vector<std::string>> kvKeys(std::string_view prefix,
                                           std::string_view separator = {}) const;

  // The index a read of `scope` reports (what the reads above return).
  uint64_t scopeIndex(const WatchScope& scope) const;

  // --- Watches ---

  // Registers `cb` to run (on this thread) each time `scope` changes, until the handle is
  // destroyed or cancelled. kResourceExhausted past settings.max_watchers.
  Result<WatchHandle> watch(const WatchScope& scope, WatchCallback cb);
  size_t watcherCount() const { return watches_->size(); }

  void addObserver(CatalogObserver* o);
  void removeObserver(CatalogObserver* o);

  struct Counts {
    size_t nodes = 0;
    size_t services = 0;
    size_t checks = 0;
    size_t kv = 0;
    size_t kv_tombstones = 0;
  };
  Counts counts() const;

private:
  struct ServiceSlot {
    ServicePtr service;
    std::map<std::string, CheckPtr> checks; // folded CheckID
  };
  struct NodeRecord {
    NodePtr node;
    std::map<std::string, ServiceSlot> services;              // folded service ID
    std::map<std::string, CheckPtr> node_checks;              // folded CheckID
    std::unordered_map<std::string, std::string> check_owner; // CheckID -> service ID or ""
  };
  // An instance seen from its service name. Both pointers stay valid while the instance
  // exists (std::map nodes do not move).
  struct InstanceRef {
    const NodeRecord* node;
    const ServiceSlot* slot;
  };
  struct NameRecord {
    std::map<std::string, InstanceRef> instances; // "node\0id" (folded) -> instance
    std::map<std::string, size_t> tags;           // tag -> instances carrying it
    std::string display;                          // the spelling of the latest registration
  };
  // What applying one mutation changed beyond the object itself.
  struct Effects {
    bool services_list_changed = false;
  };
  class Txn;

  // Primitive, infallible state changes (relations are guaranteed by evaluation or checked by
  // restore). Each returns its inverse so prepare() can roll back.
  Mutation applyPrimitive(const Mutation& m, Effects* fx);
  Mutation putNode(const NodePtr& n);
  Mutation deleteNode(const std::string& name, uint64_t index);
  Mutation putService(const ServicePtr& s, Effects* fx);
  Mutation deleteService(const std::string& node, const std::string& id, uint64_t index,
                         Effects* fx);
  Mutation putCheck(const CheckPtr& c);
  Mutation deleteCheck(const std::string& node, const std::string& id, uint64_t index);
  Mutation putKv(const KvPtr& e);
  Mutation deleteKv(const std::string& key, uint64_t index);
  void addTags(NameRecord& rec, const Service& s, Effects* fx);
  void removeTags(NameRecord& rec, const Service& s, Effects* fx);

  // Request evaluation (prepare).
  Status evaluate(const WriteRequest& req, Txn& txn);
  Status evalRegister(const RegisterRequest& r, Txn& txn);
  Status evalDeregister(const DeregisterRequest& r, Txn& txn);
  Status evalAgentService(const AgentServiceRequest& r, Txn& txn);
  Status evalAgentServiceDeregister(const AgentServiceDeregister& r, Txn& txn);
  Status evalAgentCheck(const AgentCheckRequest& r, Txn& txn);
  Status evalAgentCheckDeregister(const AgentCheckDeregister& r, Txn& txn);
  Status evalCheckUpdate(const CheckUpdateRequest& r, Txn& txn);
  Status evalKvPut(const KvPutRequest& r, Txn& txn);
  Status evalKvDelete(const KvDeleteRequest& r, Txn& txn);
  Status putServiceIn(Service s, Txn& txn, bool* renamed);
  Status putCheckIn(Check c, Txn& txn, bool keep_status);
  void deleteServiceIn(const NodeRecord& rec, const ServiceSlot& slot, Txn& txn);
  void deleteNodeIn(const NodeRecord& rec, Txn& txn);

  // Commit-time bookkeeping.
  void touchBefore(const Mutation& m, uint64_t index);
  void touchAfter(const Mutation& m, uint64_t index, const Effects& fx);
  void touch(ScopeKind kind, const std::string& name, uint64_t index);
  void touchServicesOfNode(const std::string& node, uint64_t index);
  void touchCheckOwner(const std::string& node, const std::string& service_id, uint64_t index);
  void addTombstone(const std::string& key, uint64_t index);
  void clearState();

  const NodeRecord* findNode(std::string_view name) const;
  const ServiceSlot* findSlot(std::string_view node, std::string_view id) const;
  static ServiceEntry entryOf(const NodeRecord& rec, const ServiceSlot& slot);
  CheckPtr findCheck(const NodeRecord& rec, const std::string& folded_id) const;
  std::vector<CheckPtr> checksOf(const NodeRecord& rec) const;
  uint64_t withFloor(uint64_t index) const;
  uint64_t kvKeyIndex(std::string_view key) const;
  uint64_t kvPrefixIndex(std::string_view prefix) const;

  CatalogSettings settings_;
  uint64_t index_ = 0;
  bool in_callbacks_ = false;

  std::map<std::string, NodeRecord> nodes_;               // folded node name
  std::unordered_map<std::string, std::string> node_ids_; // folded node ID -> folded name
  std::map<std::string, NameRecord> names_;               // folded service name
  using CheckKey = std::pair<std::string, std::string>;   // (folded node, folded CheckID)
  std::array<std::map<CheckKey, CheckPtr>, 3> checks_by_state_;
  size_t service_count_ = 0;
  size_t check_count_ = 0;
  std::map<std::string, KvPtr, std::less<>> kv_;

  // Scope indexes, changed only by commit(); absent entries fall back to the list's index.
  uint64_t floor_ = 0; // restore(): no scope reports less than the loaded revision
  uint64_t nodes_index_ = 0;
  uint64_t services_index_ = 0;
  std::array<uint64_t, 4> state_index_{}; // passing, warning, critical, any
  std::unordered_map<std::string, uint64_t> node_index_;
  std::unordered_map<std::string, uint64_t> service_index_;
  std::map<std::string, uint64_t, std::less<>> kv_tombstones_;
  std::deque<std::pair<uint64_t, std::string>> tombstone_order_;
  uint64_t kv_reaped_floor_ = 0;

  std::shared_ptr<WatchTable> watches_;
  std::vector<CatalogObserver*> observers_;
};

} // namespace trellis::registry
