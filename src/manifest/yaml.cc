#include "manifest/yaml.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <istream>
#include <memory>
#include <streambuf>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

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

// One YAML node as the parser reported it, before typing. Immutable once complete and shared:
// an alias is one more reference to its anchor's Value, never a copy, so memory follows the
// text while `nodes`, `bytes` and `height` say what the node costs with aliases expanded.
struct Value {
  enum class Kind : uint8_t { kNull, kPlain, kString, kSequence, kMap };
  Kind kind = Kind::kNull;
  YAML::Mark mark;
  std::string text; // scalars
  std::string tag;  // a scalar's tag other than none, "!" and !!str: an error when typed
  std::vector<std::shared_ptr<const Value>> items; // a sequence's items; a map's key, value, ...
  size_t nodes = 1;                                // this node and every node below it
  size_t bytes = 0;                                // scalar bytes, keys included
  size_t height = 0; // levels below this node (0 for a scalar, 1 for a list of scalars)

  bool isScalar() const { return kind == Kind::kPlain || kind == Kind::kString; }
};
using ValuePtr = std::shared_ptr<const Value>;

constexpr std::string_view kStrTag = "tag:yaml.org,2002:str";

// "document 2, line 7", the place every error after parsing starts with.
std::string where(size_t document, const YAML::Mark& mark) {
  return mark.line >= 0 ? fmt::format("document {}, line {}", document, mark.line + 1)
                        : fmt::format("document {}", document);
}

Error located(size_t document, const YAML::Mark& mark, const std::string& path,
              std::string_view msg) {
  if (path.empty())
    return makeError(ErrorCode::kInvalidArgument, "{}: {}", where(document, mark), msg);
  return makeError(ErrorCode::kInvalidArgument, "{}: {}: {}", where(document, mark), path, msg);
}

// Types one document's Values as JSON (YAML 1.2 core schema). The parser has already bounded
// the work: at most kMaxNodesPerFile nodes, kMaxNestingDepth levels, aliases expanded.
class Converter {
public:
  explicit Converter(size_t document) : document_(document) {}

