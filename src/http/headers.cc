#include "http/headers.h"

#include "http/chars.h"

namespace trellis::http {

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (chars::kLower[static_cast<unsigned char>(a[i])] !=
        chars::kLower[static_cast<unsigned char>(b[i])])
      return false;
  return true;
}

HeaderMap::HeaderMap(std::initializer_list<std::pair<std::string_view, std::string_view>> init) {
  for (const auto& [n, v] : init)
    add(n, v);
}

void HeaderMap::add(std::string_view name, std::string_view value) {
  Slot s;
  s.name_off = static_cast<uint32_t>(buf_.size());
  s.name_len = static_cast<uint32_t>(name.size());
  buf_.append(name);
  s.value_off = static_cast<uint32_t>(buf_.size());
  s.value_len = static_cast<uint32_t>(value.size());
  buf_.append(value);
  slots_.push_back(s);
  live_bytes_ += name.size() + value.size();
}

void HeaderMap::set(std::string_view name, std::string_view value) {
  size_t first = slots_.size();
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (equalsIgnoreCase(at(i).name, name)) {
      first = i;
      break;
    }
  }
  if (first == slots_.size()) {
    add(name, value);
    return;
  }
  // Keep the field's position: rewrite the first slot, drop the later ones.
  Slot& s = slots_[first];
  live_bytes_ -= s.name_len + s.value_len;
  // `name` or `value` may point into buf_; appending may reallocate, so copy them first when
  // they do.
  std::string tmp;
  if (value.data() >= buf_.data() && value.data() < buf_.data() + buf_.size()) {
    tmp.assign(value);
    value = tmp;
  }
  std::string tmpn;
  if (name.data() >= buf_.data() && name.data() < buf_.data() + buf_.size()) {
    tmpn.assign(name);
    name = tmpn;
  }
  s.name_off = static_cast<uint32_t>(buf_.size());
  s.name_len = static_cast<uint32_t>(name.size());
  buf_.append(name);
  s.value_off = static_cast<uint32_t>(buf_.size());
  s.value_len = static_cast<uint32_t>(value.size());
  buf_.append(value);
  live_bytes_ += name.size() + value.size();
  size_t out = first + 1;
  for (size_t i = first + 1; i < slots_.size(); ++i) {
    if (equalsIgnoreCase(at(i).name, name)) {
      live_bytes_ -= slots_[i].name_len + slots_[i].value_len;
      continue;
    }
    slots_[out++] = slots_[i];
  }
  slots_.resize(out);
  compactIfWasteful();
}

size_t HeaderMap::remove(std::string_view name) {
  size_t out = 0;
  size_t removed = 0;
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (equalsIgnoreCase(at(i).name, name)) {
      live_bytes_ -= slots_[i].name_len + slots_[i].value_len;
      ++removed;
      continue;
    }
    slots_[out++] = slots_[i];
  }
  slots_.resize(out);
  if (removed)
    compactIfWasteful();
  return removed;
}

void HeaderMap::compactIfWasteful() {
  // Removed and replaced fields leave dead bytes in buf_; rebuild once they dominate.
  if (buf_.size() < 1024 || live_bytes_ * 2 >= buf_.size())
    return;
  std::string nb;
  nb.reserve(live_bytes_);
  for (Slot& s : slots_) {
    uint32_t no = static_cast<uint32_t>(nb.size());
    nb.append(buf_, s.name_off, s.name_len);
    uint32_t vo = static_cast<uint32_t>(nb.size());
    nb.append(buf_, s.value_off, s.value_len);
    s.name_off = no;
    s.value_off = vo;
  }
  buf_ = std::move(nb);
}

void HeaderMap::clear() {
  buf_.clear();
  slots_.clear();
  live_bytes_ = 0;
}

void HeaderMap::reserve(size_t entries, size_t bytes) {
  slots_.reserve(entries);
  buf_.reserve(bytes);
}

