#include "dns/wire.h"

#include <algorithm>
#include <cassert>

namespace trellis::dns {

std::string rrTypeName(RrType type) {
  switch (type) {
  case RrType::kA:
    return "A";
  case RrType::kNs:
    return "NS";
  case RrType::kCname:
    return "CNAME";
  case RrType::kSoa:
    return "SOA";
  case RrType::kPtr:
    return "PTR";
  case RrType::kMx:
    return "MX";
  case RrType::kTxt:
    return "TXT";
  case RrType::kAaaa:
    return "AAAA";
  case RrType::kSrv:
    return "SRV";
  case RrType::kOpt:
    return "OPT";
  case RrType::kIxfr:
    return "IXFR";
  case RrType::kAxfr:
    return "AXFR";
  case RrType::kMailb:
    return "MAILB";
  case RrType::kMaila:
    return "MAILA";
  case RrType::kAny:
    return "ANY";
  }
  return fmt::format("TYPE{}", static_cast<uint16_t>(type));
}

std::string rcodeName(Rcode rcode) {
  switch (rcode) {
  case Rcode::kNoError:
    return "NOERROR";
  case Rcode::kFormErr:
    return "FORMERR";
  case Rcode::kServFail:
    return "SERVFAIL";
  case Rcode::kNxDomain:
    return "NXDOMAIN";
  case Rcode::kNotImp:
    return "NOTIMP";
  case Rcode::kRefused:
    return "REFUSED";
  case Rcode::kBadVers:
    return "BADVERS";
  }
  return fmt::format("RCODE{}", static_cast<uint16_t>(rcode));
}

const char* parseErrorCodeName(ParseErrorCode code) {
  switch (code) {
  case ParseErrorCode::kTruncatedHeader:
    return "truncated_header";
  case ParseErrorCode::kTruncated:
    return "truncated";
  case ParseErrorCode::kLabelTooLong:
    return "label_too_long";
  case ParseErrorCode::kNameTooLong:
    return "name_too_long";
  case ParseErrorCode::kBadPointer:
    return "bad_pointer";
  case ParseErrorCode::kBadRdata:
    return "bad_rdata";
  case ParseErrorCode::kTrailingData:
    return "trailing_data";
  case ParseErrorCode::kNotAQuery:
    return "not_a_query";
  case ParseErrorCode::kUnsupportedOpcode:
    return "unsupported_opcode";
  case ParseErrorCode::kBadQuestionCount:
    return "bad_question_count";
  case ParseErrorCode::kUnexpectedRecords:
    return "unexpected_records";
  case ParseErrorCode::kBadOpt:
    return "bad_opt";
  }
  return "unknown";
}

// ---- names ----

static char lowerChar(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
}

std::string asciiLower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = lowerChar(c);
  return out;
}

bool asciiEqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lowerChar(a[i]) != lowerChar(b[i]))
      return false;
  return true;
}

Result<Name> Name::fromLabels(std::vector<std::string> labels) {
  size_t total = 1;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i].empty())
      return makeError(ErrorCode::kInvalidArgument, "label {} is empty", i);
    if (labels[i].size() > kMaxLabelLength)
      return makeError(ErrorCode::kInvalidArgument, "label \"{}\" is {} bytes, more than {}",
                       labels[i], labels[i].size(), kMaxLabelLength);
    total += 1 + labels[i].size();
  }
  if (total > kMaxNameLength)
    return makeError(ErrorCode::kInvalidArgument, "name is {} bytes in wire form, more than {}",
                     total, kMaxNameLength);
  return Name(std::move(labels));
}