  Result<nlohmann::json> convert(const Value& v) {
    switch (v.kind) {
    case Value::Kind::kNull:
      return nlohmann::json();
    case Value::Kind::kPlain:
    case Value::Kind::kString:
      return scalar(v);
    case Value::Kind::kSequence: {
      nlohmann::json out = nlohmann::json::array();
      for (size_t i = 0; i < v.items.size(); ++i) {
        path_.push_back({true, i, {}});
        auto item = convert(*v.items[i]);
        path_.pop_back();
        if (!item.ok())
          return item;
        out.push_back(std::move(*item));
      }
      return out;
    }
    case Value::Kind::kMap: {
      nlohmann::json out = nlohmann::json::object();
      for (size_t i = 0; i + 1 < v.items.size(); i += 2) {
        const Value& key = *v.items[i];
        if (!key.isScalar())
          return error(key, "mapping keys must be strings");
        path_.push_back({false, 0, key.text});
        if (out.contains(key.text))
          return error(key, "duplicate key");
        auto item = convert(*v.items[i + 1]);
        path_.pop_back();
        if (!item.ok())
          return item;
        out.emplace(key.text, std::move(*item));
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
    std::string_view key; // points into a Value, alive while it is converted
  };

  Error error(const Value& v, std::string_view msg) const {
    std::string path;
    for (const Step& s : path_)
      path = s.is_index ? indexPath(path, s.index) : joinPath(path, s.key);
    return located(document_, v.mark, path, msg);
  }

  Result<nlohmann::json> scalar(const Value& v) {
    const std::string& s = v.text;
    if (!v.tag.empty())
      return error(v, fmt::format("unsupported YAML tag \"{}\"", printable(v.tag)));
    if (v.kind == Value::Kind::kString)
      return nlohmann::json(s);
    if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL")
      return nlohmann::json();
    if (s == "true" || s == "True" || s == "TRUE")
      return nlohmann::json(true);
    if (s == "false" || s == "False" || s == "FALSE")
      return nlohmann::json(false);
    if (isDecimalInt(s)) {
      const char* begin = s.data() + (s[0] == '+' ? 1 : 0);
      int64_t i = 0;
      auto [ptr, ec] = std::from_chars(begin, s.data() + s.size(), i);
      if (ec == std::errc() && ptr == s.data() + s.size())
        return nlohmann::json(i);
      uint64_t u = 0;
      auto [uptr, uec] = std::from_chars(begin, s.data() + s.size(), u);
      if (uec == std::errc() && uptr == s.data() + s.size())
        return nlohmann::json(u);
      return error(v, fmt::format("integer {} is out of range", printable(s)));
    }
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
      const int base = s[1] == 'x' ? 16 : 8;
      uint64_t u = 0;
      auto [ptr, ec] = std::from_chars(s.data() + 2, s.data() + s.size(), u, base);
      if (ec == std::errc() && ptr == s.data() + s.size())
        return nlohmann::json(u);
      if (ec == std::errc::result_out_of_range)
        return error(v, fmt::format("integer {} is out of range", printable(s)));
    }
    if (isFloat(s)) {
      double d = 0;
      auto [ptr, ec] = std::from_chars(s.data() + (s[0] == '+' ? 1 : 0), s.data() + s.size(), d);
      if (ec == std::errc() && ptr == s.data() + s.size() && std::isfinite(d))
        return nlohmann::json(d);
      return error(v, fmt::format("number {} is out of range", printable(s)));
    }
    for (std::string_view special : {".inf", ".Inf", ".INF", "-.inf", "-.Inf", "-.INF", "+.inf",
                                     "+.Inf", "+.INF", ".nan", ".NaN", ".NAN"}) {
      if (s == special)
        return error(v, fmt::format("{} is not supported (numbers must be finite)", s));
    }
    return nlohmann::json(s);
  }

  size_t document_;
  std::vector<Step> path_;
};

// Thrown by DocumentBuilder to stop yaml-cpp's parser mid-document, which has no other way to
// be stopped; caught in yamlDocuments and never seen outside this file.
struct Stop {
  Error error;
};

// Receives yaml-cpp's parse events and builds each document's Values, enforcing the limits
// while parsing: a hostile text is stopped at the event that crosses a limit, before memory or
// time grow with it. (yaml-cpp's own node tree costs ~0.5 KiB per node and has no limits.)
class DocumentBuilder final : public YAML::EventHandler {
public:
  explicit DocumentBuilder(std::string_view text) : text_(text) {}

  std::vector<nlohmann::json> takeDocuments() { return std::move(documents_); }

  // YAML::EventHandler
  void OnDocumentStart(const YAML::Mark& mark) override {
    // yaml-cpp 0.7 ends a document without consuming a token it cannot place at the top level
    // (a stray `,`, for one) and then reports the same token as the start of the next
    // document, endlessly (jbeder/yaml-cpp#1040). A document that starts where the previous
    // one started consumed nothing: that loop.
    if (!documents_.empty() && mark.pos == document_mark_.pos)
      throw Stop{unexpectedToken(mark)};
    if (documents_.size() == kMaxDocumentsPerFile)
      throw Stop{
          located(documents_.size() + 1, mark, "",
                  fmt::format("more than {} documents, the limit per file", kMaxDocumentsPerFile))};
    document_mark_ = mark;
    root_.reset();
    stack_.clear();
    anchors_.clear(); // anchors are per document
  }

  void OnDocumentEnd() override {
    Converter converter(documents_.size() + 1);
    auto doc = root_ ? converter.convert(*root_) : nlohmann::json();
    if (!doc.ok())
      throw Stop{doc.error()};
    documents_.push_back(std::move(*doc));
    root_.reset();
    anchors_.clear();
  }

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    auto v = std::make_shared<Value>();
    v->mark = mark;
    count(*v, 0);
    add(std::move(v), anchor);
  }

  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& text) override {
    auto v = std::make_shared<Value>();
    v->mark = mark;
    // "?" is a plain scalar, typed by the core schema; "!" a quoted or block one.
    v->kind = tag == "?" ? Value::Kind::kPlain : Value::Kind::kString;
    if (tag != "?" && tag != "!" && tag != kStrTag)
      v->tag = tag;
    count(*v, text.size());
    v->text = text;
    v->bytes = text.size();
    add(std::move(v), anchor);
  }

  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (anchor == YAML::NullAnchor || anchor > anchors_.size())
      throw Stop{error(mark, "alias to an unknown anchor")};
    const Anchor& a = anchors_[anchor - 1];
    if (!a.value)
      throw Stop{error(
          mark, fmt::format("alias *{} refers to a value that contains it", printable(a.name)))};
    const ValuePtr& v = a.value;
    if (stack_.size() + v->height > kMaxNestingDepth)
      throw Stop{error(mark, fmt::format("alias *{} nests values more than {} levels deep",
                                         printable(a.name), kMaxNestingDepth))};
    nodes_ += v->nodes;
    bytes_ += v->bytes;
    if (nodes_ > kMaxNodesPerFile)
      throw Stop{error(mark, fmt::format("alias *{}: {}", printable(a.name), tooManyNodes()))};
    if (bytes_ > kMaxExpandedBytesPerFile)
      throw Stop{error(mark, fmt::format("alias *{}: {}", printable(a.name), tooManyBytes()))};
    add(v, YAML::NullAnchor);
  }

  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(Value::Kind::kSequence, mark, anchor);
  }
  void OnSequenceEnd() override { close(); }

  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open(Value::Kind::kMap, mark, anchor);
  }
  void OnMapEnd() override { close(); }

  void OnAnchor(const YAML::Mark&, const std::string& name) override {
    // yaml-cpp numbers a document's anchors 1, 2, ... in the order it reports them here; the
    // node that carries one follows, and its Value is filled in when the node is complete.
    anchors_.push_back({name, nullptr});
  }