std::optional<std::string_view> HeaderMap::get(std::string_view name) const {
  for (size_t i = 0; i < slots_.size(); ++i) {
    Entry e = at(i);
    if (equalsIgnoreCase(e.name, name))
      return e.value;
  }
  return std::nullopt;
}

size_t HeaderMap::count(std::string_view name) const {
  size_t n = 0;
  for (size_t i = 0; i < slots_.size(); ++i)
    if (equalsIgnoreCase(at(i).name, name))
      ++n;
  return n;
}

std::string HeaderMap::getAll(std::string_view name) const {
  std::string out;
  for (size_t i = 0; i < slots_.size(); ++i) {
    Entry e = at(i);
    if (!equalsIgnoreCase(e.name, name))
      continue;
    if (!out.empty())
      out.append(", ");
    out.append(e.value);
  }
  return out;
}

bool HeaderMap::operator==(const HeaderMap& o) const {
  if (size() != o.size())
    return false;
  for (size_t i = 0; i < size(); ++i) {
    Entry a = at(i), b = o.at(i);
    if (a.name != b.name || a.value != b.value)
      return false;
  }
  return true;
}

bool isTokenChar(unsigned char c) {
  return chars::is(c, chars::kToken);
}

bool isValidHeaderName(std::string_view name) {
  if (name.empty())
    return false;
  for (unsigned char c : name)
    if (!chars::is(c, chars::kToken))
      return false;
  return true;
}

bool isValidHeaderValue(std::string_view value) {
  for (unsigned char c : value)
    if (!chars::is(c, chars::kFieldValue))
      return false;
  if (!value.empty()) {
    char f = value.front(), b = value.back();
    if (f == ' ' || f == '\t' || b == ' ' || b == '\t')
      return false;
  }
  return true;
}

Status validateHeaders(const HeaderMap& headers) {
  for (auto e : headers) {
    if (!isValidHeaderName(e.name))
      return makeError(ErrorCode::kInvalidArgument, "invalid header name \"{}\"", e.name);
    if (!isValidHeaderValue(e.value))
      return makeError(ErrorCode::kInvalidArgument,
                       "header \"{}\" has a value with control characters or edge whitespace",
                       e.name);
  }
  return okStatus();
}

bool isHopByHopHeader(std::string_view name) {
  switch (name.size()) {
  case 2:
    return equalsIgnoreCase(name, "te");
  case 7:
    return equalsIgnoreCase(name, "trailer") || equalsIgnoreCase(name, "upgrade");
  case 10:
    return equalsIgnoreCase(name, "connection") || equalsIgnoreCase(name, "keep-alive");
  case 16:
    return equalsIgnoreCase(name, "proxy-connection");
  case 17:
    return equalsIgnoreCase(name, "transfer-encoding");
  default:
    return false;
  }
}

bool listHasToken(std::string_view value, std::string_view token) {
  bool found = false;
  forEachListElement(value, [&](std::string_view el) {
    if (!found && equalsIgnoreCase(el, token))
      found = true;
  });
  return found;
}

bool isHopByHop(const HeaderMap& headers, std::string_view name) {
  if (isHopByHopHeader(name))
    return true;
  for (auto e : headers)
    if (equalsIgnoreCase(e.name, "connection") && listHasToken(e.value, name))
      return true;
  return false;
}

size_t removeHopByHopHeaders(HeaderMap& headers) {
  // Collect the names listed in Connection before removing Connection itself.
  std::vector<std::string> listed;
  for (auto e : headers)
    if (equalsIgnoreCase(e.name, "connection"))
      forEachListElement(e.value, [&](std::string_view el) { listed.emplace_back(el); });
  size_t removed = 0;
  for (const auto& n : listed)
    removed += headers.remove(n);
  static constexpr std::string_view kFixed[] = {"connection", "keep-alive", "proxy-connection",
                                                "te",         "trailer",    "transfer-encoding",
                                                "upgrade"};
  for (auto n : kFixed)
    removed += headers.remove(n);
  return removed;
}

} // namespace trellis::http