Result<Name> Name::fromString(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return makeError(ErrorCode::kInvalidArgument, "invalid name \"{}\": {}", text, why);
  };
  if (text.empty() || text == ".")
    return Name();
  std::vector<std::string> labels;
  std::string cur;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\\') {
      if (i + 1 >= text.size())
        return bad("dangling backslash");
      char n = text[i + 1];
      if (n >= '0' && n <= '9') {
        if (i + 3 >= text.size())
          return bad("\\DDD escape needs three digits");
        int v = 0;
        for (size_t k = 1; k <= 3; ++k) {
          char d = text[i + k];
          if (d < '0' || d > '9')
            return bad("\\DDD escape needs three digits");
          v = v * 10 + (d - '0');
        }
        if (v > 255)
          return bad("\\DDD escape above 255");
        cur.push_back(static_cast<char>(v));
        i += 3;
      } else {
        cur.push_back(n);
        i += 1;
      }
    } else if (c == '.') {
      if (cur.empty())
        return bad("empty label");
      labels.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  // An empty `cur` here means the text ended with an unescaped dot: the optional root dot.
  if (!cur.empty())
    labels.push_back(std::move(cur));
  auto r = fromLabels(std::move(labels));
  if (!r.ok())
    return r.error().withContext(fmt::format("invalid name \"{}\"", text));
  return r;
}

size_t Name::wireLength() const {
  size_t n = 1;
  for (const auto& l : labels_)
    n += 1 + l.size();
  return n;
}

std::string Name::toString() const {
  if (labels_.empty())
    return ".";
  std::string out;
  for (const auto& l : labels_) {
    for (unsigned char c : l) {
      if (c == '.' || c == '\\') {
        out.push_back('\\');
        out.push_back(static_cast<char>(c));
      } else if (c < 0x21 || c > 0x7e) {
        out += fmt::format("\\{:03d}", c);
      } else {
        out.push_back(static_cast<char>(c));
      }
    }
    out.push_back('.');
  }
  return out;
}

bool Name::equals(const Name& other) const {
  if (labels_.size() != other.labels_.size())
    return false;
  for (size_t i = 0; i < labels_.size(); ++i)
    if (!asciiEqualsIgnoreCase(labels_[i], other.labels_[i]))
      return false;
  return true;
}

bool Name::endsWith(const Name& suffix) const {
  if (suffix.labels_.size() > labels_.size())
    return false;
  size_t skip = labels_.size() - suffix.labels_.size();
  for (size_t i = 0; i < suffix.labels_.size(); ++i)
    if (!asciiEqualsIgnoreCase(labels_[skip + i], suffix.labels_[i]))
      return false;
  return true;
}

Name Name::lowercased() const {
  std::vector<std::string> out;
  out.reserve(labels_.size());
  for (const auto& l : labels_)
    out.push_back(asciiLower(l));
  return Name(std::move(out));
}

Name Name::concat(const Name& other) const {
  std::vector<std::string> out = labels_;
  out.insert(out.end(), other.labels_.begin(), other.labels_.end());
  assert(Name(out).wireLength() <= kMaxNameLength);
  return Name(std::move(out));
}

Rcode Message::rcode() const {
  uint16_t v = header.rcode;
  if (edns)
    v |= static_cast<uint16_t>(edns->extended_rcode) << 4;
  return static_cast<Rcode>(v);
}

// ---- parser ----

// Bounds-checked reading of one message. Every read checks the span first; a failed read
// records the error and every later read fails too, so callers check once per item.
class WireReader {
public:
  explicit WireReader(std::span<const uint8_t> msg) : msg_(msg) {}

  size_t offset() const { return pos_; }
  size_t remaining() const { return msg_.size() - pos_; }
  bool failed() const { return error_.has_value(); }
  const ParseError& error() const { return *error_; }

  void fail(ParseErrorCode code, size_t at, std::string message) {
    if (!error_)
      error_ = ParseError{code, at, std::move(message)};
  }

  bool need(size_t n, std::string_view what) {
    if (failed())
      return false;
    if (remaining() < n) {
      fail(ParseErrorCode::kTruncated, pos_,
           fmt::format("{} needs {} bytes at offset {} but only {} remain", what, n, pos_,
                       remaining()));
      return false;
    }
    return true;
  }

