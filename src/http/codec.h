#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "http/headers.h"

// The HTTP/1.1 codec: an incremental, zero-copy parser for requests and responses (RFC 9112),
// strict about everything that can be used to smuggle or confuse, and the serialisers for
// message heads and chunked bodies. See docs/http.md for the rules and limits.
namespace trellis::http {

enum class Version : uint8_t { kHttp10, kHttp11 };
std::string_view versionString(Version v); // "HTTP/1.0" / "HTTP/1.1"

enum class Method : uint8_t {
  kGet,
  kHead,
  kPost,
  kPut,
  kDelete,
  kConnect,
  kOptions,
  kTrace,
  kPatch,
  kOther, // any other valid token; the callbacks receive its spelling
};
// Maps a method token (case-sensitive, as RFC 9110 says) to its enum; unknown → kOther.
Method methodFromToken(std::string_view token);
std::string_view methodName(Method m); // "GET" ...; "" for kOther

// Why the parser rejected its input. Stable values: the proxy keeps one counter per kind.
enum class ParseError : uint8_t {
  kNone = 0,
  kBadRequestLine,     // request line not "method SP target SP version"
  kBadMethod,          // method is empty or has a non-tchar byte
  kBadTarget,          // request-target not origin/absolute/authority/asterisk form as allowed
  kBadVersion,         // version not of the form HTTP/d.d
  kUnsupportedVersion, // well-formed but not HTTP/1.0 or HTTP/1.1
  kBadStatusLine,      // status line not "version SP 3DIGIT SP reason"
  kBadStatusCode,      // status code outside 100..599
  kBadHeaderName,      // empty name, non-tchar byte, or missing colon
  kBadHeaderValue,     // NUL or another control character in a value
  kWhitespaceBeforeColon,
  kObsFold,       // a header line starting with SP or HTAB (obsolete line folding)
  kBadLineEnding, // bare CR or bare LF where CRLF is required
  kHeadersTooLarge,
  kTooManyHeaders,
  kBadHost,          // HTTP/1.1 request without Host, several Host fields, or an invalid Host value
  kBadContentLength, // not a decimal number, or overflows
  kConflictingContentLength,          // repeated with differing values
  kContentLengthWithTransferEncoding, // both framing fields present
  kBadTransferEncoding,               // chunked not final / repeated, empty, or in HTTP/1.0
  kUnsupportedTransferEncoding,       // an unknown coding or coding parameters
  kBadChunkSize,                      // not hex, overflows, or malformed chunk line
  kChunkTooLarge,                     // chunk size above ParserLimits::max_chunk_size
  kBadChunkExtension,
  kBadChunkData, // chunk data not followed by CRLF
  kBadTrailer,   // malformed trailer field, or a framing field sent as a trailer
  kTrailersTooLarge,
  kIncompleteMessage, // the connection ended inside a message
  kAborted,           // a callback returned Action::kAbort
  kCount,
};
const char* parseErrorName(ParseError e); // "bad_method", ... (snake case, for metric labels)
// The status a server answers a request with when its parse failed this way: 431 for the two
// header-size kinds, 501 for an unknown transfer coding, 505 for an unsupported version, 400
// otherwise.
uint16_t parseErrorStatus(ParseError e);

// Every limit of the parser. Exceeding one is an error of the named kind.
struct ParserLimits {
  // Bytes of the start line plus all header lines including every CRLF and the final empty
  // line (and any empty lines tolerated before a request line). → kHeadersTooLarge.
  uint32_t max_header_bytes = 60 * 1024;
  // Header fields per message. → kTooManyHeaders. Trailer fields are counted separately
  // against the same limit.
  uint32_t max_headers = 100;
  // Bytes of one chunk-size line (size, extensions, CRLF). → kBadChunkExtension.
  uint32_t max_chunk_line_bytes = 4096;
  // Largest chunk size accepted. → kChunkTooLarge.
  uint64_t max_chunk_size = uint64_t{1} << 30;
  // Bytes of the trailer section including CRLFs. → kTrailersTooLarge.
  uint32_t max_trailer_bytes = 16 * 1024;
  // Accept the printable characters browsers leave unescaped in URLs ([ ] | \ ^ ` { }) in a
  // request-target. Everything else outside RFC 3986 (controls, space, DEL, '#', '"', '<',
  // '>', bytes >= 0x80, malformed %-escapes) is always rejected.
  bool allow_lenient_target_chars = true;
};

enum class BodyFraming : uint8_t {
  kNone,          // no body (or an empty one)
  kContentLength, // exactly content_length bytes
  kChunked,
  kUntilClose, // responses only: the body ends when the connection does
};

// What the parser decided about a message once its header section was complete.
struct MessageHead {
  Version version = Version::kHttp11;
  Method method = Method::kGet; // request: its method; response: the request's method
  uint16_t status = 0;          // responses only
  BodyFraming framing = BodyFraming::kNone;
  std::optional<uint64_t> content_length; // as sent, even where it does not frame the body
  bool chunked = false;                   // the body is chunked-encoded
  // The connection may carry another message after this one (RFC 9112 9.3: HTTP/1.1 unless
  // "Connection: close"; HTTP/1.0 only with "Connection: keep-alive"; never for a
  // close-delimited response body).
  bool keep_alive = true;
  // Requests: CONNECT, or "Upgrade" with "Connection: upgrade" (HTTP/1.1). Responses: 101, or
  // 2xx to CONNECT. After such a message the parser stops (ParseStatus::kUpgraded).
  bool upgrade = false;
  bool expect_continue = false; // request carries "Expect: 100-continue"
  bool interim = false;         // a 1xx response other than 101: the final response follows
};

// What a callback tells the parser to do next.
enum class Action : uint8_t {
  kContinue,
  kPause, // stop after this event; execute() returns kPaused, resume() continues
  kAbort, // fail with ParseError::kAborted
};

// Receives a message's parts. Every string_view points into the bytes passed to execute()
// or, for a line that arrived split across calls, into the parser's own line buffer; either
// way it is valid only until the callback returns. Names and values arrive whole (never
// split), with the surrounding whitespace of values removed.
class ParserCallbacks {
public:
  virtual ~ParserCallbacks() = default;
  // A new message's start line arrived (called just before onRequestLine/onStatusLine).
  virtual Action onMessageBegin() { return Action::kContinue; }
  virtual Action onRequestLine(std::string_view method, std::string_view target, Version version) {
    return Action::kContinue;
  }
  virtual Action onStatusLine(Version version, uint16_t status, std::string_view reason) {
    return Action::kContinue;
  }
  virtual Action onHeader(std::string_view name, std::string_view value) {
    return Action::kContinue;
  }
  virtual Action onHeadersComplete(const MessageHead& head) { return Action::kContinue; }
  // A piece of the decoded body, as it arrives; chunked framing already removed.
  virtual Action onBody(std::string_view piece) { return Action::kContinue; }
  virtual Action onTrailer(std::string_view name, std::string_view value) {
    return Action::kContinue;
  }
  virtual Action onMessageComplete() { return Action::kContinue; }
};

enum class ParseStatus : uint8_t {
  kOk,       // every byte consumed; feed more when it arrives
  kPaused,   // a callback paused; bytes after `consumed` are not yet parsed
  kUpgraded, // an upgrade/CONNECT message ended; bytes after `consumed` belong to the tunnel
  kError,    // see error() and errorMessage(); the connection should be answered and closed
};

struct ParseResult {
  size_t consumed = 0;
  ParseStatus status = ParseStatus::kOk;
};

enum class ParserMode : uint8_t { kRequest, kResponse };

// An incremental HTTP/1.1 parser for one connection's direction. Feed it bytes in pieces of
// any size (one byte at a time works); it calls back as parts complete and never buffers a
// body. Only a header, start, chunk-size or trailer line split across execute() calls is
// copied, into one internal buffer bounded by the limits. Single-threaded.
class Parser {
public:
  Parser(ParserMode mode, ParserCallbacks& callbacks, ParserLimits limits = {});

