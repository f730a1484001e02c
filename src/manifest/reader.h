#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <regex>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/result.h"
#include "base/units.h"

// Reading validated values out of a resource document (JSON, or YAML converted to JSON).
// Internal to the manifest module. Every error is `PATH: what is wrong`, PATH being the field
// path from the document root (`spec.rules[0].matches[1].path.value`); the caller prepends the
// file and document.

namespace trellis::manifest::detail {

using nlohmann::json;

// "a string", "an integer", "a mapping", ... for messages.
const char* typeName(const json& j);

Error fieldError(const std::string& path, std::string_view message);
// `text` made safe to quote in a message: control bytes as \xNN, at most `max` bytes kept
// ("..." marks the cut), so hostile input cannot flood a terminal or a log.
std::string printable(std::string_view text, size_t max = 64);
// path.key, the key shown as printable() (so a 1 MiB key does not make a 1 MiB message).
std::string joinPath(const std::string& path, std::string_view key);
std::string indexPath(const std::string& path, size_t i);

Status expectObject(const json& j, const std::string& path);
// A list of at most `max_items` entries (and at least `min_items`).
Status expectList(const json& j, const std::string& path, size_t min_items, size_t max_items);

// Rejects keys of `obj` (an object) not in `allowed`, suggesting the closest allowed key
// (also across spellings: `per_try_timeout` -> "perTryTimeout").
Status checkKeys(const json& obj, const std::string& path,
                 std::initializer_list<std::string_view> allowed);

// The value of obj[key], or nullptr when absent or null (Kubernetes treats both alike).
const json* find(const json& obj, std::string_view key);

Error missing(const std::string& path, std::string_view key);

Result<std::string> readString(const json& j, const std::string& path, size_t max_length,
                               bool empty_ok = false);
Result<int64_t> readInt(const json& j, const std::string& path, int64_t min, int64_t max);
Result<double> readNumber(const json& j, const std::string& path, double min, double max);
Result<bool> readBool(const json& j, const std::string& path);
// The proxy's duration format ("250ms", "1m30s"; bare "0"), at most kMaxDuration.
Result<Duration> readDuration(const json& j, const std::string& path, bool zero_ok);
// A mapping of string to string.
Result<std::map<std::string, std::string>> readStringMap(const json& j, const std::string& path);

// Reads obj[key] when present into `out` (an integer type) with range [min, max].
template <typename T>
Status intField(const json& obj, const std::string& path, std::string_view key, T& out, int64_t min,
                int64_t max) {
  const json* v = find(obj, key);
  if (!v)
    return okStatus();
  auto r = readInt(*v, joinPath(path, key), min, max);
  if (!r.ok())
    return r.error();
  out = static_cast<T>(*r);
  return okStatus();
}

Status durationField(const json& obj, const std::string& path, std::string_view key, Duration& out,
                     bool zero_ok);
Status boolField(const json& obj, const std::string& path, std::string_view key, bool& out);

// Name checks, as Kubernetes applies them.
bool isDnsLabel(std::string_view s);     // RFC 1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, <= 63
bool isDnsSubdomain(std::string_view s); // dot-separated labels, <= 253
bool isDns1035Label(std::string_view s); // a label that starts with a letter (Service names)
// A label or annotation key: [prefix/]name, prefix a DNS subdomain, name <= 63 characters of
// alphanumerics, '-', '_', '.', starting and ending alphanumeric. Returns why it is not.
std::string qualifiedNameError(std::string_view s);
// A label value: empty, or <= 63 characters like a qualified name's name part.
bool isLabelValue(std::string_view s);

bool isHttpToken(std::string_view s);
bool hasControlChar(std::string_view s); // CR, LF, NUL, ... (header injection)
std::string toLower(std::string_view s);

// Compiles `source` with the proxy's regex settings (ECMAScript, linear-time matcher).
Result<std::shared_ptr<const std::regex>> compileRegex(const std::string& source,
                                                       const std::string& path);
constexpr size_t kMaxRegexLength = 1024; // as the proxy's

// Durations are at most this long (so every duration prints in the Gateway API's format).
constexpr Duration kMaxDuration = std::chrono::hours(99999);

} // namespace trellis::manifest::detail
