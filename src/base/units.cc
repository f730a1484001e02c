#include "base/units.h"

#include <cctype>
#include <cmath>
#include <limits>

namespace trellis {
namespace {

// Returns nanoseconds per unit, or 0 for an unknown unit.
double nanosPerUnit(std::string_view unit) {
  if (unit == "ns")
    return 1;
  if (unit == "us" || unit == "\xC2\xB5s")
    return 1e3;
  if (unit == "ms")
    return 1e6;
  if (unit == "s")
    return 1e9;
  if (unit == "m")
    return 60e9;
  if (unit == "h")
    return 3600e9;
  return 0;
}

bool isUnitChar(char c) { return std::isalpha(static_cast<unsigned char>(c)) || (c & 0x80); }

} // namespace

Result<Duration> parseDuration(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return makeError(ErrorCode::kInvalidArgument, "invalid duration \"{}\": {}", text, why);
  };
  if (text.empty())
    return bad("empty");
  if (text == "0")
    return Duration::zero();
  double total = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
      ++i;
    std::string_view num = text.substr(start, i - start);
    if (num.empty())
      return bad(fmt::format("expected a number at \"{}\"", text.substr(start)));
    if (num.find('.') != num.rfind('.') || num.front() == '.' || num.back() == '.')
      return bad(fmt::format("malformed number \"{}\"", num));
    size_t ustart = i;
    while (i < text.size() && isUnitChar(text[i]))
      ++i;
    std::string_view unit = text.substr(ustart, i - ustart);
    if (unit.empty())
      return bad(fmt::format("missing unit after \"{}\" (use ns, us, ms, s, m or h)", num));
    double per = nanosPerUnit(unit);
    if (per == 0)
      return bad(fmt::format("unknown unit \"{}\" (use ns, us, ms, s, m or h)", unit));
    total += std::stod(std::string(num)) * per;
    if (total > static_cast<double>(std::numeric_limits<int64_t>::max()))
      return bad("too large");
  }
  return Duration(static_cast<int64_t>(std::llround(total)));
}

Result<uint64_t> parseSize(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return makeError(ErrorCode::kInvalidArgument, "invalid size \"{}\": {}", text, why);
  };
  if (text.empty())
    return bad("empty");
  size_t i = 0;
  uint64_t n = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (n > (std::numeric_limits<uint64_t>::max() - d) / 10)
      return bad("too large");
    n = n * 10 + d;
    ++i;
  }
  if (i == 0)
    return bad("expected a number");
  std::string_view unit = text.substr(i);
  if (!unit.empty() && unit.front() == ' ')
    unit.remove_prefix(1);
  uint64_t mult = 0;
  if (unit.empty() || unit == "B")
    mult = 1;
  else if (unit == "KB")
    mult = 1000;
  else if (unit == "MB")
    mult = 1000 * 1000;
  else if (unit == "GB")
    mult = 1000ull * 1000 * 1000;
  else if (unit == "KiB" || unit == "k" || unit == "K")
    mult = 1024;
  else if (unit == "MiB" || unit == "m" || unit == "M")
    mult = 1024 * 1024;
  else if (unit == "GiB" || unit == "g" || unit == "G")
    mult = 1024ull * 1024 * 1024;
  else
    return bad(fmt::format("unknown unit \"{}\" (use B, KiB, MiB, GiB, KB, MB or GB)", unit));
  if (n > std::numeric_limits<uint64_t>::max() / mult)
    return bad("too large");
  return n * mult;
}

std::string formatDuration(Duration d) {
  int64_t ns = d.count();
  if (ns == 0)
    return "0s";
  if (ns % 3600'000'000'000 == 0)
    return fmt::format("{}h", ns / 3600'000'000'000);
  if (ns % 60'000'000'000 == 0)
    return fmt::format("{}m", ns / 60'000'000'000);
  if (ns % 1'000'000'000 == 0)
    return fmt::format("{}s", ns / 1'000'000'000);
  if (ns % 1'000'000 == 0)
    return fmt::format("{}ms", ns / 1'000'000);
  if (ns % 1'000 == 0)
    return fmt::format("{}us", ns / 1'000);
  return fmt::format("{}ns", ns);
}

} // namespace trellis