  // Parses as much of `data` as it can. With kOk every byte was consumed. With kPaused or
  // kUpgraded the caller keeps data[consumed..] and feeds it again later (after resume() or
  // continueAfterUpgrade()). With kError nothing more can be parsed.
  ParseResult execute(std::string_view data);
  // The connection ended (EOF). Completes a close-delimited response body; returns kError
  // (kIncompleteMessage) if a message was in progress, else kOk.
  ParseStatus finish();

  // Clears a pause so execute() continues.
  void resume() { paused_ = false; }
  // Response mode: the method of the request the next response answers (HEAD: no body;
  // CONNECT: 2xx starts a tunnel). Applies until that final (non-1xx) response completes,
  // then falls back to GET. Call before its first byte is fed.
  void expectResponseTo(Method method) { response_method_ = method; }
  // After kUpgraded, when the peer declined the upgrade (e.g. no 101): parse what follows as
  // HTTP again.
  void continueAfterUpgrade();
  // Forgets all state (including an error) and starts at a new message.
  void reset();

  ParserMode mode() const { return mode_; }
  ParseError error() const { return error_; }
  const std::string& errorMessage() const { return error_message_; }
  bool paused() const { return paused_; }
  bool upgraded() const { return state_ == State::kUpgraded; }
  // No byte of a message has been consumed since the last one completed.
  bool idle() const;
  // True from the first byte of a message until its header section is complete.
  bool readingHead() const;
  // The current (or last) message's head; complete once onHeadersComplete was called.
  const MessageHead& head() const { return head_; }
  const ParserLimits& limits() const { return limits_; }

private:
  enum class State : uint8_t {
    kStartLine,
    kHeaderLine,
    kBodyLength,
    kChunkSize,
    kChunkData,
    kChunkDataEnd,
    kTrailerLine,
    kBodyUntilClose,
    kMessageDone,
    kUpgraded,
    kError,
  };
  enum class LineStatus : uint8_t { kLine, kNeedMore, kError };

