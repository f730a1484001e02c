#include "telemetry/text.h"

#include <cmath>
#include <cstdint>

#include <fmt/format.h>

namespace trellis::telemetry {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD"; // U+FFFD

// Length of the well-formed UTF-8 sequence starting at in[i], or 0 if the bytes there do
// not form one (RFC 3629, table 3-7 of the Unicode standard).
size_t utf8SequenceLength(std::string_view in, size_t i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(in[i + k]); };
  const size_t left = in.size() - i;
  const uint8_t c = b(0);
  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF)
    return (left >= 2 && (b(1) & 0xC0) == 0x80) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3)
      return 0;
    const uint8_t lo = c == 0xE0 ? 0xA0 : 0x80; // no overlong forms
    const uint8_t hi = c == 0xED ? 0x9F : 0xBF; // no surrogates
    if (b(1) < lo || b(1) > hi || (b(2) & 0xC0) != 0x80)
      return 0;
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4)
      return 0;
    const uint8_t lo = c == 0xF0 ? 0x90 : 0x80; // no overlong forms
    const uint8_t hi = c == 0xF4 ? 0x8F : 0xBF; // nothing past U+10FFFF
    if (b(1) < lo || b(1) > hi || (b(2) & 0xC0) != 0x80 || (b(3) & 0xC0) != 0x80)
      return 0;
    return 4;
  }
  return 0;
}

// Walks `in`, calling onAscii(c) for each ASCII byte that `plain` rejects, appending runs of
// plain ASCII in bulk and multi-byte sequences verbatim (invalid ones as U+FFFD).
template <typename Plain, typename OnAscii>
void walkUtf8(std::string_view in, std::string& out, Plain plain, OnAscii on_ascii) {
  size_t i = 0;
  while (i < in.size()) {
    size_t run = i;
    while (run < in.size() && static_cast<uint8_t>(in[run]) < 0x80 && plain(in[run]))
      ++run;
    out.append(in.data() + i, run - i);
    i = run;
    if (i == in.size())
      break;
    const auto c = static_cast<uint8_t>(in[i]);
    if (c < 0x80) {
      on_ascii(static_cast<char>(c));
      ++i;
      continue;
    }
    const size_t n = utf8SequenceLength(in, i);
    if (n == 0) {
      out.append(kReplacement);
      ++i;
    } else {
      out.append(in.substr(i, n));
      i += n;
    }
  }
}

} // namespace

void appendValidUtf8(std::string_view in, std::string& out) {
  out.reserve(out.size() + in.size());
  walkUtf8(in, out, [](char) { return true; }, [&](char c) { out.push_back(c); });
}

bool isValidUtf8(std::string_view in) {
  size_t i = 0;
  while (i < in.size()) {
    const size_t n = utf8SequenceLength(in, i);
    if (n == 0)
      return false;
    i += n;
  }
  return true;
}

void appendJsonString(std::string_view in, std::string& out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.reserve(out.size() + in.size() + 2);
  out.push_back('"');
  const auto plain = [](char c) { return c >= 0x20 && c != '"' && c != '\\'; };
  walkUtf8(in, out, plain, [&](char c) {
    switch (c) {
    case '"':
      out.append("\\\"");
      break;
    case '\\':
      out.append("\\\\");
      break;
    case '\n':
      out.append("\\n");
      break;
    case '\r':
      out.append("\\r");
      break;
    case '\t':
      out.append("\\t");
      break;
    case '\b':
      out.append("\\b");
      break;
    case '\f':
      out.append("\\f");
      break;
    default:
      if (static_cast<uint8_t>(c) < 0x20) {
        out.append("\\u00");
        out.push_back(kHex[static_cast<uint8_t>(c) >> 4]);
        out.push_back(kHex[static_cast<uint8_t>(c) & 0xF]);
      } else {
        out.push_back(c);
      }
    }
  });
  out.push_back('"');
}

void appendPrometheusLabelValue(std::string_view in, std::string& out) {
  out.reserve(out.size() + in.size());
  const auto plain = [](char c) { return c != '\\' && c != '"' && c != '\n'; };
  walkUtf8(in, out, plain, [&](char c) {
    switch (c) {
    case '\\':
      out.append("\\\\");
      break;
    case '"':
      out.append("\\\"");
      break;
    case '\n':
      out.append("\\n");
      break;
    default:
      out.push_back(c);
    }
  });
}

void appendPrometheusHelp(std::string_view in, std::string& out) {
  const auto plain = [](char c) { return c != '\\' && c != '\n'; };
  walkUtf8(in, out, plain, [&](char c) {
    switch (c) {
    case '\\':
      out.append("\\\\");
      break;
    case '\n':
      out.append("\\n");
      break;
    default:
      out.push_back(c);
    }
  });
}

void appendPrometheusValue(double v, std::string& out) {
  if (std::isnan(v)) {
    out.append("NaN");
  } else if (std::isinf(v)) {
    out.append(v > 0 ? "+Inf" : "-Inf");
  } else {
    char buf[32];
    const auto r = fmt::format_to_n(buf, sizeof(buf), "{}", v);
    out.append(buf, static_cast<size_t>(r.out - buf));
  }
}

std::string_view truncateUtf8(std::string_view in, size_t max_bytes) {
  if (in.size() <= max_bytes)
    return in;
  size_t end = max_bytes;
  // Back up over continuation bytes so the cut falls before the sequence's lead byte. A
  // sequence has at most 3 of them; past that the input is not UTF-8 and any cut will do.
  for (int i = 0; i < 3 && end > 0 && (static_cast<uint8_t>(in[end]) & 0xC0) == 0x80; ++i)
    --end;
  if ((static_cast<uint8_t>(in[end]) & 0xC0) == 0x80)
    end = max_bytes;
  return in.substr(0, end);
}

} // namespace trellis::telemetry
