#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"

namespace trellis::http {

// Name/value pairs of a query string, decoded, in order. A bare name ("?recurse") has an
// empty value.
using QueryParams = std::vector<std::pair<std::string, std::string>>;

// Decodes %XX escapes (and '+' as a space when `plus_as_space`). A '%' not followed by two
// hex digits is an error naming the text.
Result<std::string> percentDecode(std::string_view text, bool plus_as_space = false);

// Escapes every byte outside RFC 3986 unreserved characters (and '/' when `keep_slash`).
std::string percentEncode(std::string_view text, bool keep_slash = false);

// Parses "a=1&b=x%20y&flag" (form encoding: '+' is a space). Empty pieces ("a=1&&b") are
// skipped.
Result<QueryParams> parseQuery(std::string_view query);

// The path and query of a request-target (origin-form or absolute-form); the query excludes
// the '?'. For absolute-form the scheme and authority are dropped ("http://h/p?q" → "/p", "q";
// "http://h" → "/", "").
struct TargetParts {
  std::string_view path;
  std::string_view query;
};
TargetParts splitTarget(std::string_view target);

} // namespace trellis::http
