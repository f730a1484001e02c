#include "http/codec.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

namespace trellis::http {
namespace {

// Records every callback as a line of text; consecutive body pieces are merged so that the
// log does not depend on how the input was split.
class Recorder : public ParserCallbacks {
public:
  std::vector<std::string> events;
  std::vector<MessageHead> heads;
  std::string body;
  int messages = 0;
  std::string pause_on; // event name to pause on ("header", "complete", ...)
  bool abort_on_body = false;

  Action onMessageBegin() override { return push("begin"); }
  Action onRequestLine(std::string_view m, std::string_view t, Version v) override {
    return push(fmt::format("req {} {} {}", m, t, versionString(v)), "start");
  }
  Action onStatusLine(Version v, uint16_t s, std::string_view r) override {
    return push(fmt::format("rsp {} {} {}", versionString(v), s, r), "start");
  }
  Action onHeader(std::string_view n, std::string_view v) override {
    return push(fmt::format("h {}={}", n, v), "header");
  }
  Action onHeadersComplete(const MessageHead& h) override {
    heads.push_back(h);
    return push(fmt::format("hc framing={} cl={} ka={} up={} ex={} interim={}",
                            static_cast<int>(h.framing),
                            h.content_length ? std::to_string(*h.content_length) : "-",
                            h.keep_alive, h.upgrade, h.expect_continue, h.interim),
                "headers");
  }
  Action onBody(std::string_view piece) override {
    body.append(piece);
    if (abort_on_body)
      return Action::kAbort;
    if (!events.empty() && events.back().rfind("body ", 0) == 0) {
      events.back().append(piece);
      return pause_on == "body" ? Action::kPause : Action::kContinue;
    }
    return push(fmt::format("body {}", piece), "body");
  }
  Action onTrailer(std::string_view n, std::string_view v) override {
    return push(fmt::format("t {}={}", n, v), "trailer");
  }
  Action onMessageComplete() override {
    ++messages;
    return push("done", "complete");
  }

