#include "proxy/mesh/mesh_state.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace trellis::proxy::mesh {

namespace {

using json = nlohmann::json;

constexpr const char* kServiceFields[] = {"protocol", "cluster", "endpoints", "routes"};

// Endpoint changes to an ordered list are put in one by one (binary search, insert or erase)
// while they number at most 1/kInPlaceShare of the list; more take one merge pass over it.
constexpr size_t kInPlaceShare = 4;

Status checkObjectOfObjects(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end())
    return okStatus();
  if (!it->is_object())
    return makeError(ErrorCode::kInvalidArgument, "{}: must be an object, got {}", key,
                     it->type_name());
  for (const auto& [name, entry] : it->items()) {
    if (name.empty())
      return makeError(ErrorCode::kInvalidArgument, "{}: empty name", key);
    if (!entry.is_object())
      return makeError(ErrorCode::kInvalidArgument, "{}.{}: must be an object, got {}", key, name,
                       entry.type_name());
  }
  return okStatus();
}

Status checkNameList(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end())
    return okStatus();
  if (!it->is_array())
    return makeError(ErrorCode::kInvalidArgument, "{}: must be a list of names, got {}", key,
                     it->type_name());
  for (size_t i = 0; i < it->size(); ++i)
    if (!(*it)[i].is_string())
      return makeError(ErrorCode::kInvalidArgument, "{}[{}]: must be a string, got {}", key, i,
                       (*it)[i].type_name());
  return okStatus();
}

// Inserts `value` before `at` / erases the element at `at`, shifting the elements after it by
// swaps: a json's swap exchanges two words, where the move assignment vector::insert and
// erase use goes through a temporary (construct, swap, destroy: several times the work, and
// an endpoint change shifts half of its service's list).
void insertAt(json::array_t& list, json::array_t::iterator at, json value) {
  const size_t k = static_cast<size_t>(at - list.begin());
  list.push_back(std::move(value));
  for (size_t j = list.size() - 1; j > k; --j)
    list[j].swap(list[j - 1]);
}
void eraseAt(json::array_t& list, json::array_t::iterator at) {
  for (size_t j = static_cast<size_t>(at - list.begin()); j + 1 < list.size(); ++j)
    list[j].swap(list[j + 1]);
  list.pop_back();
}

// An endpoint's address: the element itself when it is a string, else its string "address";
// null when it has none.
const std::string* endpointAddress(const json& ep) {
  if (ep.is_string())
    return &ep.get_ref<const std::string&>();
  if (!ep.is_object())
    return nullptr;
  auto address = ep.find("address");
  if (address == ep.end() || !address->is_string())
    return nullptr;
  return &address->get_ref<const std::string&>();
}

// A delta's endpoint-level change of one service (docs/protocol.md "Deltas"): checked
// before anything is applied, so a bad one leaves the state as it was.
Status checkEndpointChanges(const std::string& name, const json& entry) {
  auto added = entry.find("endpoints_added");
  auto removed = entry.find("endpoints_removed");
  if (added == entry.end() && removed == entry.end())
    return okStatus();
  if (entry.contains("endpoints"))
    return makeError(ErrorCode::kInvalidArgument,
                     "services.{}: \"endpoints\" together with \"{}\" (a delta carries "
                     "either the whole list or the change)",
                     name, added != entry.end() ? "endpoints_added" : "endpoints_removed");
  if (added != entry.end()) {
    if (!added->is_array())
      return makeError(ErrorCode::kInvalidArgument,
                       "services.{}.endpoints_added: must be a list of endpoints, got {}", name,
                       added->type_name());
    for (size_t i = 0; i < added->size(); ++i)
      if (endpointAddress((*added)[i]) == nullptr)
        return makeError(ErrorCode::kInvalidArgument,
                         "services.{}.endpoints_added[{}]: must be an address string or an "
                         "object with a string \"address\", got {}",
                         name, i, (*added)[i].type_name());
  }
  if (removed != entry.end()) {
    if (!removed->is_array())
      return makeError(ErrorCode::kInvalidArgument,
                       "services.{}.endpoints_removed: must be a list of addresses, got {}", name,
                       removed->type_name());
    for (size_t i = 0; i < removed->size(); ++i)
      if (!(*removed)[i].is_string())
        return makeError(ErrorCode::kInvalidArgument,
                         "services.{}.endpoints_removed[{}]: must be a string, got {}", name, i,
                         (*removed)[i].type_name());
  }
  return okStatus();
}