  uint8_t u8() { return msg_[pos_++]; }
  uint16_t u16() {
    uint16_t v = static_cast<uint16_t>((msg_[pos_] << 8) | msg_[pos_ + 1]);
    pos_ += 2;
    return v;
  }
  uint32_t u32() {
    uint32_t v = (uint32_t{msg_[pos_]} << 24) | (uint32_t{msg_[pos_ + 1]} << 16) |
                 (uint32_t{msg_[pos_ + 2]} << 8) | uint32_t{msg_[pos_ + 3]};
    pos_ += 4;
    return v;
  }
  void skip(size_t n) { pos_ += n; }
  std::span<const uint8_t> bytes(size_t n) {
    auto s = msg_.subspan(pos_, n);
    pos_ += n;
    return s;
  }

  // Reads a possibly compressed name starting at the current offset; the offset moves past
  // the name's bytes in place (a pointer is 2 bytes wherever it leads). Every pointer must
  // point strictly before the previous jump's target, so a chain always ends: loops and
  // forward pointers are rejected.
  std::optional<Name> name(std::string_view what) {
    if (failed())
      return std::nullopt;
    std::vector<std::string> labels;
    size_t wire_len = 1;
    size_t p = pos_;
    size_t limit = pos_; // a pointer must point below this
    bool jumped = false;
    for (;;) {
      if (p >= msg_.size()) {
        fail(ParseErrorCode::kTruncated, p,
             fmt::format("{}: name runs past the end of the message at offset {}", what, p));
        return std::nullopt;
      }
      uint8_t len = msg_[p];
      if ((len & 0xC0) == 0xC0) {
        if (p + 1 >= msg_.size()) {
          fail(ParseErrorCode::kTruncated, p,
               fmt::format("{}: compression pointer at offset {} is cut off", what, p));
          return std::nullopt;
        }
        size_t target = (size_t{len & 0x3Fu} << 8) | msg_[p + 1];
        if (target >= limit) {
          bool forward = target >= p;
          fail(ParseErrorCode::kBadPointer, p,
               forward ? fmt::format("{}: compression pointer at offset {} points forward to {}",
                                     what, p, target)
                       : fmt::format("{}: compression pointer at offset {} to {} does not point "
                                     "before the previous target {} (a loop)",
                                     what, p, target, limit));
          return std::nullopt;
        }
        if (!jumped)
          pos_ = p + 2;
        jumped = true;
        limit = target;
        p = target;
        continue;
      }
      if ((len & 0xC0) != 0) {
        fail(ParseErrorCode::kLabelTooLong, p,
             fmt::format("{}: label length octet 0x{:02x} at offset {}: labels are at most {} "
                         "bytes and types 01/10 are not supported",
                         what, len, p, kMaxLabelLength));
        return std::nullopt;
      }
      if (len == 0) {
        if (!jumped)
          pos_ = p + 1;
        return Name::fromLabels(std::move(labels)).value();
      }
      if (p + 1 + len > msg_.size()) {
        fail(ParseErrorCode::kTruncated, p,
             fmt::format("{}: label of {} bytes at offset {} runs past the end", what, len, p));
        return std::nullopt;
      }
      wire_len += 1 + len;
      if (wire_len > kMaxNameLength) {
        fail(ParseErrorCode::kNameTooLong, p,
             fmt::format("{}: name exceeds {} bytes at offset {}", what, kMaxNameLength, p));
        return std::nullopt;
      }
      labels.emplace_back(reinterpret_cast<const char*>(msg_.data() + p + 1), len);
      p += 1 + len;
    }
  }

private:
  std::span<const uint8_t> msg_;
  size_t pos_ = 0;
  std::optional<ParseError> error_;
};

