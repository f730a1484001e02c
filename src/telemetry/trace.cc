#include "telemetry/trace.h"

#include <cstring>
#include <random>

#include <sys/random.h>

namespace trellis::telemetry {
namespace {

constexpr char kHex[] = "0123456789abcdef";

// Lowercase hex digit value, or -1. The spec allows lowercase only.
int hexValue(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

template <size_t N>
Status parseHexField(std::string_view field, std::string_view what, size_t offset,
                     std::array<uint8_t, N>& out) {
  for (size_t i = 0; i < N; ++i) {
    const int hi = hexValue(field[2 * i]);
    const int lo = hexValue(field[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      const size_t bad = offset + 2 * i + (hi < 0 ? 0 : 1);
      return makeError(ErrorCode::kInvalidArgument,
                       "traceparent: {} has a character that is not lowercase hex at offset {}",
                       what, bad);
    }
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return okStatus();
}

template <size_t N> bool allZero(const std::array<uint8_t, N>& a) {
  for (uint8_t b : a) {
    if (b != 0)
      return false;
  }
  return true;
}

template <size_t N> void appendHex(const std::array<uint8_t, N>& a, std::string& out) {
  for (uint8_t b : a) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0xF]);
  }
}

void fillNonZero(IdGenerator& gen, uint8_t* out, size_t n) {
  // An all-zero id is invalid; with 64+ random bits it is astronomically unlikely, but retry.
  bool any = false;
  while (!any) {
    for (size_t i = 0; i < n; i += 8) {
      const uint64_t r = gen.next();
      std::memcpy(out + i, &r, std::min<size_t>(8, n - i));
    }
    for (size_t i = 0; i < n && !any; ++i)
      any = out[i] != 0;
  }
}

uint64_t osSeed() {
  uint64_t seed = 0;
  if (::getrandom(&seed, sizeof(seed), 0) == static_cast<ssize_t>(sizeof(seed)))
    return seed;
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

} // namespace

std::string TraceContext::traceparent() const {
  std::string out;
  out.reserve(kTraceparentLength);
  out.append("00-");
  appendHex(trace_id, out);
  out.push_back('-');
  appendHex(span_id, out);
  out.push_back('-');
  out.push_back(kHex[flags >> 4]);
  out.push_back(kHex[flags & 0xF]);
  return out;
}

std::string TraceContext::traceIdHex() const {
  std::string out;
  appendHex(trace_id, out);
  return out;
}

std::string TraceContext::spanIdHex() const {
  std::string out;
  appendHex(span_id, out);
  return out;
}

Result<TraceContext> parseTraceparent(std::string_view v) {
  if (v.size() < 2) {
    return makeError(ErrorCode::kInvalidArgument, "traceparent: too short ({} characters)",
                     v.size());
  }
  const int v_hi = hexValue(v[0]);
  const int v_lo = hexValue(v[1]);
  if (v_hi < 0 || v_lo < 0) {
    return makeError(ErrorCode::kInvalidArgument,
                     "traceparent: version is not two lowercase hex digits");
  }
  const int version = v_hi << 4 | v_lo;
  if (version == 0xff)
    return makeError(ErrorCode::kInvalidArgument, "traceparent: version ff is invalid");
  if (version == 0 && v.size() != kTraceparentLength) {
    return makeError(ErrorCode::kInvalidArgument,
                     "traceparent: version 00 must be {} characters, got {}",
                     kTraceparentLength, v.size());
  }
  if (v.size() < kTraceparentLength) {
    return makeError(ErrorCode::kInvalidArgument,
                     "traceparent: must be at least {} characters, got {}", kTraceparentLength,
                     v.size());
  }
  if (v.size() > kTraceparentLength && v[kTraceparentLength] != '-') {
    return makeError(ErrorCode::kInvalidArgument,
                     "traceparent: version {:02x} fields must be followed by '-'", version);
  }
  for (size_t dash : {2u, 35u, 52u}) {
    if (v[dash] != '-') {
      return makeError(ErrorCode::kInvalidArgument, "traceparent: expected '-' at offset {}",
                       dash);
    }
  }
  TraceContext ctx;
  TRELLIS_RETURN_IF_ERROR(parseHexField(v.substr(3, 32), "trace-id", 3, ctx.trace_id));
  TRELLIS_RETURN_IF_ERROR(parseHexField(v.substr(36, 16), "parent-id", 36, ctx.span_id));
  std::array<uint8_t, 1> flags{};
  TRELLIS_RETURN_IF_ERROR(parseHexField(v.substr(53, 2), "trace-flags", 53, flags));
  ctx.flags = flags[0];
  if (allZero(ctx.trace_id))
    return makeError(ErrorCode::kInvalidArgument, "traceparent: trace-id is all zeros");
  if (allZero(ctx.span_id))
    return makeError(ErrorCode::kInvalidArgument, "traceparent: parent-id is all zeros");
  return ctx;
}

bool isAcceptableRequestId(std::string_view id) {
  if (id.empty() || id.size() > kMaxRequestIdBytes)
    return false;
  for (char c : id) {
    if (c < 0x21 || c > 0x7e)
      return false;
  }
  return true;
}

IdGenerator::IdGenerator(uint64_t seed) : gen_(seed) {}

uint64_t IdGenerator::next() { return gen_.next(); }

TraceContext IdGenerator::newTrace(bool sampled) {
  TraceContext ctx;
  fillNonZero(*this, ctx.trace_id.data(), ctx.trace_id.size());
  fillNonZero(*this, ctx.span_id.data(), ctx.span_id.size());
  ctx.flags = sampled ? kTraceFlagSampled : 0;
  return ctx;
}

TraceContext IdGenerator::childOf(const TraceContext& parent) {
  TraceContext ctx;
  ctx.trace_id = parent.trace_id;
  do {
    fillNonZero(*this, ctx.span_id.data(), ctx.span_id.size());
  } while (ctx.span_id == parent.span_id);
  ctx.flags = parent.flags & kTraceFlagSampled;
  return ctx;
}

TraceContext IdGenerator::propagate(std::string_view incoming, bool sample_new_traces) {
  if (!incoming.empty()) {
    auto parsed = parseTraceparent(incoming);
    if (parsed.ok())
      return childOf(*parsed);
  }
  return newTrace(sample_new_traces);
}

void IdGenerator::writeRequestId(char* out) {
  uint8_t b[16];
  const uint64_t r0 = next();
  const uint64_t r1 = next();
  std::memcpy(b, &r0, 8);
  std::memcpy(b + 8, &r1, 8);
  b[6] = static_cast<uint8_t>((b[6] & 0x0F) | 0x40); // version 4
  b[8] = static_cast<uint8_t>((b[8] & 0x3F) | 0x80); // variant 10xx (RFC 4122)
  size_t o = 0;
  for (size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      out[o++] = '-';
    out[o++] = kHex[b[i] >> 4];
    out[o++] = kHex[b[i] & 0xF];
  }
}

std::string IdGenerator::requestId() {
  std::string out(kRequestIdLength, '\0');
  writeRequestId(out.data());
  return out;
}

IdGenerator& threadIdGenerator() {
  thread_local IdGenerator gen(osSeed());
  return gen;
}

} // namespace trellis::telemetry