// The element an addition puts in: its own (`ep`), or the address string `k` itself.
json elementOf(std::string_view k, const json* ep) {
  return ep != nullptr ? *ep : json(std::string(k));
}
bool sameElement(const json& stored, std::string_view k, const json* ep) {
  if (ep != nullptr)
    return stored == *ep;
  return stored.is_string() && stored.get_ref<const std::string&>() == k;
}

// Changes the stored endpoint list in place: the `gone` addresses taken out, the `adds` put in
// (each an address and its element, or null for the address string itself; one replaces a
// stored element of the same address), ordered by address like the server's full list. Both
// lists are sorted here. Stored elements without an address (a list the configuration rejected) are
// kept, last; a stored value that is no list counts as empty. Returns whether the list changed.
//
// `in_order` says the list is known to be in that order (this function left it so and
// nothing replaced it since). Then a few changes, the usual case (a single registration
// touches one endpoint of one service), are each put in by binary search; otherwise one merge
// pass moves the whole list (no copy, no parse), after putting it in order if it was not.
//
// `origins` (may be null) follows each element's move; putting the list in order loses them.
bool applyEndpointChanges(json& stored, bool& in_order, std::vector<std::string_view>& gone,
                          std::vector<std::pair<std::string_view, const json*>>& adds,
                          EndpointOrigins* origins) {
  if (!stored.is_array()) {
    stored = json::array();
    in_order = false;
    if (origins != nullptr)
      *origins = EndpointOrigins{};
  }
  json::array_t& list = stored.get_ref<json::array_t&>();
  if (origins != nullptr && origins->base_rev == 0)
    origins = nullptr;
  if (origins != nullptr && !origins->edited) { // still the base list: each is where it was
    origins->index.reserve(list.size() + adds.size());
    origins->index.resize(list.size());
    std::iota(origins->index.begin(), origins->index.end(), uint32_t{0});
    origins->edited = true;
  }
  auto originAt = [&](json::array_t::iterator it) -> uint32_t* {
    return origins != nullptr ? &origins->index[static_cast<size_t>(it - list.begin())] : nullptr;
  };
  std::sort(gone.begin(), gone.end());
  // The last of several additions of one address wins: unique over the reversed range keeps
  // the first of each run there, and packs what it keeps at the forward range's tail.
  std::stable_sort(adds.begin(), adds.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  adds.erase(adds.begin(),
             std::unique(adds.rbegin(), adds.rend(), [](const auto& a, const auto& b) {
               return a.first == b.first;
             }).base());
  auto byKey = [](const auto& a, std::string_view k) { return a.first < k; };

  if (in_order && (gone.size() + adds.size()) * kInPlaceShare <= list.size()) {
    // The first element whose address is not below `k` (addressed elements come first).
    auto lower = [&](std::string_view k) {
      return std::partition_point(list.begin(), list.end(), [&](const json& ep) {
        const std::string* a = endpointAddress(ep);
        return a != nullptr && std::string_view(*a) < k;
      });
    };
    auto at = [&](json::array_t::iterator it, std::string_view k) {
      if (it == list.end())
        return false;
      const std::string* a = endpointAddress(*it);
      return a != nullptr && *a == k;
    };
    bool changed = false;
    for (std::string_view k : gone) {
      auto a = std::lower_bound(adds.begin(), adds.end(), k, byKey);
      if (a != adds.end() && a->first == k)
        continue; // its addition replaces it below (an unchanged one is no change)
      if (auto it = lower(k); at(it, k)) {
        if (origins != nullptr)
          origins->index.erase(origins->index.begin() + (it - list.begin()));
        eraseAt(list, it);
        changed = true;
      }
    }
    for (const auto& [k, ep] : adds) {
      auto it = lower(k);
      if (at(it, k)) {
        if (!sameElement(*it, k, ep)) {
          if (uint32_t* o = originAt(it); o != nullptr && *o != EndpointOrigins::kNew)
            *o |= EndpointOrigins::kChanged;
          *it = elementOf(k, ep);
          changed = true;
        }
      } else {
        if (origins != nullptr)
          origins->index.insert(origins->index.begin() + (it - list.begin()),
                                EndpointOrigins::kNew);
        insertAt(list, it, elementOf(k, ep));
        changed = true;
      }
    }
    return changed;
  }
  // Each stored element's address, looked up once (an object member lookup per comparison
  // was most of this function's cost); empty for an element without one.
  std::vector<std::string_view> keys;
  auto readKeys = [&] {
    keys.clear();
    keys.reserve(list.size());
    for (const json& ep : list) {
      const std::string* a = endpointAddress(ep);
      keys.push_back(a != nullptr ? std::string_view(*a) : std::string_view());
    }
  };
  readKeys();
  // The stored list is normally in order, addressed elements first (the server sends it so,
  // and this keeps it so); restore that once if it is not.
  size_t addressed = 0;
  while (addressed < keys.size() && keys[addressed].data() != nullptr)
    ++addressed;
  bool ordered = true;
  for (size_t i = addressed; i < keys.size() && ordered; ++i)
    ordered = keys[i].data() == nullptr;
  for (size_t i = 1; i < addressed && ordered; ++i)
    ordered = !(keys[i] < keys[i - 1]);
  if (!ordered) {
    if (origins != nullptr) { // the sort would have to carry them: rare, so they are dropped
      *origins = EndpointOrigins{};
      origins = nullptr;
    }
    auto end = std::stable_partition(list.begin(), list.end(),
                                     [](const json& ep) { return endpointAddress(ep) != nullptr; });
    std::stable_sort(list.begin(), end, [](const json& a, const json& b) {
      return *endpointAddress(a) < *endpointAddress(b);
    });
    addressed = static_cast<size_t>(end - list.begin());
    readKeys();
  }
  // The merge below leaves the list in order. The in-place path may take it from there only
  // if no address is stored twice (a list the configuration rejected): it would remove or
  // replace one copy where the merge handles all of them. A repeat removed by this merge is
  // found to be gone by the next one.
  in_order = true;
  for (size_t i = 1; i < addressed && in_order; ++i)
    in_order = keys[i] != keys[i - 1];

  json::array_t out;
  out.reserve(list.size() + adds.size());
  std::vector<uint32_t> out_origins;
  auto keep = [&](size_t i, bool content_changed) {
    if (origins == nullptr)
      return;
    uint32_t o = origins->index[i];
    if (content_changed && o != EndpointOrigins::kNew)
      o |= EndpointOrigins::kChanged;
    out_origins.push_back(o);
  };
  auto fresh = [&] {
    if (origins != nullptr)
      out_origins.push_back(EndpointOrigins::kNew);
  };
  bool changed = false;
  auto g = gone.begin();
  auto isGone = [&](std::string_view k) {
    while (g != gone.end() && *g < k)
      ++g;
    return g != gone.end() && *g == k;
  };
  size_t i = 0;
  auto a = adds.begin();
  while (i < addressed || a != adds.end()) {
    if (a == adds.end() || (i < addressed && keys[i] < a->first)) {
      if (isGone(keys[i])) {
        changed = true;
      } else {
        keep(i, false);
        out.push_back(std::move(list[i]));
      }
      ++i;
    } else if (i == addressed || a->first < keys[i]) {
      fresh();
      out.push_back(elementOf(a->first, a->second));
      changed = true;
      ++a;
    } else { // the same address: the addition replaces it (removals come first)
      const bool differs = !sameElement(list[i], a->first, a->second);
      changed = changed || differs;
      keep(i, differs);
      out.push_back(elementOf(a->first, a->second));
      ++i;
      ++a;
    }
  }
  for (; i < list.size(); ++i) {
    keep(i, false);
    out.push_back(std::move(list[i]));
  }
  list = std::move(out);
  if (origins != nullptr)
    origins->index = std::move(out_origins);
  return changed;
}

Status checkStructure(const json& body) {
  TRELLIS_RETURN_IF_ERROR(checkObjectOfObjects(body, "services"));
  TRELLIS_RETURN_IF_ERROR(checkObjectOfObjects(body, "gateways"));
  TRELLIS_RETURN_IF_ERROR(checkNameList(body, "removed"));
  TRELLIS_RETURN_IF_ERROR(checkNameList(body, "removed_gateways"));
  return okStatus();
}

json fieldOrNull(const json& entry, const char* key) {
  auto it = entry.find(key);
  return it == entry.end() ? json() : *it;
}

} // namespace

