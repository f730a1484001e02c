#include "http/codec.h"

#include <cstring>

#include <fmt/format.h>

#include "http/chars.h"

namespace trellis::http {

namespace {

bool isWs(unsigned char c) {
  return c == ' ' || c == '\t';
}

// A short printable rendering of an offending byte for error messages.
std::string byteName(unsigned char c) {
  if (c >= 0x21 && c <= 0x7e)
    return fmt::format("'{}'", static_cast<char>(c));
  return fmt::format("0x{:02x}", c);
}

// Skips the prefix of s[from, to) that is certainly valid field-value text, eight bytes at a
// time: a word passes when none of its bytes is below 0x20 (control, including HTAB, which
// the bytewise check then accepts) or equal to 0x7f. Bytes >= 0x80 (obs-text) pass. Returns
// where the bytewise check must start.
size_t firstInvalidValueByte(const unsigned char* s, size_t from, size_t to) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHigh = 0x8080808080808080ULL;
  size_t i = from;
  while (i + 8 <= to) {
    uint64_t x;
    std::memcpy(&x, s + i, 8);
    const uint64_t below_space = (x - kOnes * 0x20) & ~x & kHigh;
    const uint64_t y = x ^ (kOnes * 0x7f);
    const uint64_t is_del = (y - kOnes) & ~y & kHigh;
    if ((below_space | is_del) != 0)
      break;
    i += 8;
  }
  return i;
}

// Shortens untrusted text quoted in an error message.
std::string_view clip(std::string_view s) {
  return s.size() > 64 ? s.substr(0, 64) : s;
}

} // namespace

std::string_view versionString(Version v) {
  return v == Version::kHttp10 ? "HTTP/1.0" : "HTTP/1.1";
}

Method methodFromToken(std::string_view t) {
  switch (t.size()) {
  case 3:
    if (t == "GET")
      return Method::kGet;
    if (t == "PUT")
      return Method::kPut;
    break;
  case 4:
    if (t == "POST")
      return Method::kPost;
    if (t == "HEAD")
      return Method::kHead;
    break;
  case 5:
    if (t == "PATCH")
      return Method::kPatch;
    if (t == "TRACE")
      return Method::kTrace;
    break;
  case 6:
    if (t == "DELETE")
      return Method::kDelete;
    break;
  case 7:
    if (t == "CONNECT")
      return Method::kConnect;
    if (t == "OPTIONS")
      return Method::kOptions;
    break;
  default:
    break;
  }
  return Method::kOther;
}

std::string_view methodName(Method m) {
  switch (m) {
  case Method::kGet:
    return "GET";
  case Method::kHead:
    return "HEAD";
  case Method::kPost:
    return "POST";
  case Method::kPut:
    return "PUT";
  case Method::kDelete:
    return "DELETE";
  case Method::kConnect:
    return "CONNECT";
  case Method::kOptions:
    return "OPTIONS";
  case Method::kTrace:
    return "TRACE";
  case Method::kPatch:
    return "PATCH";
  case Method::kOther:
    break;
  }
  return "";
}

const char* parseErrorName(ParseError e) {
  switch (e) {
  case ParseError::kNone:
    return "none";
  case ParseError::kBadRequestLine:
    return "bad_request_line";
  case ParseError::kBadMethod:
    return "bad_method";
  case ParseError::kBadTarget:
    return "bad_target";
  case ParseError::kBadVersion:
    return "bad_version";
  case ParseError::kUnsupportedVersion:
    return "unsupported_version";
  case ParseError::kBadStatusLine:
    return "bad_status_line";
  case ParseError::kBadStatusCode:
    return "bad_status_code";
  case ParseError::kBadHeaderName:
    return "bad_header_name";
  case ParseError::kBadHeaderValue:
    return "bad_header_value";
  case ParseError::kWhitespaceBeforeColon:
    return "whitespace_before_colon";
  case ParseError::kObsFold:
    return "obs_fold";
  case ParseError::kBadLineEnding:
    return "bad_line_ending";
  case ParseError::kHeadersTooLarge:
    return "headers_too_large";
  case ParseError::kTooManyHeaders:
    return "too_many_headers";
  case ParseError::kBadHost:
    return "bad_host";
  case ParseError::kBadContentLength:
    return "bad_content_length";
  case ParseError::kConflictingContentLength:
    return "conflicting_content_length";
  case ParseError::kContentLengthWithTransferEncoding:
    return "content_length_with_transfer_encoding";
  case ParseError::kBadTransferEncoding:
    return "bad_transfer_encoding";
  case ParseError::kUnsupportedTransferEncoding:
    return "unsupported_transfer_encoding";
  case ParseError::kBadChunkSize:
    return "bad_chunk_size";
  case ParseError::kChunkTooLarge:
    return "chunk_too_large";
  case ParseError::kBadChunkExtension:
    return "bad_chunk_extension";
  case ParseError::kBadChunkData:
    return "bad_chunk_data";
  case ParseError::kBadTrailer:
    return "bad_trailer";
  case ParseError::kTrailersTooLarge:
    return "trailers_too_large";
  case ParseError::kIncompleteMessage:
    return "incomplete_message";
  case ParseError::kAborted:
    return "aborted";
  case ParseError::kCount:
    break;
  }
  return "unknown";
}