  // Takes one CRLF-terminated line from [p, end) (joined with a partial line kept from earlier
  // calls), advancing p. `used` counts the section's bytes against `limit`.
  LineStatus takeLine(const char*& p, const char* end, uint32_t& used, uint32_t limit,
                      ParseError too_large, ParseError bad_ending, std::string_view& line);
  bool parseRequestLine(std::string_view line, Action& action);
  bool parseStatusLine(std::string_view line, Action& action);
  bool checkTarget(std::string_view target, Method method);
  bool parseHeaderLine(std::string_view line, bool trailer, std::string_view& name,
                       std::string_view& value);
  bool noteHeader(std::string_view name, std::string_view value);
  bool parseContentLength(std::string_view value);
  bool parseTransferEncoding(std::string_view value);
  bool finishHead();
  bool parseChunkSize(std::string_view line);
  void beginMessage();
  void setError(ParseError e, std::string message);
  // Applies a callback's answer; false when parsing must stop now.
  bool apply(Action a);

  ParserMode mode_;
  ParserCallbacks& cb_;
  ParserLimits limits_;
  State state_ = State::kStartLine;
  bool paused_ = false;
  bool begun_ = false; // the current message's first byte has been seen
  ParseError error_ = ParseError::kNone;
  std::string error_message_;
  std::string line_buf_;       // a line split across execute() calls
  uint32_t section_bytes_ = 0; // header (or trailer) section bytes consumed so far
  uint32_t field_count_ = 0;
  uint64_t remaining_ = 0; // body or chunk bytes still expected
  Method response_method_ = Method::kGet;
  MessageHead head_;
  // Framing facts gathered while reading header fields.
  bool host_seen_ = false;
  bool te_seen_ = false;
  bool te_chunked_ = false; // chunked seen, and so far the last coding
  bool conn_close_ = false;
  bool conn_keep_alive_ = false;
  bool conn_upgrade_ = false;
  bool upgrade_seen_ = false;
};

// ---- Serialisation. Each appends to `out`; the caller guarantees valid names and values
// (see validateHeaders()) and adds the framing headers it wants (Content-Length, ...).

// "METHOD target HTTP/1.x\r\n" + fields + "\r\n".
void serializeRequestHead(std::string_view method, std::string_view target, Version version,
                          const HeaderMap& headers, std::string& out);
// "HTTP/1.x status reason\r\n" + fields + "\r\n"; an empty reason uses reasonPhrase(status).
void serializeResponseHead(Version version, uint16_t status, std::string_view reason,
                           const HeaderMap& headers, std::string& out);
// One chunk of a chunked body ("<hex size>\r\n<data>\r\n"); empty data appends nothing.
void appendChunk(std::string_view data, std::string& out);
// The last chunk with no trailers: "0\r\n\r\n".
void appendLastChunk(std::string& out);
// The standard reason phrase for `status`, or "Unknown".
std::string_view reasonPhrase(uint16_t status);

} // namespace trellis::http