Result<Message> parseMessage(std::string_view line) {
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    return makeError(ErrorCode::kInvalidArgument, "message is not valid JSON");
  if (!j.is_object())
    return makeError(ErrorCode::kInvalidArgument, "message must be a JSON object, got {}",
                     j.type_name());
  Message m;
  auto type = j.find("type");
  if (type == j.end() || !type->is_string())
    return makeError(ErrorCode::kInvalidArgument, "message: missing string \"type\"");
  const auto& t = type->get_ref<const std::string&>();
  if (t == "snapshot")
    m.type = MessageType::kSnapshot;
  else if (t == "delta")
    m.type = MessageType::kDelta;
  else if (t == "heartbeat")
    m.type = MessageType::kHeartbeat;
  else
    return makeError(ErrorCode::kInvalidArgument,
                     "message: unknown type \"{}\" (expected snapshot, delta or heartbeat)", t);
  auto version = j.find("version");
  if (version == j.end() || !version->is_number_unsigned())
    return makeError(ErrorCode::kInvalidArgument, "{}: \"version\" must be an unsigned integer", t);
  m.version = version->get<uint64_t>();
  if (m.type == MessageType::kSnapshot) {
    auto stream = j.find("stream");
    if (stream == j.end() || !stream->is_string())
      return makeError(ErrorCode::kInvalidArgument, "snapshot: missing string \"stream\"");
    m.stream = stream->get<std::string>();
  }
  if (m.type != MessageType::kHeartbeat)
    m.body = std::move(j);
  return m;
}

