#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace trellis::http {

// Case-insensitive ASCII comparison, for header names and tokens.
bool equalsIgnoreCase(std::string_view a, std::string_view b);

// An ordered list of header fields (name, value), as they appeared or will be sent.
// Names keep the caller's spelling; lookups are case-insensitive. All names and values live
// in one contiguous buffer and the entries in one vector, so adding a header allocates only
// when either grows past its capacity (amortised, and never after reserve()).
// string_views returned by accessors are valid until the map is next modified.
class HeaderMap {
public:
  struct Entry {
    std::string_view name;
    std::string_view value;
  };

  class const_iterator {
  public:
    using value_type = Entry;
    using difference_type = std::ptrdiff_t;
    const_iterator() = default;
    const_iterator(const HeaderMap* m, size_t i) : m_(m), i_(i) {}
    Entry operator*() const { return m_->at(i_); }
    const_iterator& operator++() {
      ++i_;
      return *this;
    }
    const_iterator operator++(int) {
      auto c = *this;
      ++i_;
      return c;
    }
    bool operator==(const const_iterator& o) const { return i_ == o.i_; }

  private:
    const HeaderMap* m_ = nullptr;
    size_t i_ = 0;
  };

  HeaderMap() = default;
  HeaderMap(std::initializer_list<std::pair<std::string_view, std::string_view>> init);

  // Appends a field; existing fields of the same name are kept (repeated fields are legal).
  void add(std::string_view name, std::string_view value);
  // Replaces every field named `name` with one field holding `value` (at the first one's place,
  // or appended if there was none).
  void set(std::string_view name, std::string_view value);
  // Removes every field named `name`; returns how many were removed.
  size_t remove(std::string_view name);
  void clear();
  void reserve(size_t entries, size_t bytes);

  // The first value of `name`, if present.
  std::optional<std::string_view> get(std::string_view name) const;
  bool contains(std::string_view name) const { return get(name).has_value(); }
  size_t count(std::string_view name) const;
  // All values of `name` joined with ", " (the list form of a repeated field).
  std::string getAll(std::string_view name) const;

  size_t size() const { return slots_.size(); }
  bool empty() const { return slots_.empty(); }
  Entry at(size_t i) const {
    const Slot& s = slots_[i];
    return {std::string_view(buf_).substr(s.name_off, s.name_len),
            std::string_view(buf_).substr(s.value_off, s.value_len)};
  }
  const_iterator begin() const { return {this, 0}; }
  const_iterator end() const { return {this, slots_.size()}; }
  // Bytes of names and values held (what the fields cost on the wire, less ": " and CRLF).
  size_t byteSize() const { return live_bytes_; }

  bool operator==(const HeaderMap& o) const;

private:
  struct Slot {
    uint32_t name_off;
    uint32_t name_len;
    uint32_t value_off;
    uint32_t value_len;
  };
  void compactIfWasteful();

  std::string buf_;
  std::vector<Slot> slots_;
  size_t live_bytes_ = 0;
};

// RFC 9110 5.6.2 token characters (tchar).
bool isTokenChar(unsigned char c);
// True when `name` is a non-empty token.
bool isValidHeaderName(std::string_view name);
// True when `value` holds only field-vchar, SP and HTAB (no CR, LF, NUL or other controls)
// and has no leading or trailing whitespace.
bool isValidHeaderValue(std::string_view value);
// Checks every field of `headers` with the two functions above; the error names the field.
Status validateHeaders(const HeaderMap& headers);

// True for the fixed hop-by-hop fields a proxy must not forward: Connection, Keep-Alive,
// Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade.
bool isHopByHopHeader(std::string_view name);
// True when the comma-separated list `value` (e.g. a Connection value) contains `token`,
// compared case-insensitively.
bool listHasToken(std::string_view value, std::string_view token);
// Calls `fn(token)` for each non-empty element of a comma-separated list, whitespace trimmed.
template <typename Fn> void forEachListElement(std::string_view value, Fn&& fn) {
  size_t i = 0;
  while (i <= value.size()) {
    size_t comma = value.find(',', i);
    if (comma == std::string_view::npos)
      comma = value.size();
    std::string_view el = value.substr(i, comma - i);
    while (!el.empty() && (el.front() == ' ' || el.front() == '\t'))
      el.remove_prefix(1);
    while (!el.empty() && (el.back() == ' ' || el.back() == '\t'))
      el.remove_suffix(1);
    if (!el.empty())
      fn(el);
    i = comma + 1;
  }
}
// True when `name` is hop-by-hop in a message carrying `headers`: a fixed hop-by-hop field or
// one named in any Connection field of `headers`.
bool isHopByHop(const HeaderMap& headers, std::string_view name);
// Removes the fixed hop-by-hop fields and every field named in Connection; returns how many
// fields were removed.
size_t removeHopByHopHeaders(HeaderMap& headers);

} // namespace trellis::http