uint16_t parseErrorStatus(ParseError e) {
  switch (e) {
  case ParseError::kHeadersTooLarge:
  case ParseError::kTooManyHeaders:
    return 431;
  case ParseError::kUnsupportedTransferEncoding:
    return 501;
  case ParseError::kUnsupportedVersion:
    return 505;
  default:
    return 400;
  }
}

// ------------------------------------------------------------------------------------------
// Parser

Parser::Parser(ParserMode mode, ParserCallbacks& callbacks, ParserLimits limits)
    : mode_(mode), cb_(callbacks), limits_(limits) {}

void Parser::reset() {
  state_ = State::kStartLine;
  paused_ = false;
  error_ = ParseError::kNone;
  error_message_.clear();
  line_buf_.clear();
  section_bytes_ = 0;
  field_count_ = 0;
  remaining_ = 0;
  response_method_ = Method::kGet;
  begun_ = false;
  head_ = MessageHead{};
}

void Parser::continueAfterUpgrade() {
  if (state_ == State::kUpgraded)
    state_ = State::kStartLine;
}

bool Parser::idle() const {
  return state_ == State::kStartLine && !begun_ && line_buf_.empty();
}

bool Parser::readingHead() const {
  return (state_ == State::kStartLine && (begun_ || !line_buf_.empty())) ||
         state_ == State::kHeaderLine;
}

void Parser::setError(ParseError e, std::string message) {
  state_ = State::kError;
  error_ = e;
  error_message_ = std::move(message);
}

bool Parser::apply(Action a) {
  switch (a) {
  case Action::kContinue:
    return true;
  case Action::kPause:
    paused_ = true;
    return false;
  case Action::kAbort:
    setError(ParseError::kAborted, "parsing aborted by the message handler");
    return false;
  }
  return true;
}

void Parser::beginMessage() {
  begun_ = true;
  head_ = MessageHead{};
  field_count_ = 0;
  host_seen_ = false;
  te_seen_ = false;
  te_chunked_ = false;
  conn_close_ = false;
  conn_keep_alive_ = false;
  conn_upgrade_ = false;
  upgrade_seen_ = false;
}

Parser::LineStatus Parser::takeLine(const char*& p, const char* end, uint32_t& used, uint32_t limit,
                                    ParseError too_large, ParseError bad_ending,
                                    std::string_view& line) {
  const size_t avail = static_cast<size_t>(end - p);
  const size_t buffered = line_buf_.size();
  const char* lf = avail ? static_cast<const char*>(std::memchr(p, '\n', avail)) : nullptr;
  if (lf == nullptr) {
    if (size_t{used} + buffered + avail > limit) {
      setError(too_large, fmt::format("line exceeds the limit of {} bytes", limit));
      return LineStatus::kError;
    }
    if (avail > 0)
      line_buf_.append(p, avail);
    p = end;
    return LineStatus::kNeedMore;
  }
  const size_t n = static_cast<size_t>(lf - p) + 1;
  if (size_t{used} + buffered + n > limit) {
    setError(too_large, fmt::format("line exceeds the limit of {} bytes", limit));
    return LineStatus::kError;
  }
  if (buffered == 0) {
    line = std::string_view(p, n - 1);
  } else {
    line_buf_.append(p, n - 1);
    line = line_buf_;
  }
  p = lf + 1;
  used += static_cast<uint32_t>(buffered + n);
  if (line.empty() || line.back() != '\r') {
    setError(bad_ending, "bare LF: lines must end with CRLF");
    return LineStatus::kError;
  }
  line.remove_suffix(1);
  return LineStatus::kLine;
}

namespace {

// Parses "HTTP/1.0" or "HTTP/1.1"; sets `error` and `msg` otherwise.
bool parseVersion(std::string_view v, Version& out, ParseError& error, std::string& msg) {
  if (v == "HTTP/1.1") {
    out = Version::kHttp11;
    return true;
  }
  if (v == "HTTP/1.0") {
    out = Version::kHttp10;
    return true;
  }
  if (v.find('\r') != std::string_view::npos) {
    error = ParseError::kBadLineEnding;
    msg = "bare CR in HTTP version";
    return false;
  }
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (v.size() == 8 && v.substr(0, 5) == "HTTP/" && digit(v[5]) && v[6] == '.' && digit(v[7])) {
    error = ParseError::kUnsupportedVersion;
    msg = fmt::format("unsupported HTTP version \"{}\"", v);
    return false;
  }
  error = ParseError::kBadVersion;
  msg = fmt::format("malformed HTTP version \"{}\"", clip(v));
  return false;
}

} // namespace

