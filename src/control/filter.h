#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

// The ?filter= expressions of Consul's list endpoints (a subset of go-bexpr):
//   Selector == "value"      Selector != "value"
//   Selector contains "v"    Selector not contains "v"    (lists: element; maps: key;
//   "v" in Selector          "v" not in Selector           strings: substring)
//   Selector is empty        Selector is not empty
// combined with `and`, `or`, `not` and parentheses. Values are "double-quoted" or `backquoted`
// strings, or bare words/numbers. Selectors are dotted paths ("ServiceMeta.version"); which
// ones exist depends on the endpoint (docs/api.md).
namespace trellis::control {

// What a selector resolves to for one entry.
struct FieldValue {
  enum class Kind { kMissing, kString, kList, kMap };
  Kind kind = Kind::kMissing;
  std::string str;
  std::vector<std::string> list;
  std::map<std::string, std::string> map;

  static FieldValue string(std::string s) {
    FieldValue v;
    v.kind = Kind::kString;
    v.str = std::move(s);
    return v;
  }
  static FieldValue ofList(std::vector<std::string> l) {
    FieldValue v;
    v.kind = Kind::kList;
    v.list = std::move(l);
    return v;
  }
  static FieldValue ofMap(std::map<std::string, std::string> m) {
    FieldValue v;
    v.kind = Kind::kMap;
    v.map = std::move(m);
    return v;
  }
};

// Resolves a selector against the entry being tested.
using FieldResolver = std::function<FieldValue(std::string_view selector)>;
// Says whether a selector exists for the endpoint (checked once, at parse time).
using SelectorCheck = std::function<bool(std::string_view selector)>;

// Expressions longer than this, or nested deeper, are refused.
inline constexpr size_t kMaxFilterLength = 4096;
inline constexpr size_t kMaxFilterDepth = 32;

class Filter {
public:
  // Parses `text`; errors say what was expected and where ("filter: position 12: expected a
  // value"). Unknown selectors are an error.
  static Result<Filter> parse(std::string_view text, const SelectorCheck& known);

  bool matches(const FieldResolver& resolve) const;

  struct Node;

private:
  explicit Filter(std::shared_ptr<const Node> root) : root_(std::move(root)) {}
  std::shared_ptr<const Node> root_;
};

} // namespace trellis::control
