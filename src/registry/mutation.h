#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "registry/model.h"

// Resolved changes: what a write turned into after the catalog evaluated it against the state
// (defaults filled, cascades expanded, indexes assigned). They are what the store persists and
// what the catalog applies once the store says they are durable; applying them cannot fail.
namespace trellis::registry {

struct NodePut {
  NodePtr node;
};
struct NodeDelete {
  std::string node; // name (any case)
  uint64_t index = 0;
};
struct ServicePut {
  ServicePtr service;
};
struct ServiceDelete {
  std::string node;
  std::string id;
  uint64_t index = 0;
};
struct CheckPut {
  CheckPtr check;
};
struct CheckDelete {
  std::string node;
  std::string id;
  uint64_t index = 0;
};
// `expect_modify_index`: the KV compare-and-swap precondition the store must verify inside the
// transaction (0: the key must not exist). Set for ?cas writes, so a store shared by several
// servers (etcd) decides the race, not one server's memory.
struct KvPut {
  KvPtr entry;
  std::optional<uint64_t> expect_modify_index;
};
struct KvDelete {
  std::string key;
  uint64_t index = 0;
  std::optional<uint64_t> expect_modify_index;
};

using Mutation = std::variant<NodePut, NodeDelete, ServicePut, ServiceDelete, CheckPut, CheckDelete,
                              KvPut, KvDelete>;

// The index (revision) a mutation happened at.
uint64_t mutationIndex(const Mutation& m);

// One atomic unit for the store: every mutation of indexes (base_revision, revision]. The store
// applies it only if its current revision is base_revision (so two writers cannot interleave)
// and every KV precondition holds; otherwise nothing of it is applied.
struct Batch {
  uint64_t base_revision = 0;
  uint64_t revision = 0;
  std::vector<Mutation> mutations;
};

// Everything a store holds, read at start to rebuild the catalog.
struct StoreSnapshot {
  uint64_t revision = 0;
  std::vector<NodePtr> nodes;
  std::vector<ServicePtr> services;
  std::vector<CheckPtr> checks;
  std::vector<KvPtr> kv;
};

// The changes after some revision, in revision order: applying them in order to the state at
// `from_revision` yields the state at `revision`.
struct ChangeSet {
  uint64_t from_revision = 0;
  uint64_t revision = 0;
  std::vector<Mutation> mutations;
};

} // namespace trellis::registry
