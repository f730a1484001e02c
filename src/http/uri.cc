#include "http/uri.h"

#include "http/chars.h"

namespace trellis::http {

Result<std::string> percentDecode(std::string_view text, bool plus_as_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      const int hi = i + 1 < text.size() ? chars::hexValue(text[i + 1]) : -1;
      const int lo = i + 2 < text.size() ? chars::hexValue(text[i + 2]) : -1;
      if (hi < 0 || lo < 0)
        return makeError(ErrorCode::kInvalidArgument, "malformed %-escape in \"{}\"",
                         text.substr(0, 128));
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_as_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string percentEncode(std::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    const bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved || (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

Result<QueryParams> parseQuery(std::string_view query) {
  QueryParams out;
  size_t i = 0;
  while (i <= query.size()) {
    size_t amp = query.find('&', i);
    if (amp == std::string_view::npos)
      amp = query.size();
    std::string_view piece = query.substr(i, amp - i);
    i = amp + 1;
    if (piece.empty())
      continue;
    const size_t eq = piece.find('=');
    auto name = percentDecode(piece.substr(0, eq), true);
    if (!name.ok())
      return name.error();
    std::string value;
    if (eq != std::string_view::npos) {
      auto v = percentDecode(piece.substr(eq + 1), true);
      if (!v.ok())
        return v.error();
      value = std::move(*v);
    }
    out.emplace_back(std::move(*name), std::move(value));
  }
  return out;
}

TargetParts splitTarget(std::string_view target) {
  if (!target.empty() && target.front() != '/' && target != "*") {
    // absolute-form: skip "scheme://authority".
    const size_t scheme_end = target.find("://");
    if (scheme_end != std::string_view::npos) {
      const size_t auth = scheme_end + 3;
      const size_t path = target.find_first_of("/?", auth);
      if (path == std::string_view::npos)
        return {"/", ""};
      target = target.substr(path);
      if (target.front() == '?') {
        return {"/", target.substr(1)};
      }
    }
  }
  const size_t q = target.find('?');
  if (q == std::string_view::npos)
    return {target, ""};
  return {target.substr(0, q), target.substr(q + 1)};
}

} // namespace trellis::http
