#pragma once

#include <array>
#include <cstdint>

// Character classes of RFC 9110 / RFC 9112 / RFC 3986 as 256-entry tables, so the parser's
// inner loops are one load and one test per byte. Internal to src/http/.
namespace trellis::http::chars {

enum : uint8_t {
  kToken = 1 << 0,      // tchar
  kFieldValue = 1 << 1, // field-vchar / SP / HTAB (VCHAR, obs-text)
  kUri = 1 << 2,        // unreserved / sub-delims / ":" / "@" / "/" / "?" (RFC 3986 pchar set)
  kUriLenient = 1 << 3, // printable ASCII browsers send unescaped: [ ] | \ ^ ` { }
  kHex = 1 << 4,
  kRegName = 1 << 5, // unreserved / sub-delims (host names, without "%")
  kQdText = 1 << 6,  // qdtext of a quoted-string
};

constexpr std::array<uint8_t, 256> makeTable() {
  std::array<uint8_t, 256> t{};
  auto isAlpha = [](int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  auto isDigit = [](int c) { return c >= '0' && c <= '9'; };
  auto in = [](int c, const char* set) {
    for (const char* s = set; *s; ++s)
      if (*s == c)
        return true;
    return false;
  };
  for (int c = 0; c < 256; ++c) {
    uint8_t v = 0;
    if (isAlpha(c) || isDigit(c) || in(c, "!#$%&'*+-.^_`|~"))
      v |= kToken;
    if ((c >= 0x21 && c <= 0x7e) || c >= 0x80 || c == ' ' || c == '\t')
      v |= kFieldValue;
    bool unreserved = isAlpha(c) || isDigit(c) || in(c, "-._~");
    bool subDelim = in(c, "!$&'()*+,;=");
    if (unreserved || subDelim || in(c, ":@/?"))
      v |= kUri;
    if (in(c, "[]|\\^`{}"))
      v |= kUriLenient;
    if (isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
      v |= kHex;
    if (unreserved || subDelim)
      v |= kRegName;
    if (c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
        (c >= 0x5d && c <= 0x7e) || c >= 0x80)
      v |= kQdText;
    t[c] = v;
  }
  return t;
}

inline constexpr std::array<uint8_t, 256> kTable = makeTable();

inline bool is(unsigned char c, uint8_t cls) {
  return (kTable[c] & cls) != 0;
}

inline int hexValue(unsigned char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

inline constexpr std::array<char, 256> makeLower() {
  std::array<char, 256> t{};
  for (int c = 0; c < 256; ++c)
    t[c] = static_cast<char>((c >= 'A' && c <= 'Z') ? c + 32 : c);
  return t;
}
inline constexpr std::array<char, 256> kLower = makeLower();

} // namespace trellis::http::chars
