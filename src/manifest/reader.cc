#include "manifest/reader.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/strings.h"

namespace trellis::manifest::detail {

const char* typeName(const json& j) {
  switch (j.type()) {
  case json::value_t::null:
    return "an empty value";
  case json::value_t::object:
    return "a mapping";
  case json::value_t::array:
    return "a list";
  case json::value_t::string:
    return "a string";
  case json::value_t::boolean:
    return "a boolean";
  case json::value_t::number_integer:
  case json::value_t::number_unsigned:
    return "an integer";
  case json::value_t::number_float:
    return "a number";
  default:
    return "an unsupported value";
  }
}

Error fieldError(const std::string& path, std::string_view message) {
  if (path.empty())
    return makeError(ErrorCode::kInvalidArgument, "{}", message);
  return makeError(ErrorCode::kInvalidArgument, "{}: {}", path, message);
}

std::string printable(std::string_view text, size_t max) {
  std::string out;
  for (size_t i = 0; i < text.size() && i < max; ++i) {
    const auto u = static_cast<unsigned char>(text[i]);
    if (u < 0x20 || u == 0x7f)
      out += fmt::format("\\x{:02x}", u);
    else
      out.push_back(text[i]);
  }
  if (text.size() > max)
    out += "...";
  return out;
}

std::string joinPath(const std::string& path, std::string_view key) {
  const std::string k = printable(key);
  return path.empty() ? k : fmt::format("{}.{}", path, k);
}

std::string indexPath(const std::string& path, size_t i) {
  return fmt::format("{}[{}]", path, i);
}

Status expectObject(const json& j, const std::string& path) {
  if (!j.is_object())
    return fieldError(path, fmt::format("expected a mapping, got {}", typeName(j)));
  return okStatus();
}

Status expectList(const json& j, const std::string& path, size_t min_items, size_t max_items) {
  if (!j.is_array())
    return fieldError(path, fmt::format("expected a list, got {}", typeName(j)));
  if (j.size() < min_items)
    return fieldError(path, min_items == 1
                                ? "must not be empty"
                                : fmt::format("must have at least {} entries", min_items));
  if (j.size() > max_items)
    return fieldError(path, fmt::format("has {} entries, at most {} allowed", j.size(), max_items));
  return okStatus();
}

namespace {

// Lowercase without '_' and '-': per_try_timeout and perTryTimeout look alike.
std::string squash(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c != '_' && c != '-')
      out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

bool isAlnumLower(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool isAlnum(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0;
}

} // namespace

Status checkKeys(const json& obj, const std::string& path,
                 std::initializer_list<std::string_view> allowed) {
  TRELLIS_RETURN_IF_ERROR(expectObject(obj, path));
  for (const auto& [key, value] : obj.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end())
      continue;
    // Keys too long to be a typo of ours are not compared (bounded work on hostile input).
    std::string_view best;
    if (key.size() <= 64) {
      size_t best_dist = 3; // suggest only close matches
      const std::string sk = squash(key);
      for (std::string_view a : allowed) {
        const size_t d = sk == squash(a) ? 0 : editDistance(key, a);
        if (d < best_dist) {
          best_dist = d;
          best = a;
        }
      }
    }
    const std::string kpath = joinPath(path, key);
    if (!best.empty())
      return fieldError(kpath, fmt::format("unknown field (did you mean \"{}\"?)", best));
    std::string list;
    for (std::string_view a : allowed)
      list += fmt::format("{}{}", list.empty() ? "" : ", ", a);
    return fieldError(kpath, fmt::format("unknown field (expected one of: {})", list));
  }
  return okStatus();
}

const json* find(const json& obj, std::string_view key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null())
    return nullptr;
  return &*it;
}

Error missing(const std::string& path, std::string_view key) {
  return fieldError(joinPath(path, key), "required field is missing");
}

Result<std::string> readString(const json& j, const std::string& path, size_t max_length,
                               bool empty_ok) {
  if (!j.is_string()) {
    if (j.is_primitive() && !j.is_null())
      return fieldError(path, fmt::format("expected a string, got {} {} (quote it to make it a "
                                          "string)",
                                          typeName(j), j.dump()));
    return fieldError(path, fmt::format("expected a string, got {}", typeName(j)));
  }
  const std::string& s = j.get_ref<const std::string&>();
  if (s.empty() && !empty_ok)
    return fieldError(path, "must not be empty");
  if (s.size() > max_length)
    return fieldError(
        path, fmt::format("is {} characters long, at most {} allowed", s.size(), max_length));
  return s;
}

Result<int64_t> readInt(const json& j, const std::string& path, int64_t min, int64_t max) {
  int64_t v = 0;
  if (j.is_number_integer() && !j.is_number_unsigned()) {
    v = j.get<int64_t>();
  } else if (j.is_number_unsigned()) {
    const uint64_t u = j.get<uint64_t>();
    if (u > static_cast<uint64_t>(max))
      return fieldError(path, fmt::format("must be {}..{}, got {}", min, max, u));
    v = static_cast<int64_t>(u);
  } else if (j.is_number_float()) {
    return fieldError(path, fmt::format("expected an integer, got {}", j.dump()));
  } else if (j.is_string()) {
    return fieldError(path, fmt::format("expected an integer, got a string \"{}\"",
                                        printable(j.get_ref<const std::string&>())));
  } else {
    return fieldError(path, fmt::format("expected an integer, got {}", typeName(j)));
  }
  if (v < min || v > max)
    return fieldError(path, fmt::format("must be {}..{}, got {}", min, max, v));
  return v;
}