private:
  struct Anchor {
    std::string name;
    ValuePtr value; // null while the anchored node is still open
  };
  struct Frame {
    std::shared_ptr<Value> value;
    YAML::anchor_t anchor;
  };

  std::string tooManyNodes() const {
    return fmt::format("more than {} YAML nodes in the file (keys and values, aliases expanded)",
                       kMaxNodesPerFile);
  }
  std::string tooManyBytes() const {
    return fmt::format("more than {} bytes of keys and values in the file (aliases expanded)",
                       kMaxExpandedBytesPerFile);
  }

  // The path to the node about to be added, as the Converter would name it.
  std::string path() const {
    std::string out;
    for (const Frame& f : stack_) {
      const Value& v = *f.value;
      if (v.kind == Value::Kind::kSequence)
        out = indexPath(out, v.items.size());
      else if (v.items.size() % 2 == 1) // the value of the last key
        out = joinPath(out, v.items.back()->isScalar() ? v.items.back()->text : "?");
    }
    return out;
  }

  Error error(const YAML::Mark& mark, std::string_view msg) const {
    return located(documents_.size() + 1, mark, path(), msg);
  }

  // Names the character at `mark` when the mark can be mapped back to a byte of the text:
  // yaml-cpp counts positions in its UTF-8 decoding, which is the text itself unless the text
  // starts like UTF-16 or UTF-32 (a NUL in its first two bytes, an FE FF or FF FE mark), less
  // a UTF-8 byte order mark.
  Error unexpectedToken(const YAML::Mark& mark) const {
    const bool utf8 = !(text_.size() > 0 && text_[0] == '\0') &&
                      !(text_.size() > 1 && text_[1] == '\0') && !text_.starts_with("\xfe\xff") &&
                      !text_.starts_with("\xff\xfe");
    const size_t bom = text_.starts_with("\xef\xbb\xbf") ? 3 : 0;
    const size_t pos = bom + static_cast<size_t>(std::max(mark.pos, 0));
    if (utf8 && pos < text_.size() && text_[pos] > ' ' && text_[pos] < 0x7f)
      return makeError(ErrorCode::kInvalidArgument,
                       "invalid YAML at line {}, column {}: unexpected \"{}\"", mark.line + 1,
                       mark.column + 1, text_[pos]);
    return makeError(ErrorCode::kInvalidArgument,
                     "invalid YAML at line {}, column {}: unexpected token", mark.line + 1,
                     mark.column + 1);
  }

  // Charges one new node (and its scalar bytes) to the file's budgets; checks its depth.
  void count(const Value& v, size_t bytes) {
    if (stack_.size() > kMaxNestingDepth)
      throw Stop{error(v.mark, fmt::format("nested more than {} levels deep", kMaxNestingDepth))};
    if (++nodes_ > kMaxNodesPerFile)
      throw Stop{error(v.mark, tooManyNodes())};
    bytes_ += bytes;
    if (bytes_ > kMaxExpandedBytesPerFile)
      throw Stop{error(v.mark, tooManyBytes())};
  }

  void open(Value::Kind kind, const YAML::Mark& mark, YAML::anchor_t anchor) {
    auto v = std::make_shared<Value>();
    v->kind = kind;
    v->mark = mark;
    count(*v, 0);
    stack_.push_back({std::move(v), anchor});
  }

  void close() {
    Frame f = std::move(stack_.back());
    stack_.pop_back();
    add(std::move(f.value), f.anchor);
  }

  // Puts a complete node into its parent (or makes it the document's root).
  void add(ValuePtr v, YAML::anchor_t anchor) {
    if (anchor != YAML::NullAnchor && anchor <= anchors_.size())
      anchors_[anchor - 1].value = v;
    if (stack_.empty()) {
      root_ = std::move(v);
      return;
    }
    Value& parent = *stack_.back().value;
    parent.nodes += v->nodes;
    parent.bytes += v->bytes;
    parent.height = std::max(parent.height, v->height + 1);
    parent.items.push_back(std::move(v));
  }

  std::string_view text_;
  std::vector<nlohmann::json> documents_;
  YAML::Mark document_mark_;
  ValuePtr root_;
  std::vector<Frame> stack_; // the open collections, outermost first
  std::vector<Anchor> anchors_;
  // Budgets across the whole file, so aliases cannot multiply memory ("billion laughs").
  size_t nodes_ = 0;
  size_t bytes_ = 0;
};