ParseResult<Header> parseHeader(std::span<const uint8_t> msg) {
  if (msg.size() < kHeaderSize)
    return ParseError{ParseErrorCode::kTruncatedHeader, 0,
                      fmt::format("message of {} bytes is shorter than the {}-byte header",
                                  msg.size(), kHeaderSize)};
  auto u16 = [&](size_t at) { return static_cast<uint16_t>((msg[at] << 8) | msg[at + 1]); };
  Header h;
  h.id = u16(0);
  uint16_t flags = u16(2);
  h.qr = flags & 0x8000;
  h.opcode = static_cast<Opcode>((flags >> 11) & 0xF);
  h.aa = flags & 0x0400;
  h.tc = flags & 0x0200;
  h.rd = flags & 0x0100;
  h.ra = flags & 0x0080;
  h.ad = flags & 0x0020;
  h.cd = flags & 0x0010;
  h.rcode = flags & 0xF;
  h.qdcount = u16(4);
  h.ancount = u16(6);
  h.nscount = u16(8);
  h.arcount = u16(10);
  return h;
}

static std::string sectionName(Section s) {
  switch (s) {
  case Section::kAnswer:
    return "answer";
  case Section::kAuthority:
    return "authority";
  case Section::kAdditional:
    return "additional";
  }
  return "?";
}

// Reads one record's rdata, which spans exactly `len` bytes from the reader's offset.
static std::optional<Rdata> readRdata(WireReader& r, RrType type, size_t len,
                                      const std::string& what) {
  size_t start = r.offset();
  auto mismatch = [&](std::string_view why) {
    r.fail(ParseErrorCode::kBadRdata, start,
           fmt::format("{}: {} rdata at offset {}: {}", what, rrTypeName(type), start, why));
    return std::nullopt;
  };
  auto exact = [&](const char* field) -> bool {
    if (r.failed())
      return false;
    if (r.offset() != start + len) {
      mismatch(
          fmt::format("{} ends at offset {} but rdlength says {}", field, r.offset(), start + len));
      return false;
    }
    return true;
  };
  switch (type) {
  case RrType::kA: {
    if (len != 4)
      return mismatch(fmt::format("rdlength {} is not 4", len));
    asio::ip::address_v4::bytes_type b{};
    auto s = r.bytes(4);
    std::copy(s.begin(), s.end(), b.begin());
    return asio::ip::address_v4(b);
  }
  case RrType::kAaaa: {
    if (len != 16)
      return mismatch(fmt::format("rdlength {} is not 16", len));
    asio::ip::address_v6::bytes_type b{};
    auto s = r.bytes(16);
    std::copy(s.begin(), s.end(), b.begin());
    return asio::ip::address_v6(b);
  }
  case RrType::kSrv: {
    if (len < 7)
      return mismatch(fmt::format("rdlength {} is too short for SRV", len));
    SrvData d;
    d.priority = r.u16();
    d.weight = r.u16();
    d.port = r.u16();
    auto t = r.name(what + " SRV target");
    if (!t || !exact("target"))
      return std::nullopt;
    d.target = std::move(*t);
    return d;
  }
  case RrType::kSoa: {
    SoaData d;
    auto m = r.name(what + " SOA mname");
    auto n = r.name(what + " SOA rname");
    if (!m || !n)
      return std::nullopt;
    if (!r.need(20, what + " SOA counters"))
      return std::nullopt;
    d.mname = std::move(*m);
    d.rname = std::move(*n);
    d.serial = r.u32();
    d.refresh = r.u32();
    d.retry = r.u32();
    d.expire = r.u32();
    d.minimum = r.u32();
    if (!exact("SOA"))
      return std::nullopt;
    return d;
  }
  case RrType::kCname:
  case RrType::kNs:
  case RrType::kPtr: {
    auto t = r.name(what + " target");
    if (!t || !exact("target"))
      return std::nullopt;
    return std::move(*t);
  }
  default: {
    auto s = r.bytes(len);
    return std::vector<uint8_t>(s.begin(), s.end());
  }
  }
}

