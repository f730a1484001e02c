#pragma once

// DNS wire format: RFC 1035 messages and names, RFC 3596 AAAA, RFC 2782 SRV, RFC 6891 EDNS0.
// The parser takes untrusted bytes and either returns a fully checked message or a ParseError
// naming the first problem and its offset; it never reads outside the given span. The builder
// writes responses with name compression and refuses, without side effects, any record that
// would push the message past its size limit (which is how truncation is done).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include <asio/ip/address.hpp>

#include "base/result.h"

namespace trellis::dns {

// Resource record types. Values not listed are carried as they are (RrType{99}).
enum class RrType : uint16_t {
  kA = 1,
  kNs = 2,
  kCname = 5,
  kSoa = 6,
  kPtr = 12,
  kMx = 15,
  kTxt = 16,
  kAaaa = 28,
  kSrv = 33,
  kOpt = 41,
  kIxfr = 251,
  kAxfr = 252,
  kMailb = 253,
  kMaila = 254,
  kAny = 255,
};

// "A", "AAAA", ..., or "TYPE99" for others.
std::string rrTypeName(RrType type);

constexpr uint16_t kClassIn = 1;
constexpr uint16_t kClassAny = 255;

enum class Opcode : uint8_t { kQuery = 0, kIquery = 1, kStatus = 2, kNotify = 4, kUpdate = 5 };

// Response codes. Values above 15 are extended (RFC 6891): their upper 8 bits travel in the
// OPT record and only the low 4 bits in the header.
enum class Rcode : uint16_t {
  kNoError = 0,
  kFormErr = 1,
  kServFail = 2,
  kNxDomain = 3,
  kNotImp = 4,
  kRefused = 5,
  kBadVers = 16,
};

// "NOERROR", "FORMERR", ..., or "RCODE23".
std::string rcodeName(Rcode rcode);

constexpr size_t kHeaderSize = 12;
constexpr size_t kMaxLabelLength = 63;
// Wire length of a name, length octets and the root's zero octet included (RFC 1035 2.3.4).
constexpr size_t kMaxNameLength = 255;
// Largest plain UDP message (RFC 1035 4.2.1) and the smallest EDNS payload size honoured.
constexpr size_t kMinUdpPayload = 512;
// Largest message: the TCP length prefix is 16 bits.
constexpr size_t kMaxMessageSize = 65535;

// A domain name as a list of labels (raw bytes, case preserved). The root has no labels.
// Comparisons in the DNS are ASCII case-insensitive; equals()/endsWith() follow that rule.
class Name {
public:
  Name() = default;

  // Parses presentation form: "web.service.trellis", a trailing dot optional, "." or "" for
  // the root. Supports \. and \\ and \DDD escapes. Errors name the label that is wrong.
  static Result<Name> fromString(std::string_view text);
  // Checks each label (1..63 bytes) and the total wire length (<= 255).
  static Result<Name> fromLabels(std::vector<std::string> labels);

  const std::vector<std::string>& labels() const { return labels_; }
  size_t labelCount() const { return labels_.size(); }
  bool isRoot() const { return labels_.empty(); }
  // Uncompressed wire length, including the final zero octet.
  size_t wireLength() const;

  // Presentation form with a trailing dot; dots, backslashes and non-printable bytes inside
  // labels are escaped, so the text parses back to the same name.
  std::string toString() const;

  bool equals(const Name& other) const;
  // True when `suffix` is this name or one of its ancestors.
  bool endsWith(const Name& suffix) const;
  // The same name in lower case.
  Name lowercased() const;

  // Appends `other` (which must fit: callers check with fromLabels when it may not).
  Name concat(const Name& other) const;

  bool operator==(const Name& other) const { return equals(other); }

private:
  explicit Name(std::vector<std::string> labels) : labels_(std::move(labels)) {}
  friend class WireReader;

  std::vector<std::string> labels_;
};

// ASCII lower-casing, the DNS's notion of case.
std::string asciiLower(std::string_view s);
bool asciiEqualsIgnoreCase(std::string_view a, std::string_view b);

struct Header {
  uint16_t id = 0;
  bool qr = false; // response
  Opcode opcode = Opcode::kQuery;
  bool aa = false; // authoritative answer
  bool tc = false; // truncated
  bool rd = false; // recursion desired
  bool ra = false; // recursion available
  bool ad = false;
  bool cd = false;
  uint8_t rcode = 0; // the header's 4 bits; see Rcode for extended values
  uint16_t qdcount = 0;
  uint16_t ancount = 0;
  uint16_t nscount = 0;
  uint16_t arcount = 0;
};

struct Question {
  Name name;
  RrType type = RrType::kA;
  uint16_t klass = kClassIn;
};

struct SrvData {
  uint16_t priority = 0;
  uint16_t weight = 0;
  uint16_t port = 0;
  Name target;
};

struct SoaData {
  Name mname;
  Name rname;
  uint32_t serial = 0;
  uint32_t refresh = 0;
  uint32_t retry = 0;
  uint32_t expire = 0;
  uint32_t minimum = 0;
};

// Record data: decoded for the types this module produces, raw bytes for everything else.
// A Name alternative holds CNAME, NS and PTR targets.
using Rdata = std::variant<std::vector<uint8_t>, asio::ip::address_v4, asio::ip::address_v6,
                           SrvData, SoaData, Name>;

struct ResourceRecord {
  Name name;
  RrType type = RrType::kA;
  uint16_t klass = kClassIn;
  uint32_t ttl = 0;
  Rdata rdata;
};

struct EdnsOption {
  uint16_t code = 0;
  std::vector<uint8_t> data;
};

// The OPT pseudo-record (RFC 6891 6.1.2), kept apart from the additional section.
struct Edns {
  uint16_t udp_payload_size = kMinUdpPayload;
  uint8_t extended_rcode = 0; // upper 8 bits of the 12-bit rcode
  uint8_t version = 0;
  bool dnssec_ok = false;
  std::vector<EdnsOption> options;
};

struct Message {
  Header header;
  std::vector<Question> questions;
  std::vector<ResourceRecord> answers;
  std::vector<ResourceRecord> authority;
  std::vector<ResourceRecord> additional; // without the OPT record
  std::optional<Edns> edns;

