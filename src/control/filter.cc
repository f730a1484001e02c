#include "control/filter.h"

#include <cctype>

#include <fmt/format.h>

namespace trellis::control {

struct Filter::Node {
  enum class Op { kAnd, kOr, kNot, kEq, kNe, kContains, kNotContains, kEmpty, kNotEmpty };
  Op op = Op::kEq;
  std::shared_ptr<const Node> left, right; // kAnd/kOr: both; kNot: left
  std::string selector;
  std::string value;
};

namespace {

using NodePtr = std::shared_ptr<const Filter::Node>;
using Op = Filter::Node::Op;

class Parser {
public:
  Parser(std::string_view text, const SelectorCheck& known) : text_(text), known_(known) {}

  Result<NodePtr> parseAll() {
    auto n = parseOr(0);
    if (!n)
      return n;
    skipSpace();
    if (pos_ != text_.size())
      return fail("unexpected text");
    return n;
  }

private:
  Error fail(std::string_view what) const {
    return makeError(ErrorCode::kInvalidArgument, "filter: position {}: {}", pos_ + 1, what);
  }
  void skipSpace() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_])))
      ++pos_;
  }
  static bool wordChar(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' ||
           c == '/' || c == ':';
  }
  // Consumes keyword `kw` when it is the next whole word.
  bool keyword(std::string_view kw) {
    skipSpace();
    if (text_.substr(pos_, kw.size()) != kw)
      return false;
    size_t end = pos_ + kw.size();
    if (end < text_.size() && wordChar(text_[end]))
      return false;
    pos_ = end;
    return true;
  }
  bool symbol(std::string_view s) {
    skipSpace();
    if (text_.substr(pos_, s.size()) != s)
      return false;
    pos_ += s.size();
    return true;
  }
  std::string word() {
    skipSpace();
    size_t start = pos_;
    while (pos_ < text_.size() && wordChar(text_[pos_]))
      ++pos_;
    return std::string(text_.substr(start, pos_ - start));
  }
  Result<std::string> value() {
    skipSpace();
    if (pos_ < text_.size() && (text_[pos_] == '"' || text_[pos_] == '`')) {
      char q = text_[pos_++];
      std::string out;
      while (pos_ < text_.size() && text_[pos_] != q) {
        if (q == '"' && text_[pos_] == '\\' && pos_ + 1 < text_.size())
          ++pos_;
        out += text_[pos_++];
      }
      if (pos_ >= text_.size())
        return fail("unterminated string");
      ++pos_;
      return out;
    }
    std::string w = word();
    if (w.empty())
      return fail("expected a value");
    return w;
  }
  Result<std::string> selector() {
    std::string s = word();
    if (s.empty())
      return fail("expected a selector");
    if (!known_(s))
      return makeError(ErrorCode::kInvalidArgument, "filter: unknown selector \"{}\"", s);
    return s;
  }

  Result<NodePtr> parseOr(size_t depth) {
    auto l = parseAnd(depth);
    if (!l)
      return l;
    NodePtr left = *l;
    while (keyword("or")) {
      auto r = parseAnd(depth);
      if (!r)
        return r;
      auto n = std::make_shared<Filter::Node>();
      n->op = Op::kOr;
      n->left = left;
      n->right = *r;
      left = n;
    }
    return left;
  }
  Result<NodePtr> parseAnd(size_t depth) {
    auto l = parseUnary(depth);
    if (!l)
      return l;
    NodePtr left = *l;
    while (keyword("and")) {
      auto r = parseUnary(depth);
      if (!r)
        return r;
      auto n = std::make_shared<Filter::Node>();
      n->op = Op::kAnd;
      n->left = left;
      n->right = *r;
      left = n;
    }
    return left;
  }
  Result<NodePtr> parseUnary(size_t depth) {
    if (depth > kMaxFilterDepth)
      return fail("expression nested too deeply");
    if (keyword("not")) {
      auto inner = parseUnary(depth + 1);
      if (!inner)
        return inner;
      auto n = std::make_shared<Filter::Node>();
      n->op = Op::kNot;
      n->left = *inner;
      return NodePtr(n);
    }
    if (symbol("(")) {
      auto inner = parseOr(depth + 1);
      if (!inner)
        return inner;
      if (!symbol(")"))
        return fail("expected ')'");
      return inner;
    }
    return parseMatch();
  }
  Result<NodePtr> parseMatch() {
    auto n = std::make_shared<Filter::Node>();
    skipSpace();
    // `"value" in Selector` starts with a value.
    bool quoted = pos_ < text_.size() && (text_[pos_] == '"' || text_[pos_] == '`');
    size_t save = pos_;
    if (!quoted) {
      auto sel = selector();
      if (!sel) {
        // A bare value followed by in / not in.
        pos_ = save;
        std::string w = word();
        if (w.empty() || !(keyword("in") || (keyword("not") && keyword("in"))))
          return sel.error();
        pos_ = save;
      } else {
        n->selector = *sel;
        if (symbol("==")) {
          n->op = Op::kEq;
        } else if (symbol("!=")) {
          n->op = Op::kNe;
        } else if (keyword("contains")) {
          n->op = Op::kContains;
        } else if (keyword("is")) {
          bool neg = keyword("not");
          if (!keyword("empty"))
            return fail("expected 'empty'");
          n->op = neg ? Op::kNotEmpty : Op::kEmpty;
          return NodePtr(n);
        } else if (keyword("not")) {
          if (keyword("contains"))
            n->op = Op::kNotContains;
          else
            return fail("expected 'contains'");
        } else if (keyword("in")) {
          // `word in Selector` where the first word also named a selector.
          pos_ = save;
          goto in_form;
        } else {
          return fail("expected ==, !=, contains, not contains or is [not] empty");
        }
        auto v = value();
        if (!v)
          return v.error();
        n->value = *v;
        return NodePtr(n);
      }
    }
  in_form : {
    auto v = value();
    if (!v)
      return v.error();
    n->value = *v;
    if (keyword("in")) {
      n->op = Op::kContains;
    } else if (keyword("not") && keyword("in")) {
      n->op = Op::kNotContains;
    } else {
      return fail("expected 'in' or 'not in'");
    }
    auto sel = selector();
    if (!sel)
      return sel.error();
    n->selector = *sel;
    return NodePtr(n);
  }
  }

  std::string_view text_;
  const SelectorCheck& known_;
  size_t pos_ = 0;
};