// Parses everything after the header into `m`, whose header is already read.
static std::optional<ParseError> parseBody(WireReader& r, Message& m) {
  for (uint16_t i = 0; i < m.header.qdcount; ++i) {
    std::string what = fmt::format("question {}", i);
    size_t at = r.offset();
    auto n = r.name(what);
    if (!r.need(4, what)) {
      if (!r.failed())
        r.fail(ParseErrorCode::kTruncated, at, what + " is cut off");
      return r.error();
    }
    Question q;
    q.name = std::move(*n);
    q.type = static_cast<RrType>(r.u16());
    q.klass = r.u16();
    m.questions.push_back(std::move(q));
  }
  const std::pair<Section, uint16_t> sections[] = {{Section::kAnswer, m.header.ancount},
                                                   {Section::kAuthority, m.header.nscount},
                                                   {Section::kAdditional, m.header.arcount}};
  for (auto [section, count] : sections) {
    for (uint16_t i = 0; i < count; ++i) {
      std::string what = fmt::format("{} record {}", sectionName(section), i);
      size_t at = r.offset();
      auto n = r.name(what);
      if (!n || !r.need(10, what))
        return r.error();
      ResourceRecord rr;
      rr.name = std::move(*n);
      rr.type = static_cast<RrType>(r.u16());
      rr.klass = r.u16();
      rr.ttl = r.u32();
      uint16_t rdlen = r.u16();
      if (!r.need(rdlen, what + " rdata"))
        return r.error();
      if (rr.type == RrType::kOpt) {
        if (section != Section::kAdditional) {
          r.fail(
              ParseErrorCode::kBadOpt, at,
              fmt::format("{}: OPT record at offset {} outside the additional section", what, at));
          return r.error();
        }
        if (m.edns) {
          r.fail(ParseErrorCode::kBadOpt, at,
                 fmt::format("{}: second OPT record at offset {}", what, at));
          return r.error();
        }
        if (!rr.name.isRoot()) {
          r.fail(ParseErrorCode::kBadOpt, at,
                 fmt::format("{}: OPT record at offset {} is owned by {}, not the root", what, at,
                             rr.name.toString()));
          return r.error();
        }
        Edns e;
        e.udp_payload_size = rr.klass;
        e.extended_rcode = static_cast<uint8_t>(rr.ttl >> 24);
        e.version = static_cast<uint8_t>(rr.ttl >> 16);
        e.dnssec_ok = rr.ttl & 0x8000;
        size_t end = r.offset() + rdlen;
        while (r.offset() < end) {
          size_t opt_at = r.offset();
          if (end - r.offset() < 4) {
            r.fail(ParseErrorCode::kBadRdata, opt_at,
                   fmt::format("{}: EDNS option header at offset {} is cut off", what, opt_at));
            return r.error();
          }
          EdnsOption o;
          o.code = r.u16();
          uint16_t olen = r.u16();
          if (end - r.offset() < olen) {
            r.fail(ParseErrorCode::kBadRdata, opt_at,
                   fmt::format("{}: EDNS option {} at offset {} claims {} bytes past the OPT "
                               "rdata",
                               what, o.code, opt_at, olen));
            return r.error();
          }
          auto s = r.bytes(olen);
          o.data.assign(s.begin(), s.end());
          e.options.push_back(std::move(o));
        }
        m.edns = std::move(e);
        continue;
      }
      auto rd = readRdata(r, rr.type, rdlen, what);
      if (!rd)
        return r.error();
      rr.rdata = std::move(*rd);
      switch (section) {
      case Section::kAnswer:
        m.answers.push_back(std::move(rr));
        break;
      case Section::kAuthority:
        m.authority.push_back(std::move(rr));
        break;
      case Section::kAdditional:
        m.additional.push_back(std::move(rr));
        break;
      }
    }
  }
  if (r.remaining() != 0) {
    r.fail(ParseErrorCode::kTrailingData, r.offset(),
           fmt::format("{} bytes after the last record at offset {}", r.remaining(), r.offset()));
    return r.error();
  }
  return std::nullopt;
}