  std::string log() const {
    std::string out;
    for (auto& e : events)
      out += e + "\n";
    return out;
  }

private:
  Action push(std::string e, std::string_view kind = "") {
    events.push_back(std::move(e));
    if (!kind.empty() && pause_on == kind)
      return Action::kPause;
    if (kind.empty() && pause_on == "begin")
      return Action::kPause;
    return Action::kContinue;
  }
};

struct Outcome {
  ParseStatus status;
  ParseError error;
  std::string log;
  size_t consumed;
};

Outcome parseWhole(ParserMode mode, std::string_view in, ParserLimits limits = {},
                   Method response_to = Method::kGet, bool eof = false) {
  Recorder r;
  Parser p(mode, r, limits);
  p.expectResponseTo(response_to);
  ParseResult res = p.execute(in);
  if (eof && res.status == ParseStatus::kOk)
    res.status = p.finish();
  return {res.status, p.error(), r.log(), res.consumed};
}

Outcome parseBytewise(ParserMode mode, std::string_view in, ParserLimits limits = {},
                      Method response_to = Method::kGet, bool eof = false) {
  Recorder r;
  Parser p(mode, r, limits);
  p.expectResponseTo(response_to);
  ParseStatus st = ParseStatus::kOk;
  size_t consumed = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    ParseResult res = p.execute(in.substr(i, 1));
    consumed += res.consumed;
    st = res.status;
    if (st != ParseStatus::kOk)
      break;
  }
  if (eof && st == ParseStatus::kOk)
    st = p.finish();
  return {st, p.error(), r.log(), consumed};
}

ParseError requestError(std::string_view in, ParserLimits limits = {}) {
  Outcome whole = parseWhole(ParserMode::kRequest, in, limits);
  Outcome bytes = parseBytewise(ParserMode::kRequest, in, limits);
  EXPECT_EQ(whole.error, bytes.error) << "split feeding disagrees for:\n" << in;
  if (whole.error == ParseError::kNone)
    EXPECT_TRUE(whole.status == ParseStatus::kOk || whole.status == ParseStatus::kUpgraded);
  else
    EXPECT_EQ(whole.status, ParseStatus::kError);
  return whole.error;
}

ParseError responseError(std::string_view in, Method to = Method::kGet) {
  Outcome whole = parseWhole(ParserMode::kResponse, in, {}, to);
  Outcome bytes = parseBytewise(ParserMode::kResponse, in, {}, to);
  EXPECT_EQ(whole.error, bytes.error) << "split feeding disagrees for:\n" << in;
  return whole.error;
}

// ---------------------------------------------------------------------------------------
// Valid requests

TEST(CodecRequest, SimpleGet) {
  Outcome o = parseWhole(ParserMode::kRequest,
                         "GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept:  */*  \r\n\r\n");
  EXPECT_EQ(o.status, ParseStatus::kOk);
  EXPECT_EQ(o.log, "begin\n"
                   "req GET /a/b?x=1 HTTP/1.1\n"
                   "h Host=example.com\n"
                   "h Accept=*/*\n"
                   "hc framing=0 cl=- ka=true up=false ex=false interim=false\n"
                   "done\n");
}

TEST(CodecRequest, ContentLengthBody) {
  Outcome o = parseWhole(ParserMode::kRequest,
                         "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(o.status, ParseStatus::kOk);
  EXPECT_NE(o.log.find("hc framing=1 cl=5"), std::string::npos) << o.log;
  EXPECT_NE(o.log.find("body hello\ndone\n"), std::string::npos) << o.log;
}

TEST(CodecRequest, BodyViewsPointIntoCallerBuffer) {
  struct Views : ParserCallbacks {
    std::vector<std::string_view> pieces;
    std::string_view target, hname;
    Action onRequestLine(std::string_view, std::string_view t, Version) override {
      target = t;
      return Action::kContinue;
    }
    Action onHeader(std::string_view n, std::string_view) override {
      hname = n;
      return Action::kContinue;
    }
    Action onBody(std::string_view p) override {
      pieces.push_back(p);
      return Action::kContinue;
    }
  } v;
  std::string in = "POST /z HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
  Parser p(ParserMode::kRequest, v);
  ASSERT_EQ(p.execute(in).status, ParseStatus::kOk);
  ASSERT_EQ(v.pieces.size(), 1u);
  // Zero-copy: the views are inside the input buffer.
  EXPECT_EQ(v.pieces[0].data(), in.data() + in.size() - 3);
  EXPECT_EQ(v.target.data(), in.data() + 5);
}

TEST(CodecRequest, Http10KeepAliveRules) {
  auto head = [](std::string_view in) {
    Recorder r;
    Parser p(ParserMode::kRequest, r);
    EXPECT_EQ(p.execute(in).status, ParseStatus::kOk) << p.errorMessage();
    return r.heads.at(0);
  };
  EXPECT_FALSE(head("GET / HTTP/1.0\r\n\r\n").keep_alive);
  EXPECT_TRUE(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
  EXPECT_TRUE(head("GET / HTTP/1.1\r\nHost: a\r\n\r\n").keep_alive);
  EXPECT_FALSE(head("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n").keep_alive);
  EXPECT_EQ(head("GET / HTTP/1.0\r\n\r\n").version, Version::kHttp10);
}

TEST(CodecRequest, UpgradeExpectAndConnectFlags) {
  Recorder r;
  Parser p(ParserMode::kRequest, r);
  std::string in = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                   "\r\nRAWBYTES";
  ParseResult res = p.execute(in);
  EXPECT_EQ(res.status, ParseStatus::kUpgraded);
  EXPECT_EQ(in.substr(res.consumed), "RAWBYTES");
  EXPECT_TRUE(r.heads.at(0).upgrade);
  EXPECT_TRUE(p.upgraded());
  // The upgrade was declined: the same connection carries HTTP again.
  p.continueAfterUpgrade();
  EXPECT_EQ(p.execute("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status, ParseStatus::kOk);
  EXPECT_EQ(r.messages, 2);

  Recorder r2;
  Parser p2(ParserMode::kRequest, r2);
  std::string c = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03";
  res = p2.execute(c);
  EXPECT_EQ(res.status, ParseStatus::kUpgraded);
  EXPECT_EQ(res.consumed, c.size() - 2);
  EXPECT_TRUE(r2.heads.at(0).upgrade);

  Recorder r3;
  Parser p3(ParserMode::kRequest, r3);
  EXPECT_EQ(p3.execute("PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n"
                       "Content-Length: 2\r\n\r\n")
                .status,
            ParseStatus::kOk);
  EXPECT_TRUE(r3.heads.at(0).expect_continue);
  EXPECT_FALSE(p3.idle());
}

TEST(CodecRequest, TargetForms) {
  EXPECT_EQ(requestError("GET http://example.com:8080/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n"),
            ParseError::kNone);
  EXPECT_EQ(requestError("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kNone);
  EXPECT_EQ(requestError("CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n"),
            ParseError::kNone);
  EXPECT_EQ(requestError("GET /a%20b/%7e HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kNone);
  EXPECT_EQ(requestError("GET /q?a[]=1&b={x}|y HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kNone);
}

TEST(CodecRequest, LeadingEmptyLinesIgnored) {
  Outcome o = parseWhole(ParserMode::kRequest, "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(o.status, ParseStatus::kOk);
  EXPECT_NE(o.log.find("done"), std::string::npos);
}

TEST(CodecRequest, IdenticalDuplicateContentLengthAccepted) {
  Outcome o = parseWhole(ParserMode::kRequest,
                         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n"
                         "\r\nabc");
  EXPECT_EQ(o.status, ParseStatus::kOk) << o.log;
  Outcome l = parseWhole(ParserMode::kRequest,
                         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc");
  EXPECT_EQ(l.status, ParseStatus::kOk);
}

// ---------------------------------------------------------------------------------------
// Hostile requests: each maps to its own error kind.

TEST(CodecHostile, BadMethodToken) {
  EXPECT_EQ(requestError("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadMethod);
  EXPECT_EQ(requestError(" GET / HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadMethod);
  EXPECT_EQ(requestError("GE\x01T / HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadMethod);
}

TEST(CodecHostile, BadRequestLineStructure) {
  EXPECT_EQ(requestError("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadRequestLine);
  EXPECT_EQ(requestError("GET /\r\n\r\n"), ParseError::kBadRequestLine);
  EXPECT_EQ(requestError("GET\r\n\r\n"), ParseError::kBadRequestLine);
}

TEST(CodecHostile, BadTarget) {
  EXPECT_EQ(requestError("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadTarget);
  EXPECT_EQ(requestError("GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadTarget);
  EXPECT_EQ(requestError("GET /a% HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadTarget);
  EXPECT_EQ(requestError("GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadTarget);
  EXPECT_EQ(requestError("GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadTarget);
  EXPECT_EQ(requestError("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadTarget);
  EXPECT_EQ(requestError("GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadTarget);
  EXPECT_EQ(requestError("CONNECT /path HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadTarget);
  EXPECT_EQ(requestError("CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n"),
            ParseError::kBadTarget);
  EXPECT_EQ(requestError("CONNECT a:99999 HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadTarget);
  EXPECT_EQ(requestError("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadTarget);
  ParserLimits strict;
  strict.allow_lenient_target_chars = false;
  EXPECT_EQ(requestError("GET /a|b HTTP/1.1\r\nHost: a\r\n\r\n", strict), ParseError::kBadTarget);
}

TEST(CodecHostile, BadVersion) {
  EXPECT_EQ(requestError("GET / HTTP/1.1x\r\nHost: a\r\n\r\n"), ParseError::kBadVersion);
  EXPECT_EQ(requestError("GET / http/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadVersion);
  EXPECT_EQ(requestError("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), ParseError::kBadVersion);
  EXPECT_EQ(requestError("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), ParseError::kUnsupportedVersion);
  EXPECT_EQ(requestError("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), ParseError::kUnsupportedVersion);
  EXPECT_EQ(parseErrorStatus(ParseError::kUnsupportedVersion), 505);
}

TEST(CodecHostile, BadHeaderName) {
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nBad(Name): x\r\n\r\n"),
            ParseError::kBadHeaderName);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n"), ParseError::kBadHeaderName);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n"),
            ParseError::kBadHeaderName);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nA b: x\r\n\r\n"),
            ParseError::kBadHeaderName);
}

TEST(CodecHostile, BadHeaderValueControlChars) {
  EXPECT_EQ(requestError(std::string("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 35)),
            ParseError::kBadHeaderValue);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01"
                         "b\r\n\r\n"),
            ParseError::kBadHeaderValue);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n"),
            ParseError::kBadHeaderValue);
  // obs-text is allowed in values.
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n"), ParseError::kNone);
}

TEST(CodecHostile, ControlCharAtEveryOffsetOfALongValue) {
  // Long values are checked a word at a time; a bad byte must be found wherever it sits.
  for (size_t pos = 0; pos < 40; ++pos) {
    for (char bad : {'\x00', '\x01', '\x1f', '\x7f'}) {
      std::string v(40, 'a');
      v[pos] = bad;
      if (pos == 0 || pos == 39)
        v = "b" + v + "b"; // keep the byte inside the value, not in trimmed whitespace
      EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nX: " + v + "\r\n\r\n"),
                ParseError::kBadHeaderValue)
          << pos << " " << int(bad);
    }
    std::string ok(40, 'a');
    ok[pos] = (pos % 2) ? '\t' : '\xff'; // HTAB and obs-text are fine anywhere inside
    ok = "b" + ok + "b";
    EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nX: " + ok + "\r\n\r\n"), ParseError::kNone)
        << pos;
  }
}

TEST(CodecHostile, WhitespaceBeforeColon) {
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello"),
            ParseError::kWhitespaceBeforeColon);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"),
            ParseError::kWhitespaceBeforeColon);
}

TEST(CodecHostile, ObsFold) {
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  continued\r\n\r\n"),
            ParseError::kObsFold);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\n\tHost: a\r\n\r\n"), ParseError::kObsFold);
}

TEST(CodecHostile, BareLineFeed) {
  EXPECT_EQ(requestError("GET / HTTP/1.1\nHost: a\r\n\r\n"), ParseError::kBadLineEnding);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\n\r\n"), ParseError::kBadLineEnding);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\n\n"), ParseError::kBadLineEnding);
}

TEST(CodecHostile, BareCarriageReturn) {
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n"), ParseError::kBadLineEnding);
  EXPECT_EQ(requestError("GET /\r HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kBadLineEnding);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nX\r: b\r\n\r\n"), ParseError::kBadLineEnding);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\r\nHost: a\r\n\r\n"), ParseError::kBadLineEnding);
}

TEST(CodecHostile, HeadersTooLarge) {
  ParserLimits l;
  l.max_header_bytes = 100;
  std::string big = "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(100, 'v') + "\r\n\r\n";
  EXPECT_EQ(requestError(big, l), ParseError::kHeadersTooLarge);
  // A line that never ends is cut off at the limit, not buffered for ever.
  Recorder r;
  Parser p(ParserMode::kRequest, r, l);
  EXPECT_EQ(p.execute("GET / HTTP/1.1\r\nX: ").status, ParseStatus::kOk);
  ParseResult res = p.execute(std::string(200, 'a'));
  EXPECT_EQ(res.status, ParseStatus::kError);
  EXPECT_EQ(p.error(), ParseError::kHeadersTooLarge);
  EXPECT_EQ(parseErrorStatus(p.error()), 431);
  // Exactly at the limit is fine.
  std::string exact = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
  exact += std::string(100 - exact.size() - 4, 'v') + "\r\n\r\n";
  ASSERT_EQ(exact.size(), 100u);
  EXPECT_EQ(requestError(exact, l), ParseError::kNone);
  // The default is 60 KiB.
  std::string def = "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(61 * 1024, 'v') + "\r\n\r\n";
  EXPECT_EQ(parseWhole(ParserMode::kRequest, def).error, ParseError::kHeadersTooLarge);
}

TEST(CodecHostile, EndlessEmptyLinesHitTheLimit) {
  ParserLimits l;
  l.max_header_bytes = 64;
  std::string in;
  for (int i = 0; i < 100; ++i)
    in += "\r\n";
  EXPECT_EQ(requestError(in, l), ParseError::kHeadersTooLarge);
}

TEST(CodecHostile, TooManyHeaders) {
  std::string in = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 100; ++i)
    in += fmt::format("X-{}: v\r\n", i);
  in += "\r\n";
  EXPECT_EQ(requestError(in), ParseError::kTooManyHeaders);
  ParserLimits l;
  l.max_headers = 101;
  EXPECT_EQ(requestError(in, l), ParseError::kNone);
}

TEST(CodecHostile, ContentLengthAndTransferEncoding) {
  EXPECT_EQ(requestError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ParseError::kContentLengthWithTransferEncoding);
  EXPECT_EQ(requestError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                         "Content-Length: 5\r\n\r\n0\r\n\r\n"),
            ParseError::kContentLengthWithTransferEncoding);
}

TEST(CodecHostile, ConflictingContentLength) {
  EXPECT_EQ(requestError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                         "Content-Length: 6\r\n\r\nhello!"),
            ParseError::kConflictingContentLength);
  EXPECT_EQ(requestError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!"),
            ParseError::kConflictingContentLength);
}

TEST(CodecHostile, BadContentLength) {
  for (std::string v : {"abc", "-1", "+5", "0x10", "5 5", "", "5,", "1.0"}) {
    EXPECT_EQ(requestError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + v + "\r\n\r\n"),
              ParseError::kBadContentLength)
        << v;
  }
  EXPECT_EQ(requestError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: "
                         "99999999999999999999999\r\n\r\n"),
            ParseError::kBadContentLength);
}

TEST(CodecHostile, TransferEncodingNotFinallyChunked) {
  EXPECT_EQ(requestError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
            ParseError::kBadTransferEncoding);
  EXPECT_EQ(requestError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            ParseError::kBadTransferEncoding);
  EXPECT_EQ(requestError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n"),
            ParseError::kBadTransferEncoding);
  EXPECT_EQ(requestError("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ParseError::kBadTransferEncoding);
  EXPECT_EQ(requestError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n"),
            ParseError::kBadTransferEncoding);
  // gzip then chunked is a valid request framing.
  EXPECT_EQ(requestError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                         "0\r\n\r\n"),
            ParseError::kNone);
}

TEST(CodecHostile, UnknownTransferCoding) {
  EXPECT_EQ(requestError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n"),
            ParseError::kUnsupportedTransferEncoding);
  EXPECT_EQ(requestError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n"),
            ParseError::kUnsupportedTransferEncoding);
  EXPECT_EQ(requestError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n"),
            ParseError::kUnsupportedTransferEncoding);
  EXPECT_EQ(parseErrorStatus(ParseError::kUnsupportedTransferEncoding), 501);
}

TEST(CodecHostile, Host) {
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\n\r\n"), ParseError::kBadHost);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), ParseError::kBadHost);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), ParseError::kBadHost);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), ParseError::kBadHost);
  EXPECT_EQ(requestError("GET / HTTP/1.0\r\n\r\n"), ParseError::kNone);
}

constexpr std::string_view kChunkedHead =
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";

TEST(CodecHostile, BadChunkSize) {
  std::string h(kChunkedHead);
  EXPECT_EQ(requestError(h + "zz\r\n"), ParseError::kBadChunkSize);
  EXPECT_EQ(requestError(h + "\r\n"), ParseError::kBadChunkSize);
  EXPECT_EQ(requestError(h + "-5\r\nhello\r\n0\r\n\r\n"), ParseError::kBadChunkSize);
  EXPECT_EQ(requestError(h + "5x\r\nhello\r\n0\r\n\r\n"), ParseError::kBadChunkSize);
  EXPECT_EQ(requestError(h + "10000000000000000\r\n"), ParseError::kBadChunkSize); // overflow
  EXPECT_EQ(requestError(h + "5\nhello\r\n0\r\n\r\n"), ParseError::kBadChunkSize); // bare LF
}

TEST(CodecHostile, ChunkTooLarge) {
  std::string h(kChunkedHead);
  ParserLimits l;
  l.max_chunk_size = 1024;
  EXPECT_EQ(requestError(h + "401\r\n", l), ParseError::kChunkTooLarge);
  EXPECT_EQ(requestError(h + "400\r\n", l), ParseError::kNone);
  EXPECT_EQ(requestError(h + "fffffffffffffff\r\n"), ParseError::kChunkTooLarge);
}

TEST(CodecHostile, MissingCrlfAfterChunkData) {
  std::string h(kChunkedHead);
  EXPECT_EQ(requestError(h + "5\r\nhelloXX\r\n0\r\n\r\n"), ParseError::kBadChunkData);
  EXPECT_EQ(requestError(h + "5\r\nhello\n0\r\n\r\n"), ParseError::kBadChunkData);
  EXPECT_EQ(requestError(h + "3\r\nhello\r\n0\r\n\r\n"), ParseError::kBadChunkData);
}

TEST(CodecHostile, BadChunkExtension) {
  std::string h(kChunkedHead);
  EXPECT_EQ(requestError(h + "5;\r\nhello\r\n0\r\n\r\n"), ParseError::kBadChunkExtension);
  EXPECT_EQ(requestError(h + "5;a=\r\nhello\r\n0\r\n\r\n"), ParseError::kBadChunkExtension);
  EXPECT_EQ(requestError(h + "5;a=\"x\r\nhello\r\n0\r\n\r\n"), ParseError::kBadChunkExtension);
  EXPECT_EQ(requestError(h + "5 \r\nhello\r\n0\r\n\r\n"), ParseError::kBadChunkExtension);
  EXPECT_EQ(requestError(h + "5;a=b c\r\nhello\r\n0\r\n\r\n"), ParseError::kBadChunkExtension);
  EXPECT_EQ(requestError(h + "5;a\x01\r\nhello\r\n0\r\n\r\n"), ParseError::kBadChunkExtension);
  // A chunk line that never ends is cut off at max_chunk_line_bytes.
  ParserLimits l;
  l.max_chunk_line_bytes = 64;
  EXPECT_EQ(requestError(h + "5;" + std::string(100, 'a'), l), ParseError::kBadChunkExtension);
  // Valid extensions pass.
  EXPECT_EQ(requestError(h + "5 ; a=b;c ; d = \"q \\\" x\"\r\nhello\r\n0;e\r\n\r\n"),
            ParseError::kNone);
}

TEST(CodecHostile, BadTrailers) {
  std::string h(kChunkedHead);
  EXPECT_EQ(requestError(h + "0\r\nBad Trailer: x\r\n\r\n"), ParseError::kBadTrailer);
  EXPECT_EQ(requestError(h + "0\r\nX: a\x01\r\n\r\n"), ParseError::kBadTrailer);
  EXPECT_EQ(requestError(h + "0\r\n folded\r\n\r\n"), ParseError::kBadTrailer);
  EXPECT_EQ(requestError(h + "0\r\nContent-Length: 5\r\n\r\n"), ParseError::kBadTrailer);
  EXPECT_EQ(requestError(h + "0\r\nX: a\n\r\n"), ParseError::kBadTrailer);
  ParserLimits l;
  l.max_trailer_bytes = 32;
  EXPECT_EQ(requestError(h + "0\r\nX: " + std::string(40, 'a') + "\r\n\r\n", l),
            ParseError::kTrailersTooLarge);
  Outcome ok = parseWhole(ParserMode::kRequest, h + "0\r\nX-Sum: abc\r\n\r\n");
  EXPECT_EQ(ok.status, ParseStatus::kOk);
  EXPECT_NE(ok.log.find("t X-Sum=abc\ndone"), std::string::npos) << ok.log;
}

TEST(CodecHostile, IncompleteAtEof) {
  Recorder r;
  Parser p(ParserMode::kRequest, r);
  EXPECT_EQ(p.execute("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc").status,
            ParseStatus::kOk);
  EXPECT_EQ(p.finish(), ParseStatus::kError);
  EXPECT_EQ(p.error(), ParseError::kIncompleteMessage);
  // A clean close between messages is not an error.
  Recorder r2;
  Parser p2(ParserMode::kRequest, r2);
  EXPECT_EQ(p2.execute("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status, ParseStatus::kOk);
  EXPECT_TRUE(p2.idle());
  EXPECT_EQ(p2.finish(), ParseStatus::kOk);
}

TEST(CodecHostile, ErrorIsSticky) {
  Recorder r;
  Parser p(ParserMode::kRequest, r);
  EXPECT_EQ(p.execute("BAD\x01 / HTTP/1.1\r\n").status, ParseStatus::kError);
  EXPECT_FALSE(p.errorMessage().empty());
  EXPECT_EQ(p.execute("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status, ParseStatus::kError);
  p.reset();
  EXPECT_EQ(p.execute("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status, ParseStatus::kOk);
}

// ---------------------------------------------------------------------------------------
// Streaming, splitting, pipelining, pause

const std::vector<std::string>& validRequests() {
  static const std::vector<std::string> v = {
      "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
      "POST /submit?x=%20 HTTP/1.1\r\nHost: a.b:80\r\nContent-Length: 11\r\n"
      "Content-Type: text/plain\r\n\r\nhello world",
      "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
      "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
      "\r\nOPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
      "PUT /big HTTP/1.1\r\nHost: a\r\nContent-Length: 300\r\n\r\n" + std::string(300, 'z'),
      // Pipelined: three in one buffer.
      "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
      "\r\nokGET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
  };
  return v;
}

TEST(CodecSplit, ByteAtATimeEqualsWhole) {
  for (const auto& in : validRequests()) {
    Outcome whole = parseWhole(ParserMode::kRequest, in);
    Outcome bytes = parseBytewise(ParserMode::kRequest, in);
    EXPECT_EQ(whole.status, ParseStatus::kOk) << in;
    EXPECT_EQ(whole.log, bytes.log) << in;
    EXPECT_EQ(bytes.consumed, in.size());
  }
}

TEST(CodecSplit, EverySplitPointEqualsWhole) {
  for (const auto& in : validRequests()) {
    Outcome whole = parseWhole(ParserMode::kRequest, in);
    for (size_t cut = 1; cut < in.size(); ++cut) {
      Recorder r;
      Parser p(ParserMode::kRequest, r);
      ASSERT_EQ(p.execute(std::string_view(in).substr(0, cut)).status, ParseStatus::kOk);
      ASSERT_EQ(p.execute(std::string_view(in).substr(cut)).status, ParseStatus::kOk);
      ASSERT_EQ(r.log(), whole.log) << "cut at " << cut << " of:\n" << in;
    }
  }
}

TEST(CodecSplit, ChunkedBodyStreamsInPieces) {
  // The body is delivered as it arrives, not after the message is complete.
  Recorder r;
  Parser p(ParserMode::kRequest, r);
  ASSERT_EQ(p.execute("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "a\r\n01234")
                .status,
            ParseStatus::kOk);
  EXPECT_EQ(r.body, "01234");
  EXPECT_EQ(r.messages, 0);
  ASSERT_EQ(p.execute("56789\r\n").status, ParseStatus::kOk);
  EXPECT_EQ(r.body, "0123456789");
  ASSERT_EQ(p.execute("3\r\nabc\r\n0\r\n\r\n").status, ParseStatus::kOk);
  EXPECT_EQ(r.body, "0123456789abc");
  EXPECT_EQ(r.messages, 1);
}

TEST(CodecSplit, PipelinedRequests) {
  Recorder r;
  Parser p(ParserMode::kRequest, r);
  ASSERT_EQ(p.execute(validRequests()[6]).status, ParseStatus::kOk);
  EXPECT_EQ(r.messages, 3);
  ASSERT_EQ(r.heads.size(), 3u);
  EXPECT_TRUE(r.heads[0].keep_alive);
  EXPECT_EQ(r.heads[1].content_length.value_or(0), 2u);
  EXPECT_FALSE(r.heads[2].keep_alive);
  EXPECT_EQ(r.body, "ok");
}

TEST(CodecPause, PauseOnMessageCompleteAndResume) {
  const std::string in = validRequests()[6];
  Recorder r;
  r.pause_on = "complete";
  Parser p(ParserMode::kRequest, r);
  std::string_view rest = in;
  int pauses = 0;
  for (;;) {
    ParseResult res = p.execute(rest);
    rest.remove_prefix(res.consumed);
    if (res.status == ParseStatus::kOk)
      break;
    ASSERT_EQ(res.status, ParseStatus::kPaused);
    ++pauses;
    EXPECT_EQ(r.messages, pauses);
    // While paused, execute() consumes nothing.
    EXPECT_EQ(p.execute(rest).consumed, 0u);
    p.resume();
  }
  EXPECT_EQ(pauses, 3);
  EXPECT_TRUE(rest.empty());
  EXPECT_EQ(r.log(), parseWhole(ParserMode::kRequest, in).log);
}

TEST(CodecPause, PauseOnEveryEventKind) {
  for (std::string kind : {"begin", "start", "header", "headers", "body", "trailer"}) {
    const std::string in = validRequests()[2] + validRequests()[1];
    Recorder r;
    r.pause_on = kind;
    Parser p(ParserMode::kRequest, r);
    std::string_view rest = in;
    int pauses = 0;
    for (int guard = 0; guard < 1000; ++guard) {
      ParseResult res = p.execute(rest);
      rest.remove_prefix(res.consumed);
      if (res.status == ParseStatus::kOk)
        break;
      ASSERT_EQ(res.status, ParseStatus::kPaused) << kind << ": " << p.errorMessage();
      ++pauses;
      p.resume();
    }
    EXPECT_GT(pauses, 0) << kind;
    EXPECT_TRUE(rest.empty()) << kind;
    EXPECT_EQ(r.log(), parseWhole(ParserMode::kRequest, in).log) << kind;
  }
}

TEST(CodecPause, PauseInHeadersCompleteOfBodilessMessage) {
  Recorder r;
  r.pause_on = "headers";
  Parser p(ParserMode::kRequest, r);
  ParseResult res = p.execute("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(res.status, ParseStatus::kPaused);
  EXPECT_EQ(r.messages, 0);
  p.resume();
  res = p.execute("");
  EXPECT_EQ(res.status, ParseStatus::kOk);
  EXPECT_EQ(r.messages, 1);
}

TEST(CodecPause, AbortFromCallback) {
  Recorder r;
  r.abort_on_body = true;
  Parser p(ParserMode::kRequest, r);
  ParseResult res = p.execute("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
  EXPECT_EQ(res.status, ParseStatus::kError);
  EXPECT_EQ(p.error(), ParseError::kAborted);
}

// ---------------------------------------------------------------------------------------
// Responses

TEST(CodecResponse, ContentLengthAndChunked) {
  Outcome o =
      parseWhole(ParserMode::kResponse,
                 "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
                 "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nyo\r\n0\r\n\r\n");
  EXPECT_EQ(o.status, ParseStatus::kOk);
  EXPECT_EQ(o.log, "begin\nrsp HTTP/1.1 200 OK\nh Content-Length=2\n"
                   "hc framing=1 cl=2 ka=true up=false ex=false interim=false\nbody hi\ndone\n"
                   "begin\nrsp HTTP/1.1 201 Created\nh Transfer-Encoding=chunked\n"
                   "hc framing=2 cl=- ka=true up=false ex=false interim=false\nbody yo\ndone\n");
}

TEST(CodecResponse, HeadResponseHasNoBody) {
  Recorder r;
  Parser p(ParserMode::kResponse, r);
  p.expectResponseTo(Method::kHead);
  // The Content-Length describes the GET body; none follows. The next response is a GET's.
  ParseResult res = p.execute("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                              "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
  EXPECT_EQ(res.status, ParseStatus::kOk);
  EXPECT_EQ(r.messages, 2);
  EXPECT_EQ(r.heads.at(0).framing, BodyFraming::kNone);
  EXPECT_EQ(r.heads.at(0).content_length.value_or(0), 1000u);
  EXPECT_EQ(r.heads.at(0).method, Method::kHead);
  EXPECT_EQ(r.body, "abc");
}

TEST(CodecResponse, NoBodyFor204And304) {
  for (std::string st : {"204 No Content", "304 Not Modified"}) {
    Recorder r;
    Parser p(ParserMode::kResponse, r);
    ParseResult res = p.execute("HTTP/1.1 " + st +
                                "\r\nContent-Length: 5\r\n\r\n"
                                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    EXPECT_EQ(res.status, ParseStatus::kOk);
    EXPECT_EQ(r.messages, 2) << st;
    EXPECT_TRUE(r.body.empty());
    EXPECT_TRUE(r.heads.at(0).keep_alive);
  }
}

TEST(CodecResponse, ContinueIsInterim) {
  Recorder r;
  Parser p(ParserMode::kResponse, r);
  p.expectResponseTo(Method::kHead);
  ParseResult res = p.execute("HTTP/1.1 100 Continue\r\n\r\n"
                              "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
                              "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n");
  EXPECT_EQ(res.status, ParseStatus::kOk);
  ASSERT_EQ(r.heads.size(), 3u);
  EXPECT_TRUE(r.heads[0].interim);
  EXPECT_TRUE(r.heads[1].interim);
  EXPECT_FALSE(r.heads[2].interim);
  // The HEAD expectation survives the interim responses and applies to the final one.
  EXPECT_EQ(r.heads[2].framing, BodyFraming::kNone);
  EXPECT_EQ(r.messages, 3);
}

TEST(CodecResponse, ReadUntilClose) {
  for (bool bytewise : {false, true}) {
    std::string in = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of this is body";
    Outcome o = bytewise ? parseBytewise(ParserMode::kResponse, in, {}, Method::kGet, true)
                         : parseWhole(ParserMode::kResponse, in, {}, Method::kGet, true);
    EXPECT_EQ(o.status, ParseStatus::kOk);
    EXPECT_NE(o.log.find("hc framing=3 cl=- ka=false"), std::string::npos) << o.log;
    EXPECT_NE(o.log.find("body all of this is body\ndone\n"), std::string::npos) << o.log;
  }
  // Transfer-Encoding whose final coding is not chunked: also delimited by close.
  Outcome g =
      parseWhole(ParserMode::kResponse, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz", {},
                 Method::kGet, true);
  EXPECT_EQ(g.status, ParseStatus::kOk);
  EXPECT_NE(g.log.find("framing=3"), std::string::npos);
}

TEST(CodecResponse, SwitchingProtocolsAndConnectTunnel) {
  Recorder r;
  Parser p(ParserMode::kResponse, r);
  std::string in = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\n\r\n\x81\x05hello";
  ParseResult res = p.execute(in);
  EXPECT_EQ(res.status, ParseStatus::kUpgraded);
  EXPECT_EQ(in.substr(res.consumed), "\x81\x05hello");

  Recorder r2;
  Parser p2(ParserMode::kResponse, r2);
  p2.expectResponseTo(Method::kConnect);
  res = p2.execute("HTTP/1.1 200 Connection Established\r\n\r\nTLS");
  EXPECT_EQ(res.status, ParseStatus::kUpgraded);
  EXPECT_TRUE(r2.heads.at(0).upgrade);
}

TEST(CodecResponse, Http10KeepAlive) {
  Recorder r;
  Parser p(ParserMode::kResponse, r);
  ASSERT_EQ(p.execute("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").status, ParseStatus::kOk);
  EXPECT_FALSE(r.heads.at(0).keep_alive);
  ASSERT_EQ(
      p.execute("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").status,
      ParseStatus::kOk);
  EXPECT_TRUE(r.heads.at(1).keep_alive);
}

TEST(CodecResponse, StatusLineVariants) {
  EXPECT_EQ(responseError("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"), ParseError::kNone);
  EXPECT_EQ(responseError("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"), ParseError::kNone);
  EXPECT_EQ(responseError("HTTP/1.1 2OO OK\r\n\r\n"), ParseError::kBadStatusCode);
  EXPECT_EQ(responseError("HTTP/1.1 20 OK\r\n\r\n"), ParseError::kBadStatusCode);
  EXPECT_EQ(responseError("HTTP/1.1 2000 OK\r\n\r\n"), ParseError::kBadStatusCode);
  EXPECT_EQ(responseError("HTTP/1.1 099 OK\r\n\r\n"), ParseError::kBadStatusCode);
  EXPECT_EQ(responseError("HTTP/1.1 600 OK\r\n\r\n"), ParseError::kBadStatusCode);
  EXPECT_EQ(responseError("HTTP/1.1\r\n\r\n"), ParseError::kBadStatusLine);
  EXPECT_EQ(responseError("HTTP/1.1 200 O\x01K\r\n\r\n"), ParseError::kBadStatusLine);
  EXPECT_EQ(responseError("HTTP/1.1 200OK\r\n\r\n"), ParseError::kBadStatusLine);
  EXPECT_EQ(responseError("HTTP/1.1 200\tOK\r\n\r\n"), ParseError::kBadStatusLine);
  EXPECT_EQ(responseError("HTTX/1.1 200 OK\r\n\r\n"), ParseError::kBadVersion);
  EXPECT_EQ(responseError("HTTP/3.0 200 OK\r\n\r\n"), ParseError::kUnsupportedVersion);
}

TEST(CodecResponse, HostileFramingRejected) {
  EXPECT_EQ(responseError("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            ParseError::kConflictingContentLength);
  EXPECT_EQ(responseError("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n"),
            ParseError::kContentLengthWithTransferEncoding);
  EXPECT_EQ(responseError("HTTP/1.1 200 OK\r\nTransfer-Encoding: br\r\n\r\n"),
            ParseError::kUnsupportedTransferEncoding);
  EXPECT_EQ(responseError("HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n"), ParseError::kBadLineEnding);
  // Host is not required (or checked) on responses.
  EXPECT_EQ(responseError("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), ParseError::kNone);
}

TEST(CodecResponse, BytewiseEqualsWhole) {
  std::string in = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                   "\r\n4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\nExpires: never\r\n\r\n"
                   "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnah";
  Outcome whole = parseWhole(ParserMode::kResponse, in);
  Outcome bytes = parseBytewise(ParserMode::kResponse, in);
  EXPECT_EQ(whole.status, ParseStatus::kOk);
  EXPECT_EQ(whole.log, bytes.log);
}

// ---------------------------------------------------------------------------------------
// Serialisation round trips through the parser.

TEST(CodecSerialize, RequestAndResponseHeadsRoundTrip) {
  HeaderMap h{{"Host", "example.com"}, {"X-Multi", "a"}, {"X-Multi", "b"}};
  std::string out;
  serializeRequestHead("PATCH", "/r?q=1", Version::kHttp11, h, out);
  EXPECT_EQ(out, "PATCH /r?q=1 HTTP/1.1\r\nHost: example.com\r\nX-Multi: a\r\nX-Multi: b\r\n\r\n");
  Outcome o = parseWhole(ParserMode::kRequest, out);
  EXPECT_EQ(o.status, ParseStatus::kOk);

  std::string rsp;
  HeaderMap rh{{"Transfer-Encoding", "chunked"}};
  serializeResponseHead(Version::kHttp11, 404, "", rh, rsp);
  EXPECT_EQ(rsp.substr(0, 24), "HTTP/1.1 404 Not Found\r\n");
  appendChunk("hello", rsp);
  appendChunk("", rsp); // nothing: an empty chunk would end the body
  appendChunk(std::string(300, 'x'), rsp);
  appendLastChunk(rsp);
  Recorder r;
  Parser p(ParserMode::kResponse, r);
  EXPECT_EQ(p.execute(rsp).status, ParseStatus::kOk);
  EXPECT_EQ(r.body, "hello" + std::string(300, 'x'));
  EXPECT_EQ(r.heads.at(0).status, 404);
  EXPECT_EQ(r.messages, 1);
}

TEST(CodecMethod, Tokens) {
  EXPECT_EQ(methodFromToken("GET"), Method::kGet);
  EXPECT_EQ(methodFromToken("get"), Method::kOther); // methods are case-sensitive
  EXPECT_EQ(methodFromToken("CONNECT"), Method::kConnect);
  EXPECT_EQ(methodName(Method::kOptions), "OPTIONS");
  EXPECT_STREQ(parseErrorName(ParseError::kObsFold), "obs_fold");
  for (int i = 0; i < static_cast<int>(ParseError::kCount); ++i)
    EXPECT_STRNE(parseErrorName(static_cast<ParseError>(i)), "unknown");
}

} // namespace
} // namespace trellis::http