namespace {

// A small reader for readEndpointDelta(): whitespace, plain strings, unsigned integers.
struct Scanner {
  std::string_view in;
  size_t at = 0;

  void space() {
    while (at < in.size() && (in[at] == ' ' || in[at] == '\t' || in[at] == '\n' || in[at] == '\r'))
      ++at;
  }
  bool eat(char c) {
    space();
    if (at < in.size() && in[at] == c) {
      ++at;
      return true;
    }
    return false;
  }
  // A string of printable ASCII without escapes (anything else: the general parser's job).
  std::optional<std::string_view> string() {
    if (!eat('"'))
      return std::nullopt;
    const size_t from = at;
    for (; at < in.size(); ++at) {
      const unsigned char c = static_cast<unsigned char>(in[at]);
      if (c == '"')
        return in.substr(from, at++ - from);
      if (c < 0x20 || c >= 0x7f || c == '\\')
        return std::nullopt;
    }
    return std::nullopt;
  }
  std::optional<uint64_t> unsignedInt() {
    space();
    const size_t from = at;
    uint64_t v = 0;
    for (; at < in.size() && in[at] >= '0' && in[at] <= '9'; ++at) {
      const uint64_t d = static_cast<uint64_t>(in[at] - '0');
      if (v > (UINT64_MAX - d) / 10)
        return std::nullopt;
      v = v * 10 + d;
    }
    const size_t n = at - from;
    if (n == 0 || (n > 1 && in[from] == '0'))
      return std::nullopt;
    if (at < in.size() && (in[at] == '.' || in[at] == 'e' || in[at] == 'E'))
      return std::nullopt;
    return v;
  }
  // "[" strings "]", viewing the input.
  std::optional<std::vector<std::string_view>> stringArray() {
    if (!eat('['))
      return std::nullopt;
    std::vector<std::string_view> out;
    if (eat(']'))
      return out;
    do {
      auto s = string();
      if (!s)
        return std::nullopt;
      out.push_back(*s);
    } while (eat(','));
    if (!eat(']'))
      return std::nullopt;
    return out;
  }
};

} // namespace