  // The full rcode: header bits plus the OPT record's extended bits.
  Rcode rcode() const;
};

// A standard query: one question, nothing in the answer and authority sections, at most one
// OPT record (other additional records, e.g. TSIG, are ignored).
struct Query {
  Header header;
  Question question;
  std::optional<Edns> edns;
};

enum class ParseErrorCode {
  kTruncatedHeader,   // fewer than 12 bytes
  kTruncated,         // a name, question or record runs past the end
  kLabelTooLong,      // a length octet of 64..191 (the 01/10 label types are not valid)
  kNameTooLong,       // more than 255 octets in wire form
  kBadPointer,        // a compression pointer that points forward or loops
  kBadRdata,          // rdata that does not match its type or its rdlength
  kTrailingData,      // bytes after the last record the header counts
  kNotAQuery,         // QR is set: the packet is a response
  kUnsupportedOpcode, // not a standard QUERY
  kBadQuestionCount,  // a query must have exactly one question
  kUnexpectedRecords, // a query with answer or authority records
  kBadOpt,            // OPT: not in the additional section, not at the root, or twice
};

const char* parseErrorCodeName(ParseErrorCode code);

struct ParseError {
  ParseErrorCode code = ParseErrorCode::kTruncated;
  size_t offset = 0;   // where in the message the problem was found
  std::string message; // for logs: what was wrong and where

  Error toError() const { return Error(ErrorCode::kInvalidArgument, message); }
};

// A parsed value or the reason the bytes were rejected.
template <typename T> class [[nodiscard]] ParseResult {
public:
  ParseResult(T value) : v_(std::move(value)) {}
  ParseResult(ParseError error) : v_(std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const ParseError& error() const { return std::get<1>(v_); }

private:
  std::variant<T, ParseError> v_;
};

// Reads the 12-byte header only (for answering FORMERR to packets whose body is broken).
ParseResult<Header> parseHeader(std::span<const uint8_t> msg);
// Parses a whole message: every section, the counts checked against the bytes present,
// and no trailing bytes.
ParseResult<Message> parseMessage(std::span<const uint8_t> msg);
// parseMessage plus the rules for a standard query (see Query).
ParseResult<Query> parseQuery(std::span<const uint8_t> msg);

enum class Section { kAnswer, kAuthority, kAdditional };

// Writes one message. Names are compressed against every name written before (exact-case
// match, so compressed owner names keep the question's case); SRV targets are written
// uncompressed as RFC 2782 asks, but later names may point into them.
class MessageBuilder {
public:
  // `max_size` is the limit the message must fit in (512..65535).
  explicit MessageBuilder(size_t max_size);

  // Counts in `header` are ignored: the builder counts what it writes.
  void setHeader(const Header& header);
  Header& header() { return header_; }

  // Keeps `bytes` free at the end for a record added later with addEdns().
  void reserveTail(size_t bytes) { reserved_ = bytes; }

  // Each add returns false, leaving the message as it was, when the item would not fit.
  // Sections must be filled in order: questions, answer, authority, additional.
  bool addQuestion(const Question& q);
  bool addRecord(Section section, const ResourceRecord& rr);
  // The OPT record; may use the reserved tail. The extended rcode bits come from `edns`.
  bool addEdns(const Edns& edns);

  size_t size() const { return buf_.size(); }
  // The finished message with the header's counts filled in.
  std::vector<uint8_t> finish();

  // Wire size of an OPT record without options.
  static constexpr size_t kOptSize = 11;

private:
  struct Mark {
    size_t size;
    size_t log;
  };
  Mark mark() const { return {buf_.size(), added_.size()}; }
  void rollback(const Mark& m);
  bool fits() const { return buf_.size() + reserved_ <= max_size_; }
  void put8(uint8_t v) { buf_.push_back(v); }
  void put16(uint16_t v);
  void put32(uint32_t v);
  void putName(const Name& name, bool compress);
  void writeRecord(const ResourceRecord& rr);

  size_t max_size_;
  size_t reserved_ = 0;
  Header header_;
  std::vector<uint8_t> buf_;
  // Exact-case wire form of every suffix written so far -> its offset (< 0x4000).
  std::unordered_map<std::string, uint16_t> offsets_;
  std::vector<std::string> added_; // insertion log, so a rejected record can be undone
};

} // namespace trellis::dns