bool Parser::parseRequestLine(std::string_view line, Action& action) {
  const auto* s = reinterpret_cast<const unsigned char*>(line.data());
  const size_t n = line.size();
  auto fail = [&](ParseError e, std::string msg) {
    setError(e, std::move(msg));
    return false;
  };
  auto failChar = [&](unsigned char c, ParseError e, std::string_view where) {
    if (c == '\r')
      return fail(ParseError::kBadLineEnding, fmt::format("bare CR in {}", where));
    return fail(e, fmt::format("invalid character {} in {}", byteName(c), where));
  };
  size_t i = 0;
  while (i < n && chars::is(s[i], chars::kToken))
    ++i;
  if (i == n)
    return fail(i == 0 ? ParseError::kBadMethod : ParseError::kBadRequestLine,
                "request line has no target");
  if (s[i] != ' ')
    return failChar(s[i], ParseError::kBadMethod, "method");
  if (i == 0)
    return fail(ParseError::kBadMethod, "request line does not start with a method");
  const std::string_view method = line.substr(0, i);
  const size_t t = ++i;
  while (i < n && s[i] != ' ')
    ++i;
  if (i == t)
    return fail(ParseError::kBadRequestLine, "empty request target");
  if (i == n)
    return fail(ParseError::kBadRequestLine, "request line has no HTTP version");
  const std::string_view target = line.substr(t, i - t);
  Version v;
  ParseError verr;
  std::string vmsg;
  if (!parseVersion(line.substr(i + 1), v, verr, vmsg))
    return fail(verr, std::move(vmsg));
  const Method m = methodFromToken(method);
  if (!checkTarget(target, m))
    return false;
  head_.version = v;
  head_.method = m;
  action = cb_.onRequestLine(method, target, v);
  return true;
}