ParseResult<Message> parseMessage(std::span<const uint8_t> msg) {
  auto h = parseHeader(msg);
  if (!h)
    return h.error();
  WireReader r(msg);
  r.skip(kHeaderSize);
  Message m;
  m.header = h.value();
  if (auto err = parseBody(r, m))
    return *err;
  return m;
}

ParseResult<Query> parseQuery(std::span<const uint8_t> msg) {
  auto hr = parseHeader(msg);
  if (!hr)
    return hr.error();
  const Header& h = hr.value();
  if (h.qr)
    return ParseError{ParseErrorCode::kNotAQuery, 2, "QR bit set: the message is a response"};
  if (h.opcode != Opcode::kQuery)
    return ParseError{
        ParseErrorCode::kUnsupportedOpcode, 2,
        fmt::format("opcode {} is not supported; only QUERY (0) is", static_cast<int>(h.opcode))};
  if (h.qdcount != 1)
    return ParseError{ParseErrorCode::kBadQuestionCount, 4,
                      fmt::format("query has {} questions; exactly 1 is supported", h.qdcount)};
  if (h.ancount != 0 || h.nscount != 0)
    return ParseError{ParseErrorCode::kUnexpectedRecords, 6,
                      fmt::format("query carries {} answer and {} authority records; a query "
                                  "has none",
                                  h.ancount, h.nscount)};
  auto m = parseMessage(msg);
  if (!m)
    return m.error();
  Query q;
  q.header = h;
  q.question = std::move(m->questions[0]);
  q.edns = std::move(m->edns);
  return q;
}

// ---- builder ----

MessageBuilder::MessageBuilder(size_t max_size)
    : max_size_(std::clamp(max_size, kMinUdpPayload, kMaxMessageSize)) {
  buf_.reserve(std::min<size_t>(max_size_, 4096));
  buf_.resize(kHeaderSize);
}

void MessageBuilder::setHeader(const Header& header) {
  header_ = header;
  header_.qdcount = header_.ancount = header_.nscount = header_.arcount = 0;
}

void MessageBuilder::put16(uint16_t v) {
  buf_.push_back(static_cast<uint8_t>(v >> 8));
  buf_.push_back(static_cast<uint8_t>(v));
}

void MessageBuilder::put32(uint32_t v) {
  put16(static_cast<uint16_t>(v >> 16));
  put16(static_cast<uint16_t>(v));
}

void MessageBuilder::putName(const Name& name, bool compress) {
  const auto& labels = name.labels();
  for (size_t i = 0; i < labels.size(); ++i) {
    std::string key;
    for (size_t k = i; k < labels.size(); ++k) {
      key.push_back(static_cast<char>(labels[k].size()));
      key += labels[k];
    }
    if (compress) {
      auto it = offsets_.find(key);
      if (it != offsets_.end()) {
        put16(static_cast<uint16_t>(0xC000 | it->second));
        return;
      }
    }
    if (buf_.size() < 0x4000 && offsets_.emplace(key, static_cast<uint16_t>(buf_.size())).second)
      added_.push_back(std::move(key));
    put8(static_cast<uint8_t>(labels[i].size()));
    buf_.insert(buf_.end(), labels[i].begin(), labels[i].end());
  }
  put8(0);
}

void MessageBuilder::rollback(const Mark& m) {
  buf_.resize(m.size);
  while (added_.size() > m.log) {
    offsets_.erase(added_.back());
    added_.pop_back();
  }
}

bool MessageBuilder::addQuestion(const Question& q) {
  assert(header_.ancount == 0 && header_.nscount == 0 && header_.arcount == 0);
  Mark m = mark();
  putName(q.name, true);
  put16(static_cast<uint16_t>(q.type));
  put16(q.klass);
  if (!fits() || header_.qdcount == 0xFFFF) {
    rollback(m);
    return false;
  }
  header_.qdcount++;
  return true;
}

