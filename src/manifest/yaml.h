#pragma once

#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.h"

// YAML text to JSON values, one per document, with YAML 1.2 core-schema typing (plain `80` is
// an integer, `"80"` a string, `true`/`false` booleans; `yes`/`on` stay strings). Internal to
// the manifest module.

namespace trellis::manifest::detail {

// Every document of `text` in order; an empty document is a null value. Rejects duplicate
// keys, non-scalar keys, custom tags, non-finite numbers, integers beyond 64 bits, aliases to a
// value that contains them, nesting past kMaxNestingDepth, more than kMaxDocumentsPerFile
// documents, and more than kMaxNodesPerFile nodes or kMaxExpandedBytesPerFile bytes (aliases
// expanded). The limits are enforced while yaml-cpp parses, at the event that crosses them, so
// time and memory stay proportional to the limits whatever the text. Errors read `invalid YAML
// at line 3, column 5: ...` or `document 2, line 7: spec.rules: duplicate key`. Never throws.
Result<std::vector<nlohmann::json>> yamlDocuments(std::string_view text);

} // namespace trellis::manifest::detail
