#include "manifest/yaml.h"

#include <charconv>
#include <cmath>
#include <regex>

#include <yaml-cpp/yaml.h>

#include "manifest/manifest.h"
#include "manifest/reader.h"

namespace trellis::manifest::detail {

namespace {

bool isDecimalInt(std::string_view s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  if (i == s.size())
    return false;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9')
      return false;
  }
  return true;
}

bool isFloat(std::string_view s) {
  // [-+]? ( \.[0-9]+ | [0-9]+ ( \.[0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  size_t int_digits = 0, frac_digits = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    ++i;
    ++int_digits;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      ++i;
      ++frac_digits;
    }
  }
  if (int_digits == 0 && frac_digits == 0)
    return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+'))
      ++i;
    size_t exp_digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      ++i;
      ++exp_digits;
    }
    if (exp_digits == 0)
      return false;
  }
  return i == s.size();
}

class Converter {
public:
  // Documents are converted in order with one Converter, so the budgets cover the file.
  void startDocument(size_t document) {
    document_ = document;
    path_.clear();
  }

  Result<nlohmann::json> convert(const YAML::Node& node, size_t depth) {
    if (++nodes_ > kMaxNodesPerFile)
      return error(node, fmt::format("more than {} values (aliases expanded)", kMaxNodesPerFile));
    if (depth > kMaxNestingDepth)
      return error(node, fmt::format("nested more than {} levels deep", kMaxNestingDepth));
    switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      return nlohmann::json();
    case YAML::NodeType::Scalar:
      return scalar(node);
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      size_t i = 0;
      for (auto it = node.begin(); it != node.end(); ++it) {
        const YAML::Node item = *it;
        path_.push_back({true, i++, {}});
        auto v = convert(item, depth + 1);
        path_.pop_back();
        if (!v.ok())
          return v;
        out.push_back(std::move(*v));
      }
      return out;
    }
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (auto it = node.begin(); it != node.end(); ++it) {
        // Copies: the iterator's pair is a temporary.
        const YAML::Node key = it->first;
        const YAML::Node value = it->second;
        if (!key.IsScalar())
          return error(key, "mapping keys must be strings");
        const std::string& k = key.Scalar();
        bytes_ += k.size();
        path_.push_back({false, 0, k});
        if (out.contains(k))
          return error(key, "duplicate key");
        auto v = convert(value, depth + 1);
        path_.pop_back();
        if (!v.ok())
          return v;
        out.emplace(k, std::move(*v));
      }
      return out;
    }
    }
    return nlohmann::json();
  }

private:
  // One step of the path to the node being converted; the path string is only built for an
  // error, so long keys cost nothing on the way.
  struct Step {
    bool is_index;
    size_t index;
    std::string_view key; // points into the YAML node, alive while it is converted
  };

  Error error(const YAML::Node& node, std::string_view msg) const {
    const YAML::Mark mark = node.Mark();
    std::string where = mark.line >= 0
                            ? fmt::format("document {}, line {}", document_, mark.line + 1)
                            : fmt::format("document {}", document_);
    std::string path;
    for (const Step& s : path_)
      path = s.is_index ? indexPath(path, s.index) : joinPath(path, s.key);
    if (path.empty())
      return makeError(ErrorCode::kInvalidArgument, "{}: {}", where, msg);
    return makeError(ErrorCode::kInvalidArgument, "{}: {}: {}", where, path, msg);
  }

  Result<nlohmann::json> scalar(const YAML::Node& node) {
    const std::string& s = node.Scalar();
    bytes_ += s.size();
    if (bytes_ > kMaxExpandedBytesPerFile)
      return error(node, fmt::format("more than {} bytes of values (aliases expanded)",
                                     kMaxExpandedBytesPerFile));
    const std::string& tag = node.Tag();
    // "!" marks a quoted or block scalar: always a string.
    if (tag == "!" || tag == "tag:yaml.org,2002:str")
      return nlohmann::json(s);
    if (tag != "?")
      return error(node, fmt::format("unsupported YAML tag \"{}\"", tag));
    if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL")
      return nlohmann::json();
    if (s == "true" || s == "True" || s == "TRUE")
      return nlohmann::json(true);
    if (s == "false" || s == "False" || s == "FALSE")
      return nlohmann::json(false);
    if (isDecimalInt(s)) {
      const char* begin = s.data() + (s[0] == '+' ? 1 : 0);
      int64_t v = 0;
      auto [ptr, ec] = std::from_chars(begin, s.data() + s.size(), v);
      if (ec == std::errc() && ptr == s.data() + s.size())
        return nlohmann::json(v);
      uint64_t u = 0;
      auto [uptr, uec] = std::from_chars(begin, s.data() + s.size(), u);
      if (uec == std::errc() && uptr == s.data() + s.size())
        return nlohmann::json(u);
      return error(node, fmt::format("integer {} is out of range", s));
    }
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
      const int base = s[1] == 'x' ? 16 : 8;
      uint64_t u = 0;
      auto [ptr, ec] = std::from_chars(s.data() + 2, s.data() + s.size(), u, base);
      if (ec == std::errc() && ptr == s.data() + s.size())
        return nlohmann::json(u);
      if (ec == std::errc::result_out_of_range)
        return error(node, fmt::format("integer {} is out of range", s));
    }
    if (isFloat(s)) {
      double d = 0;
      auto [ptr, ec] = std::from_chars(s.data() + (s[0] == '+' ? 1 : 0), s.data() + s.size(), d);
      if (ec == std::errc() && ptr == s.data() + s.size() && std::isfinite(d))
        return nlohmann::json(d);
      return error(node, fmt::format("number {} is out of range", s));
    }
    for (std::string_view special : {".inf", ".Inf", ".INF", "-.inf", "-.Inf", "-.INF", "+.inf",
                                     "+.Inf", "+.INF", ".nan", ".NaN", ".NAN"}) {
      if (s == special)
        return error(node, fmt::format("{} is not supported (numbers must be finite)", s));
    }
    return nlohmann::json(s);
  }

  size_t document_ = 1;
  std::vector<Step> path_;
  // Budgets across the whole file, so aliases cannot multiply memory ("billion laughs").
  size_t nodes_ = 0;
  size_t bytes_ = 0;
};

} // namespace

Result<std::vector<nlohmann::json>> yamlDocuments(std::string_view text) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(std::string(text));
  } catch (const YAML::Exception& e) {
    if (e.mark.line >= 0)
      return makeError(ErrorCode::kInvalidArgument, "invalid YAML at line {}, column {}: {}",
                       e.mark.line + 1, e.mark.column + 1, e.msg);
    return makeError(ErrorCode::kInvalidArgument, "invalid YAML: {}", e.msg);
  } catch (const std::exception& e) {
    return makeError(ErrorCode::kInvalidArgument, "invalid YAML: {}", e.what());
  }
  if (docs.size() > kMaxDocumentsPerFile)
    return makeError(ErrorCode::kInvalidArgument, "{} documents, at most {} allowed per file",
                     docs.size(), kMaxDocumentsPerFile);
  Converter c;
  std::vector<nlohmann::json> out;
  out.reserve(docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    c.startDocument(i + 1);
    try {
      auto v = c.convert(docs[i], 0);
      if (!v.ok())
        return v.error();
      out.push_back(std::move(*v));
    } catch (const std::exception& e) {
      return makeError(ErrorCode::kInvalidArgument, "document {}: {}", i + 1, e.what());
    }
  }
  return out;
}

} // namespace trellis::manifest::detail
