#include "registry/catalog.h"

#include <algorithm>
#include <cassert>
#include <unordered_set>

#include "base/log.h"

namespace trellis::registry {

namespace {

template <class... Ts> struct Overloaded : Ts... { using Ts::operator()...; };
template <class... Ts> Overloaded(Ts...) -> Overloaded<Ts...>;

bool startsWith(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

bool equalsFold(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

// The smallest string greater than every string that starts with `s` (empty: none exists).
std::string prefixSuccessor(std::string s) {
  while (!s.empty() && static_cast<unsigned char>(s.back()) == 0xff)
    s.pop_back();
  if (!s.empty())
    s.back() = static_cast<char>(static_cast<unsigned char>(s.back()) + 1);
  return s;
}

// Cuts `s` to at most `limit` bytes without splitting a UTF-8 sequence.
void truncateOutput(std::string& s, size_t limit) {
  if (s.size() <= limit)
    return;
  size_t n = limit;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80)
    --n;
  s.resize(n);
}

size_t stateSlot(CheckStatus s) {
  return static_cast<size_t>(s);
}
constexpr size_t kAnyState = 3;

std::set<std::string> distinctTags(const Service& s) {
  return std::set<std::string>(s.tags.begin(), s.tags.end());
}

} // namespace

uint64_t mutationIndex(const Mutation& m) {
  return std::visit(Overloaded{
                        [](const NodePut& x) { return x.node->modify_index; },
                        [](const NodeDelete& x) { return x.index; },
                        [](const ServicePut& x) { return x.service->modify_index; },
                        [](const ServiceDelete& x) { return x.index; },
                        [](const CheckPut& x) { return x.check->modify_index; },
                        [](const CheckDelete& x) { return x.index; },
                        [](const KvPut& x) { return x.entry->modify_index; },
                        [](const KvDelete& x) { return x.index; },
                    },
                    m);
}

std::string_view writeRequestName(const WriteRequest& req) {
  return std::visit(Overloaded{
                        [](const RegisterRequest&) { return "catalog.register"; },
                        [](const DeregisterRequest&) { return "catalog.deregister"; },
                        [](const AgentServiceRequest&) { return "agent.service.register"; },
                        [](const AgentServiceDeregister&) { return "agent.service.deregister"; },
                        [](const AgentCheckRequest&) { return "agent.check.register"; },
                        [](const AgentCheckDeregister&) { return "agent.check.deregister"; },
                        [](const CheckUpdateRequest&) { return "check.update"; },
                        [](const KvPutRequest&) { return "kv.put"; },
                        [](const KvDeleteRequest&) { return "kv.delete"; },
                    },
                    req);
}

CheckStatus ServiceEntry::aggregateStatus() const {
  CheckStatus worst = CheckStatus::kPassing;
  for (const auto& c : checks)
    if (static_cast<int>(c->status) > static_cast<int>(worst))
      worst = c->status;
  return worst;
}

// Evaluation scratch: every mutation a request resolves to is applied to the live maps at once
// (so later parts of the request, and later requests of the batch, see it) and its inverse is
// kept so the whole group can be rolled back before prepare() returns.
class Catalog::Txn {
public:
  Txn(Catalog& c, uint64_t index) : c_(c), index_(index) {}