bool contains(const FieldValue& f, const std::string& v) {
  switch (f.kind) {
  case FieldValue::Kind::kString:
    return f.str.find(v) != std::string::npos;
  case FieldValue::Kind::kList:
    for (const auto& e : f.list)
      if (e == v)
        return true;
    return false;
  case FieldValue::Kind::kMap:
    return f.map.count(v) != 0;
  case FieldValue::Kind::kMissing:
    return false;
  }
  return false;
}

bool empty(const FieldValue& f) {
  switch (f.kind) {
  case FieldValue::Kind::kString:
    return f.str.empty();
  case FieldValue::Kind::kList:
    return f.list.empty();
  case FieldValue::Kind::kMap:
    return f.map.empty();
  case FieldValue::Kind::kMissing:
    return true;
  }
  return true;
}

bool eval(const Filter::Node& n, const FieldResolver& resolve) {
  switch (n.op) {
  case Op::kAnd:
    return eval(*n.left, resolve) && eval(*n.right, resolve);
  case Op::kOr:
    return eval(*n.left, resolve) || eval(*n.right, resolve);
  case Op::kNot:
    return !eval(*n.left, resolve);
  default:
    break;
  }
  FieldValue f = resolve(n.selector);
  switch (n.op) {
  case Op::kEq:
    return f.kind == FieldValue::Kind::kString ? f.str == n.value
                                               : (f.kind == FieldValue::Kind::kMissing &&
                                                  n.value.empty());
  case Op::kNe:
    return !(f.kind == FieldValue::Kind::kString ? f.str == n.value
                                                 : (f.kind == FieldValue::Kind::kMissing &&
                                                    n.value.empty()));
  case Op::kContains:
    return contains(f, n.value);
  case Op::kNotContains:
    return !contains(f, n.value);
  case Op::kEmpty:
    return empty(f);
  case Op::kNotEmpty:
    return !empty(f);
  default:
    return false;
  }
}

} // namespace

Result<Filter> Filter::parse(std::string_view text, const SelectorCheck& known) {
  if (text.size() > kMaxFilterLength)
    return makeError(ErrorCode::kInvalidArgument, "filter: longer than {} bytes",
                     kMaxFilterLength);
  Parser p(text, known);
  auto root = p.parseAll();
  if (!root)
    return root.error();
  return Filter(*root);
}

bool Filter::matches(const FieldResolver& resolve) const { return eval(*root_, resolve); }

} // namespace trellis::control