bool Parser::checkTarget(std::string_view target, Method method) {
  const auto* s = reinterpret_cast<const unsigned char*>(target.data());
  const size_t n = target.size();
  auto fail = [&](std::string msg) {
    setError(ParseError::kBadTarget, std::move(msg));
    return false;
  };
  auto failChar = [&](unsigned char c) {
    if (c == '\r') {
      setError(ParseError::kBadLineEnding, "bare CR in request target");
      return false;
    }
    return fail(fmt::format("invalid character {} in request target", byteName(c)));
  };
  // Checks s[from, to) as path/query characters with valid %-escapes.
  auto checkUri = [&](size_t from, size_t to, bool brackets) {
    for (size_t i = from; i < to; ++i) {
      const unsigned char c = s[i];
      if (chars::is(c, chars::kUri))
        continue;
      if (c == '%') {
        if (i + 2 >= to)
          return fail("truncated %-escape in request target");
        if (!chars::is(s[i + 1], chars::kHex) || !chars::is(s[i + 2], chars::kHex))
          return fail("malformed %-escape in request target");
        i += 2;
        continue;
      }
      if ((brackets && (c == '[' || c == ']')) ||
          (limits_.allow_lenient_target_chars && chars::is(c, chars::kUriLenient)))
        continue;
      return failChar(c);
    }
    return true;
  };
  // Checks an authority "host[:port]" (no userinfo) in s[from, to).
  auto checkAuthority = [&](size_t from, size_t to, bool port_required) {
    if (from == to)
      return fail("empty authority in request target");
    size_t i = from;
    if (s[i] == '[') {
      ++i;
      while (i < to && (chars::is(s[i], chars::kHex) || s[i] == ':' || s[i] == '.'))
        ++i;
      if (i == to || s[i] != ']' || i == from + 1)
        return fail("malformed IP literal in request target");
      ++i;
    } else {
      while (i < to && (chars::is(s[i], chars::kRegName) || s[i] == '%')) {
        if (s[i] == '%') {
          if (!(i + 2 < to) || !chars::is(s[i + 1], chars::kHex) ||
              !chars::is(s[i + 2], chars::kHex))
            return fail("malformed %-escape in request target host");
          i += 2;
        }
        ++i;
      }
      if (i == from)
        return fail("empty host in request target");
    }
    if (i == to) {
      if (port_required)
        return fail("authority-form target needs a port (host:port)");
      return true;
    }
    if (s[i] != ':')
      return failChar(s[i]);
    ++i;
    const size_t p0 = i;
    uint32_t port = 0;
    while (i < to && s[i] >= '0' && s[i] <= '9' && i - p0 < 6)
      port = port * 10 + (s[i++] - '0');
    if (i != to || (i == p0 && port_required) || port > 65535)
      return fail("invalid port in request target");
    return true;
  };

  if (method == Method::kConnect)
    return checkAuthority(0, n, /*port_required=*/true);
  if (s[0] == '/')
    return checkUri(0, n, false);
  if (n == 1 && s[0] == '*') {
    if (method != Method::kOptions)
      return fail("asterisk-form target (*) is only allowed with OPTIONS");
    return true;
  }
  // absolute-form: scheme "://" authority [path-abempty ["?" query]]
  size_t i = 0;
  auto alpha = [](unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  if (!alpha(s[0]))
    return failChar(s[0]);
  while (i < n &&
         (alpha(s[i]) || (s[i] >= '0' && s[i] <= '9') || s[i] == '+' || s[i] == '-' || s[i] == '.'))
    ++i;
  if (n - i < 3 || target.substr(i, 3) != "://")
    return fail(fmt::format("request target \"{}\" is neither origin-form (/path) nor "
                            "absolute-form (scheme://host/path)",
                            clip(target)));
  const size_t a0 = i + 3;
  size_t a1 = a0;
  while (a1 < n && s[a1] != '/' && s[a1] != '?')
    ++a1;
  if (!checkAuthority(a0, a1, false))
    return false;
  return checkUri(a1, n, false);
}

bool Parser::parseStatusLine(std::string_view line, Action& action) {
  auto fail = [&](ParseError e, std::string msg) {
    setError(e, std::move(msg));
    return false;
  };
  const size_t sp = line.find(' ');
  if (sp == std::string_view::npos)
    return fail(ParseError::kBadStatusLine, "status line has no status code");
  Version v;
  ParseError verr;
  std::string vmsg;
  if (!parseVersion(line.substr(0, sp), v, verr, vmsg))
    return fail(verr, std::move(vmsg));
  size_t i = sp + 1;
  uint32_t status = 0;
  size_t digits = 0;
  while (i < line.size() && line[i] >= '0' && line[i] <= '9' && digits < 4) {
    status = status * 10 + static_cast<uint32_t>(line[i++] - '0');
    ++digits;
  }
  if (digits != 3)
    return fail(ParseError::kBadStatusCode, "status code is not three digits");
  if (status < 100 || status > 599)
    return fail(ParseError::kBadStatusCode, fmt::format("status code {} outside 100..599", status));
  std::string_view reason;
  if (i < line.size()) {
    if (line[i] != ' ') {
      if (line[i] == '\r')
        return fail(ParseError::kBadLineEnding, "bare CR in status line");
      return fail(ParseError::kBadStatusLine, "status code not followed by a space");
    }
    reason = line.substr(i + 1);
    for (unsigned char c : reason) {
      if (!chars::is(c, chars::kFieldValue)) {
        if (c == '\r')
          return fail(ParseError::kBadLineEnding, "bare CR in reason phrase");
        return fail(ParseError::kBadStatusLine,
                    fmt::format("invalid character {} in reason phrase", byteName(c)));
      }
    }
  }
  head_.version = v;
  head_.status = static_cast<uint16_t>(status);
  action = cb_.onStatusLine(v, head_.status, reason);
  return true;
}

bool Parser::parseHeaderLine(std::string_view line, bool trailer, std::string_view& name,
                             std::string_view& value) {
  const auto* s = reinterpret_cast<const unsigned char*>(line.data());
  const size_t n = line.size();
  auto fail = [&](ParseError e, std::string msg) {
    if (trailer)
      setError(ParseError::kBadTrailer, "trailer: " + msg);
    else
      setError(e, std::move(msg));
    return false;
  };
  if (isWs(s[0]))
    return fail(ParseError::kObsFold, "header line starts with whitespace (obsolete line folding)");
  size_t i = 0;
  while (i < n && chars::is(s[i], chars::kToken))
    ++i;
  if (i == n)
    return fail(ParseError::kBadHeaderName,
                fmt::format("header line \"{}\" has no colon", clip(line)));
  if (s[i] != ':') {
    if (isWs(s[i]) && i > 0) {
      size_t j = i;
      while (j < n && isWs(s[j]))
        ++j;
      if (j < n && s[j] == ':')
        return fail(ParseError::kWhitespaceBeforeColon,
                    fmt::format("whitespace between header name \"{}\" and colon",
                                clip(line.substr(0, i))));
    }
    if (s[i] == '\r')
      return fail(ParseError::kBadLineEnding, "bare CR in header name");
    return fail(ParseError::kBadHeaderName,
                fmt::format("invalid character {} in header name", byteName(s[i])));
  }
  if (i == 0)
    return fail(ParseError::kBadHeaderName, "empty header name");
  name = line.substr(0, i);
  size_t j = i + 1;
  while (j < n && isWs(s[j]))
    ++j;
  size_t k = n;
  while (k > j && isWs(s[k - 1]))
    --k;
  for (size_t m = firstInvalidValueByte(s, j, k); m < k; ++m) {
    if (!chars::is(s[m], chars::kFieldValue)) {
      if (s[m] == '\r')
        return fail(ParseError::kBadLineEnding,
                    fmt::format("bare CR in value of header \"{}\"", name));
      return fail(
          ParseError::kBadHeaderValue,
          fmt::format("invalid character {} in value of header \"{}\"", byteName(s[m]), name));
    }
  }
  value = line.substr(j, k - j);
  if (++field_count_ > limits_.max_headers) {
    if (trailer)
      setError(ParseError::kTrailersTooLarge,
               fmt::format("more than {} trailer fields", limits_.max_headers));
    else
      setError(ParseError::kTooManyHeaders,
               fmt::format("more than {} header fields", limits_.max_headers));
    return false;
  }
  return true;
}

bool Parser::parseContentLength(std::string_view value) {
  // A list of identical values ("5, 5") is accepted (RFC 9110 8.6); anything else that is not
  // one decimal number is an error, because a disagreement about length is how requests get
  // smuggled.
  std::optional<uint64_t> seen = head_.content_length;
  size_t i = 0;
  for (;;) {
    while (i < value.size() && isWs(value[i]))
      ++i;
    const size_t d0 = i;
    uint64_t v = 0;
    while (i < value.size() && value[i] >= '0' && value[i] <= '9') {
      const uint64_t d = static_cast<uint64_t>(value[i] - '0');
      if (v > (UINT64_MAX - d) / 10) {
        setError(ParseError::kBadContentLength, "Content-Length overflows");
        return false;
      }
      v = v * 10 + d;
      ++i;
    }
    if (i == d0) {
      setError(ParseError::kBadContentLength,
               fmt::format("Content-Length \"{}\" is not a decimal number", clip(value)));
      return false;
    }
    while (i < value.size() && isWs(value[i]))
      ++i;
    if (seen && *seen != v) {
      setError(ParseError::kConflictingContentLength,
               fmt::format("conflicting Content-Length values {} and {}", *seen, v));
      return false;
    }
    seen = v;
    if (i == value.size())
      break;
    if (value[i] != ',') {
      setError(ParseError::kBadContentLength,
               fmt::format("Content-Length \"{}\" is not a decimal number", clip(value)));
      return false;
    }
    ++i;
  }
  head_.content_length = seen;
  return true;
}

bool Parser::parseTransferEncoding(std::string_view value) {
  bool any = false;
  bool ok = true;
  forEachListElement(value, [&](std::string_view coding) {
    if (!ok)
      return;
    any = true;
    if (te_chunked_) {
      setError(ParseError::kBadTransferEncoding,
               "chunked must be the final transfer coding and applied once");
      ok = false;
      return;
    }
    if (coding.find(';') != std::string_view::npos) {
      setError(ParseError::kUnsupportedTransferEncoding,
               fmt::format("transfer coding parameters are not supported: \"{}\"", clip(coding)));
      ok = false;
      return;
    }
    if (equalsIgnoreCase(coding, "chunked")) {
      te_chunked_ = true;
      return;
    }
    static constexpr std::string_view kKnown[] = {"gzip", "x-gzip", "deflate", "compress",
                                                  "x-compress"};
    for (auto k : kKnown)
      if (equalsIgnoreCase(coding, k))
        return;
    setError(ParseError::kUnsupportedTransferEncoding,
             fmt::format("unknown transfer coding \"{}\"", clip(coding)));
    ok = false;
  });
  if (!ok)
    return false;
  if (!any) {
    setError(ParseError::kBadTransferEncoding, "empty Transfer-Encoding");
    return false;
  }
  te_seen_ = true;
  return true;
}

bool Parser::noteHeader(std::string_view name, std::string_view value) {
  switch (name.size()) {
  case 4:
    if (mode_ == ParserMode::kRequest && equalsIgnoreCase(name, "host")) {
      if (host_seen_) {
        setError(ParseError::kBadHost, "more than one Host header");
        return false;
      }
      host_seen_ = true;
      for (unsigned char c : value) {
        if (!chars::is(c, chars::kRegName) && c != '%' && c != ':' && c != '[' && c != ']') {
          setError(ParseError::kBadHost,
                   fmt::format("invalid character {} in Host header", byteName(c)));
          return false;
        }
      }
    }
    break;
  case 6:
    if (mode_ == ParserMode::kRequest && equalsIgnoreCase(name, "expect") &&
        equalsIgnoreCase(value, "100-continue"))
      head_.expect_continue = true;
    break;
  case 7:
    if (equalsIgnoreCase(name, "upgrade"))
      upgrade_seen_ = true;
    break;
  case 10:
    if (equalsIgnoreCase(name, "connection")) {
      forEachListElement(value, [&](std::string_view t) {
        if (equalsIgnoreCase(t, "close"))
          conn_close_ = true;
        else if (equalsIgnoreCase(t, "keep-alive"))
          conn_keep_alive_ = true;
        else if (equalsIgnoreCase(t, "upgrade"))
          conn_upgrade_ = true;
      });
    }
    break;
  case 14:
    if (equalsIgnoreCase(name, "content-length"))
      return parseContentLength(value);
    break;
  case 17:
    if (equalsIgnoreCase(name, "transfer-encoding"))
      return parseTransferEncoding(value);
    break;
  default:
    break;
  }
  return true;
}

bool Parser::finishHead() {
  MessageHead& h = head_;
  const bool http11 = h.version == Version::kHttp11;
  h.keep_alive = http11 ? !conn_close_ : (conn_keep_alive_ && !conn_close_);
  if (te_seen_) {
    if (h.content_length) {
      setError(ParseError::kContentLengthWithTransferEncoding,
               "both Content-Length and Transfer-Encoding are present");
      return false;
    }
    if (!http11) {
      setError(ParseError::kBadTransferEncoding, "Transfer-Encoding in an HTTP/1.0 message");
      return false;
    }
  }
  if (mode_ == ParserMode::kRequest) {
    if (http11 && !host_seen_) {
      setError(ParseError::kBadHost, "HTTP/1.1 request without a Host header");
      return false;
    }
    if (te_seen_ && !te_chunked_) {
      setError(ParseError::kBadTransferEncoding,
               "the final transfer coding of a request must be chunked");
      return false;
    }
    if (h.method == Method::kConnect) {
      // What follows a CONNECT head belongs to the tunnel.
      h.upgrade = true;
      h.framing = BodyFraming::kNone;
    } else {
      h.upgrade = http11 && upgrade_seen_ && conn_upgrade_;
      if (te_seen_)
        h.framing = BodyFraming::kChunked;
      else if (h.content_length && *h.content_length > 0)
        h.framing = BodyFraming::kContentLength;
      else
        h.framing = BodyFraming::kNone;
    }
  } else {
    h.method = response_method_;
    const uint16_t st = h.status;
    if (st < 200) {
      h.framing = BodyFraming::kNone;
      if (st == 101)
        h.upgrade = true;
      else
        h.interim = true;
    } else if (h.method == Method::kHead || st == 204 || st == 304) {
      h.framing = BodyFraming::kNone;
    } else if (h.method == Method::kConnect && st < 300) {
      h.framing = BodyFraming::kNone;
      h.upgrade = true;
    } else if (te_seen_) {
      h.framing = te_chunked_ ? BodyFraming::kChunked : BodyFraming::kUntilClose;
    } else if (h.content_length) {
      h.framing = *h.content_length > 0 ? BodyFraming::kContentLength : BodyFraming::kNone;
    } else {
      h.framing = BodyFraming::kUntilClose;
    }
    if (h.framing == BodyFraming::kUntilClose)
      h.keep_alive = false;
  }
  h.chunked = h.framing == BodyFraming::kChunked;
  switch (h.framing) {
  case BodyFraming::kNone:
    state_ = State::kMessageDone;
    break;
  case BodyFraming::kContentLength:
    remaining_ = *h.content_length;
    state_ = State::kBodyLength;
    break;
  case BodyFraming::kChunked:
    state_ = State::kChunkSize;
    break;
  case BodyFraming::kUntilClose:
    state_ = State::kBodyUntilClose;
    break;
  }
  return true;
}

bool Parser::parseChunkSize(std::string_view line) {
  const auto* s = reinterpret_cast<const unsigned char*>(line.data());
  const size_t n = line.size();
  size_t i = 0;
  uint64_t size = 0;
  while (i < n) {
    const int h = chars::hexValue(s[i]);
    if (h < 0)
      break;
    if (size > (UINT64_MAX >> 4)) {
      setError(ParseError::kBadChunkSize, "chunk size overflows");
      return false;
    }
    size = (size << 4) | static_cast<uint64_t>(h);
    ++i;
  }
  if (i == 0) {
    if (n > 0 && s[0] == '\r')
      setError(ParseError::kBadLineEnding, "bare CR in chunk size line");
    else
      setError(ParseError::kBadChunkSize, "chunk size is not a hexadecimal number");
    return false;
  }
  if (i < n && s[i] != ';' && !isWs(s[i])) {
    if (s[i] == '\r')
      setError(ParseError::kBadLineEnding, "bare CR in chunk size line");
    else
      setError(ParseError::kBadChunkSize,
               fmt::format("invalid character {} in chunk size", byteName(s[i])));
    return false;
  }
  if (size > limits_.max_chunk_size) {
    setError(ParseError::kChunkTooLarge, fmt::format("chunk of {} bytes exceeds the limit of {}",
                                                     size, limits_.max_chunk_size));
    return false;
  }
  // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ), ext-val token/quoted-string.
  auto bad = [&](std::string_view why) {
    setError(ParseError::kBadChunkExtension, fmt::format("malformed chunk extension: {}", why));
    return false;
  };
  auto skipWs = [&] {
    while (i < n && isWs(s[i]))
      ++i;
  };
  while (i < n) {
    skipWs();
    if (i == n || s[i] != ';')
      return bad("expected ';'");
    ++i;
    skipWs();
    const size_t n0 = i;
    while (i < n && chars::is(s[i], chars::kToken))
      ++i;
    if (i == n0)
      return bad("missing extension name");
    const size_t after_name = i;
    skipWs();
    if (i < n && s[i] == '=') {
      ++i;
      skipWs();
      if (i < n && s[i] == '"') {
        ++i;
        bool closed = false;
        while (i < n) {
          if (s[i] == '"') {
            closed = true;
            ++i;
            break;
          }
          if (s[i] == '\\') {
            if (i + 1 >= n || !chars::is(s[i + 1], chars::kFieldValue))
              return bad("invalid quoted-pair");
            i += 2;
            continue;
          }
          if (!chars::is(s[i], chars::kQdText))
            return bad(fmt::format("invalid character {} in quoted value", byteName(s[i])));
          ++i;
        }
        if (!closed)
          return bad("unterminated quoted value");
      } else {
        const size_t v0 = i;
        while (i < n && chars::is(s[i], chars::kToken))
          ++i;
        if (i == v0)
          return bad("missing extension value after '='");
      }
    } else {
      i = after_name;
    }
  }
  remaining_ = size;
  return true;
}

ParseResult Parser::execute(std::string_view data) {
  const char* const begin = data.data();
  const char* p = begin;
  const char* const end = begin + data.size();
  auto result = [&](ParseStatus s) { return ParseResult{static_cast<size_t>(p - begin), s}; };
  auto stopped = [&] {
    return result(state_ == State::kError ? ParseStatus::kError : ParseStatus::kPaused);
  };
  if (state_ == State::kError)
    return {0, ParseStatus::kError};
  if (paused_)
    return {0, ParseStatus::kPaused};

  for (;;) {
    switch (state_) {
    case State::kStartLine: {
      if (!begun_) {
        if (p == end)
          return result(ParseStatus::kOk);
        if (line_buf_.empty() && *p != '\r' && *p != '\n') {
          beginMessage();
          if (!apply(cb_.onMessageBegin()))
            return stopped();
        }
      }
      std::string_view line;
      switch (takeLine(p, end, section_bytes_, limits_.max_header_bytes,
                       ParseError::kHeadersTooLarge, ParseError::kBadLineEnding, line)) {
      case LineStatus::kNeedMore:
        return result(ParseStatus::kOk);
      case LineStatus::kError:
        return result(ParseStatus::kError);
      case LineStatus::kLine:
        break;
      }
      if (line.empty()) {
        // RFC 9112 2.2: an empty line before a start line is ignored (it counts toward the
        // header-size limit, so a stream of them cannot go on for ever).
        line_buf_.clear();
        continue;
      }
      if (!begun_)
        beginMessage(); // the first byte arrived glued to a leftover partial line
      Action a = Action::kContinue;
      const bool ok =
          mode_ == ParserMode::kRequest ? parseRequestLine(line, a) : parseStatusLine(line, a);
      line_buf_.clear();
      if (!ok)
        return result(ParseStatus::kError);
      state_ = State::kHeaderLine;
      if (!apply(a))
        return stopped();
      break;
    }

    case State::kHeaderLine: {
      std::string_view line;
      switch (takeLine(p, end, section_bytes_, limits_.max_header_bytes,
                       ParseError::kHeadersTooLarge, ParseError::kBadLineEnding, line)) {
      case LineStatus::kNeedMore:
        return result(ParseStatus::kOk);
      case LineStatus::kError:
        return result(ParseStatus::kError);
      case LineStatus::kLine:
        break;
      }
      if (line.empty()) {
        line_buf_.clear();
        if (!finishHead())
          return result(ParseStatus::kError);
        if (!apply(cb_.onHeadersComplete(head_)))
          return stopped();
        break;
      }
      std::string_view name, value;
      if (!parseHeaderLine(line, false, name, value) || !noteHeader(name, value))
        return result(ParseStatus::kError);
      const Action a = cb_.onHeader(name, value);
      line_buf_.clear();
      if (!apply(a))
        return stopped();
      break;
    }

    case State::kBodyLength:
    case State::kChunkData: {
      if (p == end)
        return result(ParseStatus::kOk);
      const size_t n =
          static_cast<size_t>(std::min<uint64_t>(remaining_, static_cast<uint64_t>(end - p)));
      const char* piece = p;
      p += n;
      remaining_ -= n;
      if (remaining_ == 0)
        state_ = state_ == State::kBodyLength ? State::kMessageDone : State::kChunkDataEnd;
      if (!apply(cb_.onBody(std::string_view(piece, n))))
        return stopped();
      break;
    }

    case State::kChunkSize: {
      std::string_view line;
      uint32_t used = 0; // partial bytes are counted through line_buf_
      switch (takeLine(p, end, used, limits_.max_chunk_line_bytes, ParseError::kBadChunkExtension,
                       ParseError::kBadChunkSize, line)) {
      case LineStatus::kNeedMore:
        return result(ParseStatus::kOk);
      case LineStatus::kError:
        return result(ParseStatus::kError);
      case LineStatus::kLine:
        break;
      }
      const bool ok = parseChunkSize(line);
      line_buf_.clear();
      if (!ok)
        return result(ParseStatus::kError);
      if (remaining_ == 0) {
        state_ = State::kTrailerLine;
        section_bytes_ = 0;
        field_count_ = 0;
      } else {
        state_ = State::kChunkData;
      }
      break;
    }

    case State::kChunkDataEnd: {
      std::string_view line;
      uint32_t used = 0;
      switch (
          takeLine(p, end, used, 2, ParseError::kBadChunkData, ParseError::kBadChunkData, line)) {
      case LineStatus::kNeedMore:
        return result(ParseStatus::kOk);
      case LineStatus::kError:
        if (error_ == ParseError::kBadChunkData)
          error_message_ = "chunk data not followed by CRLF";
        return result(ParseStatus::kError);
      case LineStatus::kLine:
        break;
      }
      line_buf_.clear();
      if (!line.empty()) {
        setError(ParseError::kBadChunkData, "chunk data not followed by CRLF");
        return result(ParseStatus::kError);
      }
      state_ = State::kChunkSize;
      break;
    }

    case State::kTrailerLine: {
      std::string_view line;
      switch (takeLine(p, end, section_bytes_, limits_.max_trailer_bytes,
                       ParseError::kTrailersTooLarge, ParseError::kBadTrailer, line)) {
      case LineStatus::kNeedMore:
        return result(ParseStatus::kOk);
      case LineStatus::kError:
        return result(ParseStatus::kError);
      case LineStatus::kLine:
        break;
      }
      if (line.empty()) {
        line_buf_.clear();
        state_ = State::kMessageDone;
        break;
      }
      std::string_view name, value;
      if (!parseHeaderLine(line, true, name, value))
        return result(ParseStatus::kError);
      if (equalsIgnoreCase(name, "content-length") || equalsIgnoreCase(name, "transfer-encoding") ||
          equalsIgnoreCase(name, "host")) {
        setError(ParseError::kBadTrailer,
                 fmt::format("\"{}\" is not allowed as a trailer field", name));
        return result(ParseStatus::kError);
      }
      const Action a = cb_.onTrailer(name, value);
      line_buf_.clear();
      if (!apply(a))
        return stopped();
      break;
    }

    case State::kBodyUntilClose: {
      if (p == end)
        return result(ParseStatus::kOk);
      const char* piece = p;
      p = end;
      if (!apply(cb_.onBody(std::string_view(piece, static_cast<size_t>(end - piece)))))
        return stopped();
      break;
    }

    case State::kMessageDone: {
      const bool interim = head_.interim;
      state_ = head_.upgrade ? State::kUpgraded : State::kStartLine;
      if (mode_ == ParserMode::kResponse && !interim)
        response_method_ = Method::kGet;
      section_bytes_ = 0;
      begun_ = false;
      if (!apply(cb_.onMessageComplete()))
        return stopped();
      break;
    }

    case State::kUpgraded:
      return result(ParseStatus::kUpgraded);

    case State::kError:
      return result(ParseStatus::kError);
    }
  }
}

ParseStatus Parser::finish() {
  switch (state_) {
  case State::kError:
    return ParseStatus::kError;
  case State::kUpgraded:
    return ParseStatus::kOk;
  case State::kStartLine:
    if (!begun_ && line_buf_.empty())
      return ParseStatus::kOk;
    break;
  case State::kBodyUntilClose:
  case State::kMessageDone: {
    // The body ended with the connection, or a pause held back the completion.
    state_ = State::kStartLine;
    if (mode_ == ParserMode::kResponse && !head_.interim)
      response_method_ = Method::kGet;
    section_bytes_ = 0;
    begun_ = false;
    paused_ = false;
    if (cb_.onMessageComplete() == Action::kAbort) {
      setError(ParseError::kAborted, "parsing aborted by the message handler");
      return ParseStatus::kError;
    }
    return ParseStatus::kOk;
  }
  default:
    break;
  }
  setError(ParseError::kIncompleteMessage, "connection closed in the middle of a message");
  return ParseStatus::kError;
}

// ------------------------------------------------------------------------------------------
// Serialisation

namespace {

void appendDecimal(uint64_t v, std::string& out) {
  char buf[24];
  char* e = buf + sizeof(buf);
  char* b = e;
  do {
    *--b = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  out.append(b, static_cast<size_t>(e - b));
}

void appendFields(const HeaderMap& headers, std::string& out) {
  for (auto e : headers) {
    out.append(e.name);
    out.append(": ", 2);
    out.append(e.value);
    out.append("\r\n", 2);
  }
  out.append("\r\n", 2);
}

} // namespace

void serializeRequestHead(std::string_view method, std::string_view target, Version version,
                          const HeaderMap& headers, std::string& out) {
  out.reserve(out.size() + method.size() + target.size() + 16 + headers.byteSize() +
              4 * headers.size());
  out.append(method);
  out.push_back(' ');
  out.append(target);
  out.push_back(' ');
  out.append(versionString(version));
  out.append("\r\n", 2);
  appendFields(headers, out);
}

void serializeResponseHead(Version version, uint16_t status, std::string_view reason,
                           const HeaderMap& headers, std::string& out) {
  if (reason.empty())
    reason = reasonPhrase(status);
  out.reserve(out.size() + reason.size() + 20 + headers.byteSize() + 4 * headers.size());
  out.append(versionString(version));
  out.push_back(' ');
  appendDecimal(status, out);
  out.push_back(' ');
  out.append(reason);
  out.append("\r\n", 2);
  appendFields(headers, out);
}

void appendChunk(std::string_view data, std::string& out) {
  if (data.empty())
    return;
  char buf[20];
  char* e = buf + sizeof(buf);
  char* b = e;
  uint64_t v = data.size();
  do {
    *--b = "0123456789abcdef"[v & 0xf];
    v >>= 4;
  } while (v != 0);
  out.append(b, static_cast<size_t>(e - b));
  out.append("\r\n", 2);
  out.append(data);
  out.append("\r\n", 2);
}

void appendLastChunk(std::string& out) {
  out.append("0\r\n\r\n", 5);
}

std::string_view reasonPhrase(uint16_t status) {
  switch (status) {
  case 100:
    return "Continue";
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 206:
    return "Partial Content";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 303:
    return "See Other";
  case 304:
    return "Not Modified";
  case 307:
    return "Temporary Redirect";
  case 308:
    return "Permanent Redirect";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 411:
    return "Length Required";
  case 412:
    return "Precondition Failed";
  case 413:
    return "Content Too Large";
  case 414:
    return "URI Too Long";
  case 415:
    return "Unsupported Media Type";
  case 417:
    return "Expectation Failed";
  case 421:
    return "Misdirected Request";
  case 422:
    return "Unprocessable Content";
  case 425:
    return "Too Early";
  case 426:
    return "Upgrade Required";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 505:
    return "HTTP Version Not Supported";
  default:
    return "Unknown";
  }
}

} // namespace trellis::http