  uint64_t index() const { return index_; }
  void setIndex(uint64_t index) { index_ = index; }
  void emit(Mutation m) {
    undo_.push_back(c_.applyPrimitive(m, nullptr));
    out_.push_back(std::move(m));
  }
  size_t mark() const { return out_.size(); }
  void rollbackTo(size_t mark) {
    while (undo_.size() > mark) {
      c_.applyPrimitive(undo_.back(), nullptr);
      undo_.pop_back();
    }
    out_.resize(mark);
  }
  // Undoes everything and hands back the resolved mutations.
  std::vector<Mutation> finish() {
    std::vector<Mutation> out = std::move(out_);
    out_.clear();
    while (!undo_.empty()) {
      c_.applyPrimitive(undo_.back(), nullptr);
      undo_.pop_back();
    }
    return out;
  }

private:
  Catalog& c_;
  uint64_t index_;
  std::vector<Mutation> out_;
  std::vector<Mutation> undo_;
};

Catalog::Catalog(CatalogSettings settings)
    : settings_(std::move(settings)),
      watches_(std::make_shared<WatchTable>(settings_.max_watchers)) {}

Catalog::~Catalog() = default;

// ---------------------------------------------------------------------------------------------
// Primitives

Mutation Catalog::applyPrimitive(const Mutation& m, Effects* fx) {
  return std::visit(
      Overloaded{
          [&](const NodePut& x) { return putNode(x.node); },
          [&](const NodeDelete& x) { return deleteNode(x.node, x.index); },
          [&](const ServicePut& x) { return putService(x.service, fx); },
          [&](const ServiceDelete& x) { return deleteService(x.node, x.id, x.index, fx); },
          [&](const CheckPut& x) { return putCheck(x.check); },
          [&](const CheckDelete& x) { return deleteCheck(x.node, x.id, x.index); },
          [&](const KvPut& x) { return putKv(x.entry); },
          [&](const KvDelete& x) { return deleteKv(x.key, x.index); },
      },
      m);
}

Mutation Catalog::putNode(const NodePtr& n) {
  const std::string f = foldName(n->name);
  auto it = nodes_.find(f);
  NodePtr prev;
  if (it != nodes_.end()) {
    prev = it->second.node;
    if (!prev->id.empty())
      node_ids_.erase(foldName(prev->id));
    it->second.node = n;
  } else {
    nodes_[f].node = n;
  }
  if (!n->id.empty())
    node_ids_[foldName(n->id)] = f;
  if (prev)
    return NodePut{prev};
  return NodeDelete{n->name, 0};
}

Mutation Catalog::deleteNode(const std::string& name, uint64_t index) {
  auto it = nodes_.find(foldName(name));
  assert(it != nodes_.end());
  assert(it->second.services.empty() && it->second.node_checks.empty());
  NodePtr prev = it->second.node;
  if (!prev->id.empty())
    node_ids_.erase(foldName(prev->id));
  nodes_.erase(it);
  return NodePut{prev};
}

void Catalog::addTags(NameRecord& rec, const Service& s, Effects* fx) {
  for (const auto& t : distinctTags(s))
    if (++rec.tags[t] == 1 && fx)
      fx->services_list_changed = true;
}

void Catalog::removeTags(NameRecord& rec, const Service& s, Effects* fx) {
  for (const auto& t : distinctTags(s)) {
    auto it = rec.tags.find(t);
    if (it == rec.tags.end())
      continue;
    if (--it->second == 0) {
      rec.tags.erase(it);
      if (fx)
        fx->services_list_changed = true;
    }
  }
}

Mutation Catalog::putService(const ServicePtr& s, Effects* fx) {
  const std::string nf = foldName(s->node);
  NodeRecord& rec = nodes_.at(nf);
  const std::string idf = foldName(s->id);
  std::string key = nf;
  key.push_back('\0');
  key += idf;
  const std::string name_new = foldName(s->name);
  auto [sit, inserted] = rec.services.try_emplace(idf);
  ServicePtr prev = sit->second.service;
  sit->second.service = s;

  if (prev && foldName(prev->name) == name_new) {
    // Same name: only the tags that differ move, so a port change leaves the list alone.
    NameRecord& nr = names_.at(name_new);
    if (prev->tags != s->tags) {
      auto old_tags = distinctTags(*prev);
      auto new_tags = distinctTags(*s);
      for (const auto& t : old_tags)
        if (!new_tags.count(t)) {
          auto it = nr.tags.find(t);
          if (it != nr.tags.end() && --it->second == 0) {
            nr.tags.erase(it);
            if (fx)
              fx->services_list_changed = true;
          }
        }
      for (const auto& t : new_tags)
        if (!old_tags.count(t) && ++nr.tags[t] == 1 && fx)
          fx->services_list_changed = true;
    }
    if (nr.display != s->name) {
      nr.display = s->name;
      if (fx)
        fx->services_list_changed = true;
    }
  } else {
    if (prev) {
      const std::string name_old = foldName(prev->name);
      NameRecord& old = names_.at(name_old);
      removeTags(old, *prev, fx);
      old.instances.erase(key);
      if (old.instances.empty()) {
        names_.erase(name_old);
        if (fx)
          fx->services_list_changed = true;
      }
    }
    auto [nit, new_name] = names_.try_emplace(name_new);
    if (new_name && fx)
      fx->services_list_changed = true;
    nit->second.instances.emplace(std::move(key), InstanceRef{&rec, &sit->second});
    addTags(nit->second, *s, fx);
    nit->second.display = s->name;
  }
  if (inserted) {
    ++service_count_;
    return ServiceDelete{s->node, s->id, 0};
  }
  return ServicePut{prev};
}

Mutation Catalog::deleteService(const std::string& node, const std::string& id, uint64_t index,
                                Effects* fx) {
  const std::string nf = foldName(node);
  NodeRecord& rec = nodes_.at(nf);
  auto sit = rec.services.find(foldName(id));
  assert(sit != rec.services.end());
  assert(sit->second.checks.empty());
  ServicePtr prev = sit->second.service;
  const std::string name = foldName(prev->name);
  NameRecord& nr = names_.at(name);
  removeTags(nr, *prev, fx);
  std::string key = nf;
  key.push_back('\0');
  key += sit->first;
  nr.instances.erase(key);
  if (nr.instances.empty()) {
    names_.erase(name);
    if (fx)
      fx->services_list_changed = true;
  }
  rec.services.erase(sit);
  --service_count_;
  return ServicePut{prev};
}

Mutation Catalog::putCheck(const CheckPtr& c) {
  const std::string nf = foldName(c->node);
  NodeRecord& rec = nodes_.at(nf);
  const std::string cf = foldName(c->id);
  const std::string sf = foldName(c->service_id);
  CheckPtr prev;
  auto oit = rec.check_owner.find(cf);
  if (oit != rec.check_owner.end()) {
    auto& old_container =
        oit->second.empty() ? rec.node_checks : rec.services.at(oit->second).checks;
    auto pit = old_container.find(cf);
    prev = pit->second;
    old_container.erase(pit);
    checks_by_state_[stateSlot(prev->status)].erase(CheckKey{nf, cf});
    oit->second = sf;
  } else {
    rec.check_owner.emplace(cf, sf);
    ++check_count_;
  }
  auto& container = sf.empty() ? rec.node_checks : rec.services.at(sf).checks;
  container[cf] = c;
  checks_by_state_[stateSlot(c->status)][CheckKey{nf, cf}] = c;
  if (prev)
    return CheckPut{prev};
  return CheckDelete{c->node, c->id, 0};
}

Mutation Catalog::deleteCheck(const std::string& node, const std::string& id, uint64_t index) {
  const std::string nf = foldName(node);
  NodeRecord& rec = nodes_.at(nf);
  const std::string cf = foldName(id);
  auto oit = rec.check_owner.find(cf);
  assert(oit != rec.check_owner.end());
  auto& container = oit->second.empty() ? rec.node_checks : rec.services.at(oit->second).checks;
  auto pit = container.find(cf);
  CheckPtr prev = pit->second;
  container.erase(pit);
  rec.check_owner.erase(oit);
  checks_by_state_[stateSlot(prev->status)].erase(CheckKey{nf, cf});
  --check_count_;
  return CheckPut{prev};
}

Mutation Catalog::putKv(const KvPtr& e) {
  auto [it, inserted] = kv_.try_emplace(e->key, e);
  if (inserted)
    return KvDelete{e->key, 0, std::nullopt};
  KvPtr prev = std::move(it->second);
  it->second = e;
  return KvPut{prev, std::nullopt};
}

Mutation Catalog::deleteKv(const std::string& key, uint64_t index) {
  auto it = kv_.find(key);
  assert(it != kv_.end());
  KvPtr prev = std::move(it->second);
  kv_.erase(it);
  return KvPut{prev, std::nullopt};
}

// ---------------------------------------------------------------------------------------------
// Lookups

const Catalog::NodeRecord* Catalog::findNode(std::string_view name) const {
  auto it = nodes_.find(foldName(name));
  return it == nodes_.end() ? nullptr : &it->second;
}

const Catalog::ServiceSlot* Catalog::findSlot(std::string_view node, std::string_view id) const {
  const NodeRecord* rec = findNode(node);
  if (rec == nullptr)
    return nullptr;
  auto it = rec->services.find(foldName(id));
  return it == rec->services.end() ? nullptr : &it->second;
}

CheckPtr Catalog::findCheck(const NodeRecord& rec, const std::string& folded_id) const {
  auto oit = rec.check_owner.find(folded_id);
  if (oit == rec.check_owner.end())
    return nullptr;
  const auto& container =
      oit->second.empty() ? rec.node_checks : rec.services.at(oit->second).checks;
  return container.at(folded_id);
}

std::vector<CheckPtr> Catalog::checksOf(const NodeRecord& rec) const {
  std::vector<CheckPtr> out;
  out.reserve(rec.check_owner.size());
  for (const auto& [id, c] : rec.node_checks)
    out.push_back(c);
  for (const auto& [sid, slot] : rec.services)
    for (const auto& [id, c] : slot.checks)
      out.push_back(c);
  std::sort(out.begin(), out.end(),
            [](const CheckPtr& a, const CheckPtr& b) { return foldName(a->id) < foldName(b->id); });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Evaluation

Status Catalog::evaluate(const WriteRequest& req, Txn& txn) {
  return std::visit(
      Overloaded{
          [&](const RegisterRequest& r) { return evalRegister(r, txn); },
          [&](const DeregisterRequest& r) { return evalDeregister(r, txn); },
          [&](const AgentServiceRequest& r) { return evalAgentService(r, txn); },
          [&](const AgentServiceDeregister& r) { return evalAgentServiceDeregister(r, txn); },
          [&](const AgentCheckRequest& r) { return evalAgentCheck(r, txn); },
          [&](const AgentCheckDeregister& r) { return evalAgentCheckDeregister(r, txn); },
          [&](const CheckUpdateRequest& r) { return evalCheckUpdate(r, txn); },
          [&](const KvPutRequest& r) { return evalKvPut(r, txn); },
          [&](const KvDeleteRequest& r) { return evalKvDelete(r, txn); },
      },
      req);
}

Status Catalog::putServiceIn(Service s, Txn& txn, bool* renamed) {
  const Limits& l = settings_.limits;
  if (s.id.empty())
    s.id = s.name;
  TRELLIS_RETURN_IF_ERROR(validateService(s, l));
  const ServiceSlot* slot = findSlot(s.node, s.id);
  if (slot == nullptr && service_count_ >= l.max_services)
    return makeError(ErrorCode::kResourceExhausted, "registry limit max_services ({}) reached",
                     l.max_services);
  s.create_index = slot ? slot->service->create_index : txn.index();
  s.modify_index = txn.index();
  *renamed = slot && slot->service->name != s.name;
  if (slot && sameContent(*slot->service, s))
    return okStatus();
  std::vector<CheckPtr> checks;
  if (*renamed)
    for (const auto& [id, c] : slot->checks)
      checks.push_back(c);
  txn.emit(ServicePut{std::make_shared<const Service>(std::move(s))});
  // Checks carry their service's name; a rename rewrites them at the same index.
  for (const auto& c : checks) {
    auto copy = std::make_shared<Check>(*c);
    const ServiceSlot* now = findSlot(copy->node, copy->service_id);
    copy->service_name = now->service->name;
    copy->modify_index = txn.index();
    txn.emit(CheckPut{std::move(copy)});
  }
  return okStatus();
}

Status Catalog::putCheckIn(Check c, Txn& txn, bool keep_status) {
  const Limits& l = settings_.limits;
  const NodeRecord* rec = findNode(c.node);
  if (rec == nullptr)
    return makeError(ErrorCode::kNotFound, "Check \"{}\": node \"{}\" is not registered", c.id,
                     c.node);
  c.node = rec->node->name;
  if (!c.service_id.empty()) {
    auto sit = rec->services.find(foldName(c.service_id));
    if (sit == rec->services.end())
      return makeError(ErrorCode::kNotFound,
                       "Check \"{}\": service \"{}\" is not registered on node \"{}\"", c.id,
                       c.service_id, c.node);
    c.service_id = sit->second.service->id;
    c.service_name = sit->second.service->name;
  } else {
    c.service_name.clear();
  }
  TRELLIS_RETURN_IF_ERROR(validateCheck(c, l));
  truncateOutput(c.output, l.max_check_output);
  CheckPtr existing = findCheck(*rec, foldName(c.id));
  if (!existing && check_count_ >= l.max_checks)
    return makeError(ErrorCode::kResourceExhausted, "registry limit max_checks ({}) reached",
                     l.max_checks);
  if (existing && keep_status) {
    c.status = existing->status;
    c.output = existing->output;
  }
  c.create_index = existing ? existing->create_index : txn.index();
  c.modify_index = txn.index();
  if (existing && sameContent(*existing, c))
    return okStatus();
  txn.emit(CheckPut{std::make_shared<const Check>(std::move(c))});
  return okStatus();
}

void Catalog::deleteServiceIn(const NodeRecord& rec, const ServiceSlot& slot, Txn& txn) {
  // Copy what to delete first: emitting changes the containers being read.
  const std::string node = rec.node->name;
  const std::string id = slot.service->id;
  std::vector<std::string> checks;
  for (const auto& [cf, c] : slot.checks)
    checks.push_back(c->id);
  for (const auto& c : checks)
    txn.emit(CheckDelete{node, c, txn.index()});
  txn.emit(ServiceDelete{node, id, txn.index()});
}

void Catalog::deleteNodeIn(const NodeRecord& rec, Txn& txn) {
  const std::string node = rec.node->name;
  std::vector<std::string> node_checks;
  for (const auto& [cf, c] : rec.node_checks)
    node_checks.push_back(c->id);
  std::vector<std::string> services;
  for (const auto& [sf, slot] : rec.services)
    services.push_back(slot.service->id);
  for (const auto& c : node_checks)
    txn.emit(CheckDelete{node, c, txn.index()});
  for (const auto& s : services)
    deleteServiceIn(*findNode(node), *findSlot(node, s), txn);
  txn.emit(NodeDelete{node, txn.index()});
}

Status Catalog::evalRegister(const RegisterRequest& r, Txn& txn) {
  const Limits& l = settings_.limits;
  TRELLIS_RETURN_IF_ERROR(validateNode(r.node, l));
  const std::string nf = foldName(r.node.name);
  const NodeRecord* rec = findNode(nf);
  if (rec == nullptr || !r.skip_node_update) {
    if (r.node.address.empty())
      return makeError(ErrorCode::kInvalidArgument,
                       "Address: missing (required unless SkipNodeUpdate is set for a node "
                       "that exists)");
    if (!r.node.id.empty()) {
      auto it = node_ids_.find(foldName(r.node.id));
      if (it != node_ids_.end() && it->second != nf)
        return makeError(ErrorCode::kAlreadyExists,
                         "Node ID \"{}\" is already used by node "
                         "\"{}\"",
                         r.node.id, nodes_.at(it->second).node->name);
    }
    if (rec == nullptr && nodes_.size() >= l.max_nodes)
      return makeError(ErrorCode::kResourceExhausted, "registry limit max_nodes ({}) reached",
                       l.max_nodes);
    Node n = r.node;
    n.create_index = rec ? rec->node->create_index : txn.index();
    n.modify_index = txn.index();
    if (!(rec && sameContent(*rec->node, n)))
      txn.emit(NodePut{std::make_shared<const Node>(std::move(n))});
  }
  const std::string node_name = findNode(nf)->node->name;

  if (r.service) {
    Service s = *r.service;
    s.node = node_name;
    bool renamed = false;
    TRELLIS_RETURN_IF_ERROR(putServiceIn(std::move(s), txn, &renamed));
  }
  if (r.checks.size() > l.max_checks_per_registration)
    return makeError(ErrorCode::kInvalidArgument, "Checks: {} checks, the limit is {}",
                     r.checks.size(), l.max_checks_per_registration);
  for (const Check& in : r.checks) {
    Check c = in;
    if (c.node.empty())
      c.node = node_name;
    else if (foldName(c.node) != nf)
      return makeError(ErrorCode::kInvalidArgument,
                       "Check \"{}\": Node \"{}\" does not match the registered Node \"{}\"", c.id,
                       c.node, node_name);
    if (c.id.empty())
      c.id = c.name;
    TRELLIS_RETURN_IF_ERROR(putCheckIn(std::move(c), txn, false));
  }
  return okStatus();
}

Status Catalog::evalDeregister(const DeregisterRequest& r, Txn& txn) {
  if (r.node.empty())
    return makeError(ErrorCode::kInvalidArgument, "Node: missing");
  const NodeRecord* rec = findNode(r.node);
  if (rec == nullptr)
    return okStatus();
  if (r.service_id.empty() && r.check_id.empty()) {
    deleteNodeIn(*rec, txn);
    return okStatus();
  }
  if (!r.check_id.empty()) {
    if (CheckPtr c = findCheck(*rec, foldName(r.check_id)))
      txn.emit(CheckDelete{c->node, c->id, txn.index()});
  }
  if (!r.service_id.empty()) {
    if (const ServiceSlot* slot = findSlot(r.node, r.service_id))
      deleteServiceIn(*findNode(r.node), *slot, txn);
  }
  return okStatus();
}

Status Catalog::evalAgentService(const AgentServiceRequest& r, Txn& txn) {
  const Limits& l = settings_.limits;
  const NodeRecord* rec = findNode(r.node);
  if (rec == nullptr)
    return makeError(ErrorCode::kNotFound, "node \"{}\" is not registered", r.node);
  const std::string node_name = rec->node->name;
  if (r.checks.size() > l.max_checks_per_registration)
    return makeError(ErrorCode::kInvalidArgument, "Checks: {} checks, the limit is {}",
                     r.checks.size(), l.max_checks_per_registration);
  Service s = r.service;
  s.node = node_name;
  if (s.id.empty())
    s.id = s.name;
  const std::string service_id = s.id;
  const std::string service_name = s.name;
  bool renamed = false;
  TRELLIS_RETURN_IF_ERROR(putServiceIn(std::move(s), txn, &renamed));

  std::unordered_set<std::string> listed;
  for (size_t i = 0; i < r.checks.size(); ++i) {
    Check c = r.checks[i];
    c.node = node_name;
    c.service_id = service_id;
    if (c.id.empty())
      c.id = r.checks.size() == 1 ? fmt::format("service:{}", service_id)
                                  : fmt::format("service:{}:{}", service_id, i + 1);
    if (c.name.empty())
      c.name = fmt::format("Service '{}' check", service_name);
    if (!listed.insert(foldName(c.id)).second)
      return makeError(ErrorCode::kInvalidArgument, "Checks: CheckID \"{}\" appears twice", c.id);
    // Status is the initial status: a check that exists keeps the one it has.
    TRELLIS_RETURN_IF_ERROR(putCheckIn(std::move(c), txn, true));
  }
  // The registration is the whole definition: drop the service's checks it no longer lists.
  std::vector<std::string> stale;
  for (const auto& [cf, c] : findSlot(node_name, service_id)->checks)
    if (!listed.count(cf))
      stale.push_back(c->id);
  for (const auto& id : stale)
    txn.emit(CheckDelete{node_name, id, txn.index()});
  return okStatus();
}

Status Catalog::evalAgentServiceDeregister(const AgentServiceDeregister& r, Txn& txn) {
  const ServiceSlot* slot = findSlot(r.node, r.service_id);
  if (slot == nullptr)
    return makeError(ErrorCode::kNotFound, "Unknown service ID \"{}\"", r.service_id);
  deleteServiceIn(*findNode(r.node), *slot, txn);
  return okStatus();
}

Status Catalog::evalAgentCheck(const AgentCheckRequest& r, Txn& txn) {
  Check c = r.check;
  c.node = r.node;
  if (c.id.empty())
    c.id = c.name;
  return putCheckIn(std::move(c), txn, true);
}

Status Catalog::evalAgentCheckDeregister(const AgentCheckDeregister& r, Txn& txn) {
  const NodeRecord* rec = findNode(r.node);
  CheckPtr c = rec ? findCheck(*rec, foldName(r.check_id)) : nullptr;
  if (!c)
    return makeError(ErrorCode::kNotFound, "Unknown check ID \"{}\"", r.check_id);
  txn.emit(CheckDelete{c->node, c->id, txn.index()});
  return okStatus();
}

Status Catalog::evalCheckUpdate(const CheckUpdateRequest& r, Txn& txn) {
  const NodeRecord* rec = findNode(r.node);
  CheckPtr existing = rec ? findCheck(*rec, foldName(r.check_id)) : nullptr;
  if (!existing)
    return makeError(ErrorCode::kNotFound, "Unknown check ID \"{}\" on node \"{}\"", r.check_id,
                     r.node);
  Check c = *existing;
  c.status = r.status;
  c.output = r.output;
  truncateOutput(c.output, settings_.limits.max_check_output);
  if (sameContent(*existing, c))
    return okStatus();
  c.modify_index = txn.index();
  txn.emit(CheckPut{std::make_shared<const Check>(std::move(c))});
  return okStatus();
}

Status Catalog::evalKvPut(const KvPutRequest& r, Txn& txn) {
  const Limits& l = settings_.limits;
  auto e = std::make_shared<KvEntry>();
  e->key = r.key;
  e->value = r.value;
  e->flags = r.flags;
  TRELLIS_RETURN_IF_ERROR(validateKvEntry(*e, l));
  auto it = kv_.find(r.key);
  const KvEntry* existing = it == kv_.end() ? nullptr : it->second.get();
  if (r.cas) {
    if (*r.cas == 0 && existing)
      return makeError(ErrorCode::kFailedPrecondition,
                       "CAS failed: key \"{}\" already exists (cas=0 only creates)", r.key);
    if (*r.cas != 0 && !existing)
      return makeError(ErrorCode::kFailedPrecondition, "CAS failed: key \"{}\" does not exist",
                       r.key);
    if (*r.cas != 0 && existing->modify_index != *r.cas)
      return makeError(ErrorCode::kFailedPrecondition,
                       "CAS failed: key \"{}\" has ModifyIndex {}, not {}", r.key,
                       existing->modify_index, *r.cas);
  }
  if (!existing && kv_.size() >= l.max_kv_entries)
    return makeError(ErrorCode::kResourceExhausted, "registry limit max_kv_entries ({}) reached",
                     l.max_kv_entries);
  e->create_index = existing ? existing->create_index : txn.index();
  e->modify_index = txn.index();
  if (existing) {
    e->lock_index = existing->lock_index;
    e->session = existing->session;
  }
  txn.emit(KvPut{std::move(e), r.cas});
  return okStatus();
}

Status Catalog::evalKvDelete(const KvDeleteRequest& r, Txn& txn) {
  if (r.recurse) {
    if (r.cas)
      return makeError(ErrorCode::kInvalidArgument, "cas cannot be combined with recurse");
    if (r.key.size() > settings_.limits.max_kv_key_length)
      return validateKvKey(r.key, settings_.limits);
    std::vector<std::string> keys;
    for (auto it = kv_.lower_bound(r.key); it != kv_.end() && startsWith(it->first, r.key); ++it)
      keys.push_back(it->first);
    for (auto& k : keys)
      txn.emit(KvDelete{std::move(k), txn.index(), std::nullopt});
    return okStatus();
  }
  TRELLIS_RETURN_IF_ERROR(validateKvKey(r.key, settings_.limits));
  auto it = kv_.find(r.key);
  if (it == kv_.end())
    return okStatus(); // as Consul: deleting a missing key (even with cas) succeeds
  if (r.cas && it->second->modify_index != *r.cas)
    return makeError(ErrorCode::kFailedPrecondition,
                     "CAS failed: key \"{}\" has ModifyIndex {}, not {}", r.key,
                     it->second->modify_index, *r.cas);
  txn.emit(KvDelete{r.key, txn.index(), r.cas});
  return okStatus();
}

// ---------------------------------------------------------------------------------------------
// prepare / commit / apply / restore

PreparedBatch Catalog::prepare(const std::vector<const WriteRequest*>& reqs) {
  PreparedBatch out;
  out.batch.base_revision = index_;
  uint64_t next = index_ + 1;
  Txn txn(*this, next);
  out.results.reserve(reqs.size());
  for (const WriteRequest* req : reqs) {
    const size_t mark = txn.mark();
    txn.setIndex(next);
    Status st = evaluate(*req, txn);
    if (!st.ok()) {
      txn.rollbackTo(mark);
      out.results.emplace_back(st.error());
    } else if (txn.mark() > mark) {
      out.results.emplace_back(WriteResult{next, true});
      ++next;
    } else {
      out.results.emplace_back(WriteResult{std::max<uint64_t>(next - 1, 1), false});
    }
  }
  out.batch.mutations = txn.finish();
  out.batch.revision = next - 1;
  return out;
}

Result<WriteResult> Catalog::apply(const WriteRequest& req) {
  if (in_callbacks_)
    return makeError(ErrorCode::kFailedPrecondition,
                     "Catalog::apply called from a watch or observer callback; submit the "
                     "write instead");
  PreparedBatch p = prepare({&req});
  if (!p.batch.mutations.empty())
    commit(p.batch);
  return std::move(p.results.front());
}

void Catalog::touch(ScopeKind kind, const std::string& name, uint64_t index) {
  switch (kind) {
  case ScopeKind::kNodes:
    nodes_index_ = index;
    break;
  case ScopeKind::kNode:
    node_index_[name] = index;
    break;
  case ScopeKind::kServices:
    services_index_ = index;
    break;
  case ScopeKind::kService:
    service_index_[name] = index;
    break;
  case ScopeKind::kChecksInState:
    if (name == "any")
      state_index_[kAnyState] = index;
    else if (auto s = parseCheckStatus(name); s.ok())
      state_index_[stateSlot(*s)] = index;
    break;
  default:
    break;
  }
  watches_->touch(kind, name);
}

void Catalog::touchServicesOfNode(const std::string& node, uint64_t index) {
  auto it = nodes_.find(node);
  if (it == nodes_.end())
    return;
  for (const auto& [sf, slot] : it->second.services)
    touch(ScopeKind::kService, foldName(slot.service->name), index);
}

void Catalog::touchCheckOwner(const std::string& node, const std::string& service_id,
                              uint64_t index) {
  if (service_id.empty()) {
    // A node check gates every instance on the node.
    touchServicesOfNode(node, index);
    return;
  }
  if (const ServiceSlot* slot = findSlot(node, service_id))
    touch(ScopeKind::kService, foldName(slot->service->name), index);
}

void Catalog::addTombstone(const std::string& key, uint64_t index) {
  kv_tombstones_[key] = index;
  tombstone_order_.emplace_back(index, key);
  while (kv_tombstones_.size() > settings_.max_kv_tombstones && !tombstone_order_.empty()) {
    auto [idx, k] = std::move(tombstone_order_.front());
    tombstone_order_.pop_front();
    auto it = kv_tombstones_.find(k);
    if (it != kv_tombstones_.end() && it->second == idx) {
      kv_tombstones_.erase(it);
      kv_reaped_floor_ = std::max(kv_reaped_floor_, idx);
    }
  }
  // Stale order entries (key re-created or deleted again) are dropped once they dominate.
  if (tombstone_order_.size() > 2 * settings_.max_kv_tombstones + 16) {
    std::deque<std::pair<uint64_t, std::string>> fresh;
    for (auto& [idx, k] : tombstone_order_) {
      auto it = kv_tombstones_.find(k);
      if (it != kv_tombstones_.end() && it->second == idx)
        fresh.emplace_back(idx, std::move(k));
    }
    tombstone_order_ = std::move(fresh);
  }
}

void Catalog::touchBefore(const Mutation& m, uint64_t idx) {
  // Marks the scopes a mutation touches as seen in the state before it is applied.
  std::visit(
      Overloaded{
          [&](const NodePut& x) {
            const std::string nf = foldName(x.node->name);
            touch(ScopeKind::kNodes, "", idx);
            touch(ScopeKind::kNode, nf, idx);
            touchServicesOfNode(nf, idx);
          },
          [&](const NodeDelete& x) {
            touch(ScopeKind::kNodes, "", idx);
            touch(ScopeKind::kNode, foldName(x.node), idx);
          },
          [&](const ServicePut& x) {
            if (const ServiceSlot* old = findSlot(x.service->node, x.service->id))
              touch(ScopeKind::kService, foldName(old->service->name), idx);
            touch(ScopeKind::kService, foldName(x.service->name), idx);
            touch(ScopeKind::kNode, foldName(x.service->node), idx);
          },
          [&](const ServiceDelete& x) {
            if (const ServiceSlot* old = findSlot(x.node, x.id))
              touch(ScopeKind::kService, foldName(old->service->name), idx);
            touch(ScopeKind::kNode, foldName(x.node), idx);
          },
          [&](const CheckPut& x) {
            const std::string nf = foldName(x.check->node);
            if (const NodeRecord* rec = findNode(nf)) {
              if (CheckPtr old = findCheck(*rec, foldName(x.check->id))) {
                touch(ScopeKind::kChecksInState, std::string(checkStatusName(old->status)), idx);
                touchCheckOwner(nf, old->service_id, idx);
              }
            }
            touch(ScopeKind::kChecksInState, std::string(checkStatusName(x.check->status)), idx);
            touch(ScopeKind::kChecksInState, "any", idx);
            touch(ScopeKind::kNode, nf, idx);
            touchCheckOwner(nf, x.check->service_id, idx);
          },
          [&](const CheckDelete& x) {
            const std::string nf = foldName(x.node);
            if (const NodeRecord* rec = findNode(nf)) {
              if (CheckPtr old = findCheck(*rec, foldName(x.id))) {
                touch(ScopeKind::kChecksInState, std::string(checkStatusName(old->status)), idx);
                touchCheckOwner(nf, old->service_id, idx);
              }
            }
            touch(ScopeKind::kChecksInState, "any", idx);
            touch(ScopeKind::kNode, nf, idx);
          },
          [&](const KvPut& x) { watches_->touchKv(x.entry->key); },
          [&](const KvDelete& x) { watches_->touchKv(x.key); },
      },
      m);
  watches_->touch(ScopeKind::kAll, "");
}

void Catalog::touchAfter(const Mutation& m, uint64_t idx, const Effects& fx) {
  if (fx.services_list_changed)
    touch(ScopeKind::kServices, "", idx);
  std::visit(Overloaded{
                 [&](const NodeDelete& x) { node_index_.erase(foldName(x.node)); },
                 [&](const ServicePut&) {},
                 [&](const KvPut& x) { kv_tombstones_.erase(x.entry->key); },
                 [&](const KvDelete& x) { addTombstone(x.key, idx); },
                 [&](const auto&) {},
             },
             m);
}

void Catalog::commit(const Batch& batch) {
  if (batch.base_revision != index_) {
    // A broken caller, not bad input: the batch was prepared against another state.
    TLOG_ERROR("registry: commit of batch based on index {} onto index {}; ignored",
               batch.base_revision, index_);
    assert(false && "batch prepared against another state");
    return;
  }
  watches_->beginRound();
  for (const Mutation& m : batch.mutations) {
    const uint64_t idx = mutationIndex(m);
    // Names whose index entry must go once the mutation leaves them without instances.
    std::string service_name;
    if (const auto* d = std::get_if<ServiceDelete>(&m))
      if (const ServiceSlot* s = findSlot(d->node, d->id))
        service_name = foldName(s->service->name);
    if (const auto* p = std::get_if<ServicePut>(&m))
      if (const ServiceSlot* s = findSlot(p->service->node, p->service->id))
        service_name = foldName(s->service->name);
    touchBefore(m, idx);
    Effects fx;
    applyPrimitive(m, &fx);
    touchAfter(m, idx, fx);
    if (!service_name.empty() && names_.count(service_name) == 0)
      service_index_.erase(service_name);
  }
  index_ = std::max(index_, batch.revision);

  in_callbacks_ = true;
  auto observers = observers_;
  for (CatalogObserver* o : observers)
    if (std::find(observers_.begin(), observers_.end(), o) != observers_.end())
      o->onApplied(batch);
  watches_->fire();
  in_callbacks_ = false;
}

Status Catalog::restore(const StoreSnapshot& snap) {
  if (index_ != 0 || !nodes_.empty() || !kv_.empty())
    return makeError(ErrorCode::kFailedPrecondition, "restore needs an empty catalog");
  auto fail = [&](Error e) -> Status {
    clearState();
    return e;
  };
  auto checkIndex = [&](std::string_view what, std::string_view name, uint64_t modify) -> Status {
    if (modify > snap.revision)
      return makeError(ErrorCode::kInternal,
                       "store is inconsistent: {} \"{}\" has ModifyIndex {} past the store "
                       "revision {}",
                       what, name, modify, snap.revision);
    return okStatus();
  };
  for (const auto& n : snap.nodes) {
    if (n->name.empty() || findNode(n->name))
      return fail(makeError(ErrorCode::kInternal,
                            "store is inconsistent: node \"{}\" is empty "
                            "or duplicated",
                            n->name));
    if (auto st = checkIndex("node", n->name, n->modify_index); !st.ok())
      return fail(st.error());
    putNode(n);
  }
  for (const auto& s : snap.services) {
    if (!findNode(s->node) || s->id.empty() || findSlot(s->node, s->id))
      return fail(makeError(ErrorCode::kInternal,
                            "store is inconsistent: service \"{}\" on node \"{}\" has no node, "
                            "no ID, or is duplicated",
                            s->id, s->node));
    if (auto st = checkIndex("service", s->id, s->modify_index); !st.ok())
      return fail(st.error());
    putService(s, nullptr);
  }
  for (const auto& c : snap.checks) {
    const NodeRecord* rec = findNode(c->node);
    if (!rec || c->id.empty() || findCheck(*rec, foldName(c->id)) ||
        (!c->service_id.empty() && !findSlot(c->node, c->service_id)))
      return fail(makeError(ErrorCode::kInternal,
                            "store is inconsistent: check \"{}\" on node \"{}\" has no node or "
                            "service, no ID, or is duplicated",
                            c->id, c->node));
    if (auto st = checkIndex("check", c->id, c->modify_index); !st.ok())
      return fail(st.error());
    putCheck(c);
  }
  for (const auto& e : snap.kv) {
    if (e->key.empty() || kv_.count(e->key))
      return fail(makeError(ErrorCode::kInternal,
                            "store is inconsistent: KV key \"{}\" is empty "
                            "or duplicated",
                            e->key));
    if (auto st = checkIndex("KV key", e->key, e->modify_index); !st.ok())
      return fail(st.error());
    putKv(e);
  }
  index_ = snap.revision;
  floor_ = snap.revision;
  return okStatus();
}

void Catalog::clearState() {
  nodes_.clear();
  node_ids_.clear();
  names_.clear();
  for (auto& m : checks_by_state_)
    m.clear();
  service_count_ = 0;
  check_count_ = 0;
  kv_.clear();
  index_ = 0;
  floor_ = 0;
}

// ---------------------------------------------------------------------------------------------
// Reads

uint64_t Catalog::withFloor(uint64_t index) const {
  return std::max<uint64_t>({index, floor_, 1});
}

uint64_t Catalog::kvKeyIndex(std::string_view key) const {
  uint64_t idx = kv_reaped_floor_;
  if (auto it = kv_.find(key); it != kv_.end())
    idx = std::max(idx, it->second->modify_index);
  else if (auto t = kv_tombstones_.find(key); t != kv_tombstones_.end())
    idx = std::max(idx, t->second);
  return withFloor(idx);
}

uint64_t Catalog::kvPrefixIndex(std::string_view prefix) const {
  uint64_t idx = kv_reaped_floor_;
  for (auto it = kv_.lower_bound(prefix); it != kv_.end() && startsWith(it->first, prefix); ++it)
    idx = std::max(idx, it->second->modify_index);
  for (auto it = kv_tombstones_.lower_bound(prefix);
       it != kv_tombstones_.end() && startsWith(it->first, prefix); ++it)
    idx = std::max(idx, it->second);
  return withFloor(idx);
}

uint64_t Catalog::scopeIndex(const WatchScope& scope) const {
  switch (scope.kind()) {
  case ScopeKind::kAll:
    return withFloor(index_);
  case ScopeKind::kNodes:
    return withFloor(nodes_index_);
  case ScopeKind::kNode: {
    auto it = node_index_.find(scope.name());
    return withFloor(it != node_index_.end() ? it->second : nodes_index_);
  }
  case ScopeKind::kServices:
    return withFloor(services_index_);
  case ScopeKind::kService: {
    auto it = service_index_.find(scope.name());
    return withFloor(it != service_index_.end() ? it->second : services_index_);
  }
  case ScopeKind::kChecksInState: {
    if (scope.name() == "any")
      return withFloor(state_index_[kAnyState]);
    auto s = parseCheckStatus(scope.name());
    return withFloor(s.ok() ? state_index_[stateSlot(*s)] : state_index_[kAnyState]);
  }
  case ScopeKind::kKvKey:
    return kvKeyIndex(scope.name());
  case ScopeKind::kKvPrefix:
    return kvPrefixIndex(scope.name());
  }
  return withFloor(index_);
}

namespace {
bool metaMatches(const Node& n, const std::map<std::string, std::string>& want) {
  for (const auto& [k, v] : want) {
    auto it = n.meta.find(k);
    if (it == n.meta.end() || it->second != v)
      return false;
  }
  return true;
}
} // namespace

Indexed<std::vector<NodePtr>>
Catalog::nodes(const std::map<std::string, std::string>& node_meta) const {
  Indexed<std::vector<NodePtr>> out;
  out.index = scopeIndex(WatchScope::nodes());
  out.value.reserve(nodes_.size());
  for (const auto& [f, rec] : nodes_)
    if (metaMatches(*rec.node, node_meta))
      out.value.push_back(rec.node);
  return out;
}

NodePtr Catalog::node(std::string_view name) const {
  const NodeRecord* rec = findNode(name);
  return rec ? rec->node : nullptr;
}

Indexed<std::optional<NodeServices>> Catalog::nodeServices(std::string_view node) const {
  Indexed<std::optional<NodeServices>> out;
  out.index = scopeIndex(WatchScope::node(node));
  if (const NodeRecord* rec = findNode(node)) {
    NodeServices ns;
    ns.node = rec->node;
    for (const auto& [sf, slot] : rec->services)
      ns.services.push_back(slot.service);
    out.value = std::move(ns);
  }
  return out;
}

Indexed<std::vector<CheckPtr>> Catalog::nodeChecks(std::string_view node) const {
  Indexed<std::vector<CheckPtr>> out;
  out.index = scopeIndex(WatchScope::node(node));
  if (const NodeRecord* rec = findNode(node))
    out.value = checksOf(*rec);
  return out;
}

Indexed<std::map<std::string, std::vector<std::string>>>
Catalog::services(const std::map<std::string, std::string>& node_meta) const {
  Indexed<std::map<std::string, std::vector<std::string>>> out;
  out.index = scopeIndex(WatchScope::services());
  for (const auto& [f, rec] : names_) {
    if (node_meta.empty()) {
      auto& tags = out.value[rec.display];
      for (const auto& [t, n] : rec.tags)
        tags.push_back(t);
      continue;
    }
    std::set<std::string> tags;
    bool any = false;
    for (const auto& [key, ref] : rec.instances) {
      if (!metaMatches(*ref.node->node, node_meta))
        continue;
      any = true;
      const auto& s = ref.slot->service;
      tags.insert(s->tags.begin(), s->tags.end());
    }
    if (any)
      out.value[rec.display] = std::vector<std::string>(tags.begin(), tags.end());
  }
  return out;
}

Indexed<std::vector<ServiceEntry>> Catalog::serviceInstances(std::string_view name,
                                                             const InstanceQuery& q) const {
  Indexed<std::vector<ServiceEntry>> out;
  const std::string f = foldName(name);
  out.index = scopeIndex(WatchScope::service(f));
  auto it = names_.find(f);
  if (it == names_.end())
    return out;
  for (const auto& [key, ref] : it->second.instances) {
    const NodeRecord& nr = *ref.node;
    const ServiceSlot& slot = *ref.slot;
    if (!metaMatches(*nr.node, q.node_meta))
      continue;
    bool tags_ok = true;
    for (const auto& want : q.tags) {
      bool found = false;
      for (const auto& t : slot.service->tags)
        if (equalsFold(t, want)) {
          found = true;
          break;
        }
      if (!found) {
        tags_ok = false;
        break;
      }
    }
    if (!tags_ok)
      continue;
    ServiceEntry e = entryOf(nr, slot);
    if (q.health != HealthFilter::kAny) {
      const CheckStatus worst = e.aggregateStatus();
      if (q.health == HealthFilter::kPassing && worst != CheckStatus::kPassing)
        continue;
      if (q.health == HealthFilter::kNotCritical && worst == CheckStatus::kCritical)
        continue;
    }
    out.value.push_back(std::move(e));
  }
  return out;
}

Indexed<std::vector<CheckPtr>> Catalog::serviceChecks(std::string_view name) const {
  Indexed<std::vector<CheckPtr>> out;
  const std::string f = foldName(name);
  out.index = scopeIndex(WatchScope::service(f));
  auto it = names_.find(f);
  if (it == names_.end())
    return out;
  for (const auto& [key, ref] : it->second.instances)
    for (const auto& [cf, c] : ref.slot->checks)
      out.value.push_back(c);
  return out;
}

Indexed<std::vector<CheckPtr>> Catalog::checksInState(std::optional<CheckStatus> state) const {
  Indexed<std::vector<CheckPtr>> out;
  out.index = scopeIndex(WatchScope::checksInState(state));
  if (state) {
    for (const auto& [k, c] : checks_by_state_[stateSlot(*state)])
      out.value.push_back(c);
    return out;
  }
  std::vector<std::pair<const CheckKey*, CheckPtr>> all;
  for (const auto& m : checks_by_state_)
    for (const auto& [k, c] : m)
      all.emplace_back(&k, c);
  std::sort(all.begin(), all.end(),
            [](const auto& a, const auto& b) { return *a.first < *b.first; });
  out.value.reserve(all.size());
  for (auto& [k, c] : all)
    out.value.push_back(std::move(c));
  return out;
}

ServicePtr Catalog::service(std::string_view node, std::string_view id) const {
  const ServiceSlot* slot = findSlot(node, id);
  return slot ? slot->service : nullptr;
}

ServiceEntry Catalog::entryOf(const NodeRecord& rec, const ServiceSlot& slot) {
  ServiceEntry e;
  e.node = rec.node;
  e.service = slot.service;
  e.checks.reserve(rec.node_checks.size() + slot.checks.size());
  for (const auto& [cf, c] : rec.node_checks)
    e.checks.push_back(c);
  for (const auto& [cf, c] : slot.checks)
    e.checks.push_back(c);
  return e;
}

std::optional<ServiceEntry> Catalog::instance(std::string_view node, std::string_view id) const {
  const NodeRecord* rec = findNode(node);
  if (rec == nullptr)
    return std::nullopt;
  auto it = rec->services.find(foldName(id));
  if (it == rec->services.end())
    return std::nullopt;
  return entryOf(*rec, it->second);
}

bool Catalog::hasInstances(std::string_view name) const {
  auto it = names_.find(foldName(name));
  return it != names_.end() && !it->second.instances.empty();
}

CheckPtr Catalog::check(std::string_view node, std::string_view id) const {
  const NodeRecord* rec = findNode(node);
  return rec ? findCheck(*rec, foldName(id)) : nullptr;
}

Indexed<KvPtr> Catalog::kvGet(std::string_view key) const {
  Indexed<KvPtr> out;
  out.index = kvKeyIndex(key);
  if (auto it = kv_.find(key); it != kv_.end())
    out.value = it->second;
  return out;
}

Indexed<std::vector<KvPtr>> Catalog::kvList(std::string_view prefix) const {
  Indexed<std::vector<KvPtr>> out;
  out.index = kvPrefixIndex(prefix);
  for (auto it = kv_.lower_bound(prefix); it != kv_.end() && startsWith(it->first, prefix); ++it)
    out.value.push_back(it->second);
  return out;
}

Indexed<std::vector<std::string>> Catalog::kvKeys(std::string_view prefix,
                                                  std::string_view separator) const {
  Indexed<std::vector<std::string>> out;
  out.index = kvPrefixIndex(prefix);
  auto it = kv_.lower_bound(prefix);
  while (it != kv_.end() && startsWith(it->first, prefix)) {
    const std::string& key = it->first;
    size_t pos = separator.empty() ? std::string::npos : key.find(separator, prefix.size());
    if (pos == std::string::npos) {
      out.value.push_back(key);
      ++it;
      continue;
    }
    // Every key under this "directory" folds into one entry; skip past all of them.
    std::string dir = key.substr(0, pos + separator.size());
    std::string next = prefixSuccessor(dir);
    out.value.push_back(std::move(dir));
    if (next.empty())
      break;
    it = kv_.lower_bound(next);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Watches and observers

Result<WatchHandle> Catalog::watch(const WatchScope& scope, WatchCallback cb) {
  return watches_->add(scope, std::move(cb));
}

void Catalog::addObserver(CatalogObserver* o) {
  if (std::find(observers_.begin(), observers_.end(), o) == observers_.end())
    observers_.push_back(o);
}

void Catalog::removeObserver(CatalogObserver* o) {
  observers_.erase(std::remove(observers_.begin(), observers_.end(), o), observers_.end());
}

Catalog::Counts Catalog::counts() const {
  return Counts{nodes_.size(), service_count_, check_count_, kv_.size(), kv_tombstones_.size()};
}

} // namespace trellis::registry