std::optional<EndpointDelta> readEndpointDelta(std::string_view line) {
  Scanner sc{line};
  EndpointDelta d;
  bool type = false, version = false, services = false, removed = false;
  bool gateways = false, removed_gateways = false;
  if (!sc.eat('{'))
    return std::nullopt;
  do {
    auto key = sc.string();
    if (!key || !sc.eat(':'))
      return std::nullopt;
    if (*key == "type" && !type) {
      auto t = sc.string();
      if (!t || *t != "delta")
        return std::nullopt;
      type = true;
    } else if (*key == "version" && !version) {
      auto v = sc.unsignedInt();
      if (!v)
        return std::nullopt;
      d.version = *v;
      version = true;
    } else if (bool* seen = *key == "removed"            ? &removed
                            : *key == "removed_gateways" ? &removed_gateways
                            : *key == "gateways"         ? &gateways
                                                         : nullptr;
               seen != nullptr && !*seen) {
      // Members the server always writes, here with nothing in them.
      const char open = *key == "gateways" ? '{' : '[';
      if (!sc.eat(open) || !sc.eat(open == '{' ? '}' : ']'))
        return std::nullopt;
      *seen = true;
    } else if (*key == "services" && !services) {
      services = true;
      if (!sc.eat('{'))
        return std::nullopt;
      if (sc.eat('}'))
        continue;
      do {
        auto name = sc.string();
        if (!name || name->empty() || !sc.eat(':') || !sc.eat('{'))
          return std::nullopt;
        EndpointDelta::Change c;
        c.service = *name;
        do {
          auto field = sc.string();
          if (!field || !sc.eat(':'))
            return std::nullopt;
          auto* slot = *field == "endpoints_added"     ? &c.added
                       : *field == "endpoints_removed" ? &c.removed
                                                       : nullptr;
          if (slot == nullptr || slot->has_value())
            return std::nullopt;
          auto list = sc.stringArray();
          if (!list)
            return std::nullopt;
          *slot = std::move(*list);
        } while (sc.eat(','));
        if (!sc.eat('}'))
          return std::nullopt;
        d.services.push_back(std::move(c));
      } while (sc.eat(','));
      if (!sc.eat('}'))
        return std::nullopt;
    } else {
      return std::nullopt;
    }
  } while (sc.eat(','));
  if (!sc.eat('}') || !type || !version)
    return std::nullopt;
  sc.space();
  if (sc.at != line.size())
    return std::nullopt;
  std::sort(d.services.begin(), d.services.end(),
            [](const auto& a, const auto& b) { return a.service < b.service; });
  for (size_t i = 1; i < d.services.size(); ++i)
    if (d.services[i].service == d.services[i - 1].service)
      return std::nullopt; // a repeated name: the general parser decides what it means
  return d;
}