void MessageBuilder::writeRecord(const ResourceRecord& rr) {
  putName(rr.name, true);
  put16(static_cast<uint16_t>(rr.type));
  put16(rr.klass);
  put32(rr.ttl);
  size_t len_at = buf_.size();
  put16(0);
  size_t start = buf_.size();
  std::visit(
      [&](const auto& d) {
        using T = std::decay_t<decltype(d)>;
        if constexpr (std::is_same_v<T, std::vector<uint8_t>>) {
          buf_.insert(buf_.end(), d.begin(), d.end());
        } else if constexpr (std::is_same_v<T, asio::ip::address_v4> ||
                             std::is_same_v<T, asio::ip::address_v6>) {
          auto b = d.to_bytes();
          buf_.insert(buf_.end(), b.begin(), b.end());
        } else if constexpr (std::is_same_v<T, SrvData>) {
          put16(d.priority);
          put16(d.weight);
          put16(d.port);
          putName(d.target, false); // RFC 2782: no compression in the target
        } else if constexpr (std::is_same_v<T, SoaData>) {
          putName(d.mname, true);
          putName(d.rname, true);
          put32(d.serial);
          put32(d.refresh);
          put32(d.retry);
          put32(d.expire);
          put32(d.minimum);
        } else if constexpr (std::is_same_v<T, Name>) {
          putName(d, true);
        }
      },
      rr.rdata);
  size_t len = buf_.size() - start;
  buf_[len_at] = static_cast<uint8_t>(len >> 8);
  buf_[len_at + 1] = static_cast<uint8_t>(len);
}

bool MessageBuilder::addRecord(Section section, const ResourceRecord& rr) {
  uint16_t* count = section == Section::kAnswer      ? &header_.ancount
                    : section == Section::kAuthority ? &header_.nscount
                                                     : &header_.arcount;
  assert(section == Section::kAdditional || header_.arcount == 0);
  assert(section != Section::kAnswer || header_.nscount == 0);
  Mark m = mark();
  writeRecord(rr);
  if (!fits() || *count == 0xFFFF) {
    rollback(m);
    return false;
  }
  (*count)++;
  return true;
}

bool MessageBuilder::addEdns(const Edns& edns) {
  Mark m = mark();
  put8(0); // root owner
  put16(static_cast<uint16_t>(RrType::kOpt));
  put16(edns.udp_payload_size);
  put8(edns.extended_rcode);
  put8(edns.version);
  put16(edns.dnssec_ok ? 0x8000 : 0);
  size_t len = 0;
  for (const auto& o : edns.options)
    len += 4 + o.data.size();
  put16(static_cast<uint16_t>(len));
  for (const auto& o : edns.options) {
    put16(o.code);
    put16(static_cast<uint16_t>(o.data.size()));
    buf_.insert(buf_.end(), o.data.begin(), o.data.end());
  }
  if (buf_.size() > max_size_ || len > 0xFFFF || header_.arcount == 0xFFFF) {
    rollback(m);
    return false;
  }
  reserved_ = 0;
  header_.arcount++;
  return true;
}

std::vector<uint8_t> MessageBuilder::finish() {
  uint16_t flags = 0;
  flags |= header_.qr ? 0x8000 : 0;
  flags |= static_cast<uint16_t>((static_cast<uint16_t>(header_.opcode) & 0xF) << 11);
  flags |= header_.aa ? 0x0400 : 0;
  flags |= header_.tc ? 0x0200 : 0;
  flags |= header_.rd ? 0x0100 : 0;
  flags |= header_.ra ? 0x0080 : 0;
  flags |= header_.ad ? 0x0020 : 0;
  flags |= header_.cd ? 0x0010 : 0;
  flags |= header_.rcode & 0xF;
  const uint16_t fields[6] = {header_.id,      flags,           header_.qdcount,
                              header_.ancount, header_.nscount, header_.arcount};
  for (size_t i = 0; i < 6; ++i) {
    buf_[2 * i] = static_cast<uint8_t>(fields[i] >> 8);
    buf_[2 * i + 1] = static_cast<uint8_t>(fields[i]);
  }
  return std::move(buf_);
}

} // namespace trellis::dns
