// Fuzzes the HTTP/1.1 parser in both modes. Input layout:
//   byte 0: bit 0 mode (0 request, 1 response); bits 1-2 the method a response answers
//           (GET, HEAD, CONNECT, POST); bit 3 small limits; bit 4 pause on every message.
//   bytes 1-2: split point (little endian, modulo the payload size)
//   the rest: the bytes on the wire.
// Properties checked, beyond "no crash, no leak, no UB": feeding the payload whole, split in
// two at the chosen point, and one byte at a time gives the same events and the same error;
// consumed counts never exceed what was given; and a request that parsed re-serialises to
// a head that parses to the same events.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "http/codec.h"

using namespace trellis::http;

namespace {

struct Log : ParserCallbacks {
  std::string events;
  bool pause_on_complete = false;
  // First request, kept for the re-serialisation check.
  int messages = 0;
  std::string method, target;
  Version version = Version::kHttp11;
  HeaderMap headers;
  bool last_was_body = false;

  void add(char tag, std::string_view a, std::string_view b = {}) {
    last_was_body = false;
    events.push_back(tag);
    events.append(std::to_string(a.size()));
    events.push_back(':');
    events.append(a);
    events.append(std::to_string(b.size()));
    events.push_back(':');
    events.append(b);
  }
  Action onMessageBegin() override {
    add('B', {});
    return Action::kContinue;
  }
  Action onRequestLine(std::string_view m, std::string_view t, Version v) override {
    add('R', m, t);
    if (messages == 0) {
      method.assign(m);
      target.assign(t);
      version = v;
    }
    return Action::kContinue;
  }
  Action onStatusLine(Version v, uint16_t s, std::string_view r) override {
    add('S', std::to_string(s), r);
    return Action::kContinue;
  }
  Action onHeader(std::string_view n, std::string_view v) override {
    add('H', n, v);
    if (messages == 0)
      headers.add(n, v);
    return Action::kContinue;
  }
  Action onHeadersComplete(const MessageHead& h) override {
    add('C', std::to_string(static_cast<int>(h.framing)),
        std::to_string(h.keep_alive * 1 + h.upgrade * 2 + h.expect_continue * 4 + h.interim * 8));
    return Action::kContinue;
  }
  Action onBody(std::string_view p) override {
    if (!last_was_body)
      events.push_back('D');
    events.append(p); // merged across pieces
    last_was_body = true;
    return Action::kContinue;
  }
  Action onTrailer(std::string_view n, std::string_view v) override {
    add('T', n, v);
    return Action::kContinue;
  }
  Action onMessageComplete() override {
    add('E', {});
    ++messages;
    return pause_on_complete ? Action::kPause : Action::kContinue;
  }
};

struct Outcome {
  std::string events;
  ParseStatus status;
  ParseError error;
};

// Feeds `pieces` in order, resuming after pauses; stops at an error or upgrade.
Outcome run(ParserMode mode, Method to, const ParserLimits& limits, bool pause,
            const std::vector<std::string_view>& pieces, Log* keep = nullptr) {
  Log local;
  Log& log = keep ? *keep : local;
  log.pause_on_complete = pause;
  Parser p(mode, log, limits);
  p.expectResponseTo(to);
  ParseStatus st = ParseStatus::kOk;
  for (std::string_view piece : pieces) {
    while (true) {
      ParseResult r = p.execute(piece);
      if (r.consumed > piece.size())
        abort();
      st = r.status;
      piece.remove_prefix(r.consumed);
      if (st == ParseStatus::kPaused) {
        p.resume();
        continue;
      }
      if (st == ParseStatus::kOk && !piece.empty())
        abort(); // kOk means everything was consumed
      break;
    }
    if (st != ParseStatus::kOk)
      break;
  }
  if (st == ParseStatus::kOk)
    st = p.finish();
  return {log.events, st, p.error()};
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3)
    return 0;
  const uint8_t flags = data[0];
  const ParserMode mode = (flags & 1) ? ParserMode::kResponse : ParserMode::kRequest;
  static constexpr Method kMethods[] = {Method::kGet, Method::kHead, Method::kConnect,
                                        Method::kPost};
  const Method to = kMethods[(flags >> 1) & 3];
  ParserLimits limits;
  if (flags & 8) {
    limits.max_header_bytes = 256;
    limits.max_headers = 4;
    limits.max_chunk_line_bytes = 16;
    limits.max_chunk_size = 64;
    limits.max_trailer_bytes = 32;
  }
  const bool pause = (flags & 16) != 0;
  std::string_view in(reinterpret_cast<const char*>(data + 3), size - 3);
  size_t split = in.empty() ? 0 : (data[1] | (data[2] << 8)) % (in.size() + 1);

  Log first;
  Outcome whole = run(mode, to, limits, pause, {in}, &first);
  Outcome two = run(mode, to, limits, pause, {in.substr(0, split), in.substr(split)});
  if (whole.events != two.events || whole.status != two.status || whole.error != two.error)
    abort();
  if (in.size() <= 4096) {
    std::vector<std::string_view> bytes;
    for (size_t i = 0; i < in.size(); ++i)
      bytes.push_back(in.substr(i, 1));
    Outcome one = run(mode, to, limits, pause, bytes);
    if (whole.events != one.events || whole.status != one.status || whole.error != one.error)
      abort();
  }

  // A request head that parsed re-serialises into one that parses the same way.
  if (mode == ParserMode::kRequest && first.messages > 0) {
    std::string head;
    serializeRequestHead(first.method, first.target, first.version, first.headers, head);
    Log again;
    Parser p(ParserMode::kRequest, again, limits);
    ParseResult r = p.execute(head);
    if (r.status == ParseStatus::kError && p.error() != ParseError::kHeadersTooLarge)
      abort();
  }
  return 0;
}