bool MeshState::applyEndpointDelta(const EndpointDelta& d) {
  if (!has_snapshot_ || d.version <= version_)
    return false;
  std::vector<ServiceEntry*> entries;
  entries.reserve(d.services.size());
  for (const auto& c : d.services) {
    auto it = services_.find(c.service);
    if (it == services_.end())
      return false;
    entries.push_back(&it->second);
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    const EndpointDelta::Change& c = d.services[i];
    changes_.any = c.added.has_value() || c.removed.has_value();
    changes_.gone.clear();
    changes_.adds.clear();
    if (c.removed)
      changes_.gone.assign(c.removed->begin(), c.removed->end());
    if (c.added)
      for (std::string_view a : *c.added)
        changes_.adds.emplace_back(a, nullptr);
    applyServiceChange(c.service, false, *entries[i], nullptr, changes_);
  }
  version_ = d.version;
  return true;
}

bool MeshState::setField(json& field, const json& value, uint64_t& rev) {
  if (rev != 0 && field == value)
    return false;
  field = value;
  rev = next_rev_++;
  return true;
}

std::optional<std::vector<std::string_view>> MeshState::servicesNamedSince(uint64_t rev) const {
  if (rev < log_from_)
    return std::nullopt;
  std::vector<std::string_view> out;
  for (auto it = log_.rbegin(); it != log_.rend() && it->rev >= rev; ++it)
    out.push_back(it->name);
  return out;
}

void MeshState::forgetChanges() {
  log_.clear();
  log_from_ = ++next_rev_;
}

void MeshState::rebaseEndpointOrigins() {
  for (ServiceEntry* e : origins_moved_) {
    e->origins.base_rev = e->endpoints_rev;
    e->origins.edited = false;
    e->origins_moved = false;
  }
  origins_moved_.clear();
}

void MeshState::clear() {
  origins_moved_.clear();
  forgetChanges();
  has_snapshot_ = false;
  version_ = 0;
  stream_.clear();
  services_.clear();
  gateways_.clear();
}

Status MeshState::applySnapshot(const Message& msg) {
  if (msg.type != MessageType::kSnapshot)
    return makeError(ErrorCode::kInvalidArgument, "expected a snapshot");
  TRELLIS_RETURN_IF_ERROR(checkStructure(msg.body));
  std::map<std::string, ServiceEntry, std::less<>> services;
  if (auto it = msg.body.find("services"); it != msg.body.end()) {
    for (const auto& [name, entry] : it->items()) {
      ServiceEntry e;
      if (auto old = services_.find(name); old != services_.end())
        e = std::move(old->second);
      bool def = false;
      uint64_t d = e.definition_rev;
      def |= setField(e.protocol, fieldOrNull(entry, "protocol"), d);
      def |= setField(e.cluster, fieldOrNull(entry, "cluster"), d);
      def |= setField(e.routes, fieldOrNull(entry, "routes"), d);
      if (def)
        e.definition_rev = next_rev_++;
      if (setField(e.endpoints, fieldOrNull(entry, "endpoints"), e.endpoints_rev))
        e.endpoints_in_order = false;
      // Each list as it is now is the base of later edits (a reader whose last read was of
      // another list reads a changed one whole).
      e.origins.base_rev = e.endpoints_rev;
      e.origins.edited = false;
      e.origins_moved = false; // the list of moved ones starts again (below)
      services.emplace(name, std::move(e));
    }
  }
  std::map<std::string, GatewayEntry, std::less<>> gateways;
  if (auto it = msg.body.find("gateways"); it != msg.body.end()) {
    for (const auto& [name, entry] : it->items()) {
      GatewayEntry g;
      if (auto old = gateways_.find(name); old != gateways_.end())
        g = std::move(old->second);
      setField(g.routes, fieldOrNull(entry, "routes"), g.rev);
      gateways.emplace(name, std::move(g));
    }
  }
  services_ = std::move(services);
  gateways_ = std::move(gateways);
  origins_moved_.clear();
  forgetChanges();
  has_snapshot_ = true;
  version_ = msg.version;
  stream_ = msg.stream;
  return okStatus();
}