// A read-only stream over the caller's text (yaml-cpp reads a std::istream; this saves
// copying up to kMaxFileBytes). Nothing writes through the get area.
class TextBuffer final : public std::streambuf {
public:
  explicit TextBuffer(std::string_view text) {
    char* p = const_cast<char*>(text.data());
    setg(p, p, p + text.size());
  }
};

} // namespace

Result<std::vector<nlohmann::json>> yamlDocuments(std::string_view text) {
  TextBuffer buffer(text);
  std::istream in(&buffer);
  DocumentBuilder builder(text);
  try {
    YAML::Parser parser(in);
    while (parser.HandleNextDocument(builder)) {
    }
  } catch (Stop& stop) {
    return std::move(stop.error);
  } catch (const YAML::Exception& e) {
    if (e.mark.line >= 0)
      return makeError(ErrorCode::kInvalidArgument, "invalid YAML at line {}, column {}: {}",
                       e.mark.line + 1, e.mark.column + 1, e.msg);
    return makeError(ErrorCode::kInvalidArgument, "invalid YAML: {}", e.msg);
  } catch (const std::exception& e) {
    return makeError(ErrorCode::kInvalidArgument, "invalid YAML: {}", e.what());
  }
  return builder.takeDocuments();
}

} // namespace trellis::manifest::detail