Result<double> readNumber(const json& j, const std::string& path, double min, double max) {
  if (!j.is_number())
    return fieldError(path, fmt::format("expected a number, got {}", typeName(j)));
  const double v = j.get<double>();
  if (!std::isfinite(v) || v < min || v > max)
    return fieldError(path, fmt::format("must be {}..{}, got {}", min, max, j.dump()));
  return v;
}

Result<bool> readBool(const json& j, const std::string& path) {
  if (!j.is_boolean())
    return fieldError(path, fmt::format("expected true or false, got {}", typeName(j)));
  return j.get<bool>();
}

Result<Duration> readDuration(const json& j, const std::string& path, bool zero_ok) {
  if (!j.is_string()) {
    return fieldError(
        path, fmt::format("expected a duration such as \"250ms\" or \"10s\", got {}", typeName(j)));
  }
  auto d = parseDuration(j.get_ref<const std::string&>());
  if (!d.ok())
    return fieldError(path, d.error().message());
  if (!zero_ok && d->count() == 0)
    return fieldError(path, "must be greater than 0");
  if (*d > kMaxDuration)
    return fieldError(path, fmt::format("must be at most {}", formatDuration(kMaxDuration)));
  return d;
}

Result<std::map<std::string, std::string>> readStringMap(const json& j, const std::string& path) {
  TRELLIS_RETURN_IF_ERROR(expectObject(j, path));
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : j.items()) {
    auto v = readString(value, joinPath(path, key), SIZE_MAX, true);
    if (!v.ok())
      return v.error();
    out.emplace(key, std::move(*v));
  }
  return out;
}

Status durationField(const json& obj, const std::string& path, std::string_view key, Duration& out,
                     bool zero_ok) {
  const json* v = find(obj, key);
  if (!v)
    return okStatus();
  auto r = readDuration(*v, joinPath(path, key), zero_ok);
  if (!r.ok())
    return r.error();
  out = *r;
  return okStatus();
}

Status boolField(const json& obj, const std::string& path, std::string_view key, bool& out) {
  const json* v = find(obj, key);
  if (!v)
    return okStatus();
  auto r = readBool(*v, joinPath(path, key));
  if (!r.ok())
    return r.error();
  out = *r;
  return okStatus();
}

// ---- names -------------------------------------------------------------------------------------

bool isDnsLabel(std::string_view s) {
  if (s.empty() || s.size() > 63 || !isAlnumLower(s.front()) || !isAlnumLower(s.back()))
    return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return isAlnumLower(c) || c == '-'; });
}

bool isDnsSubdomain(std::string_view s) {
  if (s.empty() || s.size() > 253)
    return false;
  size_t start = 0;
  while (true) {
    const size_t dot = s.find('.', start);
    const std::string_view label =
        s.substr(start, dot == std::string_view::npos ? s.npos : dot - start);
    // Kubernetes' subdomain regex allows labels longer than 63 only in theory; keep RFC 1123.
    if (!isDnsLabel(label))
      return false;
    if (dot == std::string_view::npos)
      return true;
    start = dot + 1;
  }
}

bool isDns1035Label(std::string_view s) {
  return isDnsLabel(s) && s.front() >= 'a' && s.front() <= 'z';
}

namespace {

bool isQualifiedNamePart(std::string_view s) {
  if (s.empty() || s.size() > 63 || !isAlnum(s.front()) || !isAlnum(s.back()))
    return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return isAlnum(c) || c == '-' || c == '_' || c == '.'; });
}

} // namespace

std::string qualifiedNameError(std::string_view s) {
  std::string_view name = s;
  if (const size_t slash = s.find('/'); slash != std::string_view::npos) {
    const std::string_view prefix = s.substr(0, slash);
    name = s.substr(slash + 1);
    if (!isDnsSubdomain(prefix))
      return fmt::format("invalid key \"{}\": the prefix before '/' must be a DNS subdomain "
                         "(lowercase letters, digits, '-' and '.', at most 253 characters)",
                         printable(s));
  }
  if (!isQualifiedNamePart(name))
    return fmt::format("invalid key \"{}\": the name must be 1 to 63 letters, digits, '-', '_' "
                       "or '.', starting and ending with a letter or digit",
                       printable(s));
  return "";
}

bool isLabelValue(std::string_view s) {
  return s.empty() || isQualifiedNamePart(s);
}

bool isHttpToken(std::string_view s) {
  if (s.empty())
    return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return isAlnum(c) || (c != '\0' && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr);
  });
}

bool hasControlChar(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t') || u == 0x7f;
  });
}

std::string toLower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

Result<std::shared_ptr<const std::regex>> compileRegex(const std::string& source,
                                                       const std::string& path) {
  if (source.empty() || source.size() > kMaxRegexLength)
    return fieldError(
        path, fmt::format("a regular expression must have 1 to {} characters", kMaxRegexLength));
  try {
    auto flags = std::regex::ECMAScript;
#ifdef __GLIBCXX__
    // The proxy matches with libstdc++'s polynomial (Thompson) matcher: no deep recursion, no
    // exponential patterns; it rejects back-references, so the same is rejected here.
    flags |= std::regex_constants::__polynomial;
#endif
    return std::make_shared<const std::regex>(source, flags);
  } catch (const std::regex_error& e) {
    return fieldError(path, fmt::format("invalid regular expression \"{}\": {}", source, e.what()));
  }
}

} // namespace trellis::manifest::detail