void MeshState::applyServiceChange(std::string_view name, bool is_new, ServiceEntry& e,
                                   const json* fields, EndpointChanges& changes) {
  if (is_new || log_.size() >= kMaxChangeLog)
    forgetChanges();
  else
    log_.push_back(Named{next_rev_, std::string(name)});
  bool def = false;
  uint64_t d = e.definition_rev;
  if (fields != nullptr)
    for (const char* key : kServiceFields) {
      auto f = fields->find(key);
      if (f == fields->end())
        continue;
      if (std::string_view(key) == "endpoints") {
        if (setField(e.endpoints, *f, e.endpoints_rev)) {
          e.endpoints_in_order = false;
          e.origins = EndpointOrigins{}; // a new whole list: read whole
        }
      } else
        def |= setField(std::string_view(key) == "protocol"  ? e.protocol
                        : std::string_view(key) == "cluster" ? e.cluster
                                                             : e.routes,
                        *f, d);
    }
  if (changes.any && applyEndpointChanges(e.endpoints, e.endpoints_in_order, changes.gone,
                                          changes.adds, &e.origins))
    e.endpoints_rev = next_rev_++;
  if (!e.origins_moved) {
    e.origins_moved = true;
    origins_moved_.push_back(&e);
  }
  if (def || e.definition_rev == 0)
    e.definition_rev = next_rev_++;
  if (e.endpoints_rev == 0)
    e.endpoints_rev = next_rev_++;
}

Status MeshState::applyDelta(const Message& msg) {
  if (msg.type != MessageType::kDelta)
    return makeError(ErrorCode::kInvalidArgument, "expected a delta");
  if (!has_snapshot_)
    return makeError(ErrorCode::kFailedPrecondition, "delta {} before any snapshot", msg.version);
  if (msg.version <= version_)
    return makeError(ErrorCode::kInvalidArgument,
                     "delta version {} is not above the current version {}", msg.version, version_);
  TRELLIS_RETURN_IF_ERROR(checkStructure(msg.body));
  if (auto it = msg.body.find("services"); it != msg.body.end())
    for (const auto& [name, entry] : it->items())
      TRELLIS_RETURN_IF_ERROR(checkEndpointChanges(name, entry));
  // Removals first, so that a name removed and defined again in one delta ends up defined.
  if (auto it = msg.body.find("removed"); it != msg.body.end())
    for (const auto& n : *it)
      if (auto s = services_.find(n.get_ref<const std::string&>()); s != services_.end()) {
        std::erase(origins_moved_, &s->second);
        services_.erase(s);
        forgetChanges();
      }
  if (auto it = msg.body.find("removed_gateways"); it != msg.body.end())
    for (const auto& n : *it)
      gateways_.erase(n.get_ref<const std::string&>());
  if (auto it = msg.body.find("services"); it != msg.body.end()) {
    for (const auto& [name, entry] : it->items()) {
      auto [slot, is_new] = services_.try_emplace(name);
      ServiceEntry& e = slot->second; // a new service: its entry is complete
      auto added = entry.find("endpoints_added");
      auto removed = entry.find("endpoints_removed");
      changes_.any = added != entry.end() || removed != entry.end();
      changes_.gone.clear();
      changes_.adds.clear();
      if (removed != entry.end())
        for (const json& address : *removed)
          changes_.gone.push_back(address.get_ref<const std::string&>());
      if (added != entry.end())
        for (const json& ep : *added)
          changes_.adds.emplace_back(*endpointAddress(ep), &ep);
      applyServiceChange(name, is_new, e, &entry, changes_);
    }
  }
  if (auto it = msg.body.find("gateways"); it != msg.body.end())
    for (const auto& [name, entry] : it->items())
      setField(gateways_[name].routes, fieldOrNull(entry, "routes"), gateways_[name].rev);
  version_ = msg.version;
  return okStatus();
}

} // namespace trellis::proxy::mesh
