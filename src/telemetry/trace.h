#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/random.h"
#include "base/result.h"

// W3C Trace Context (`traceparent`) and `x-request-id` helpers for the data plane.
namespace trellis::telemetry {

inline constexpr std::string_view kTraceparentHeader = "traceparent";
inline constexpr std::string_view kRequestIdHeader = "x-request-id";

// The sampled bit of trace-flags. It is the only flag this version propagates; other bits
// are cleared in contexts we make, as W3C Trace Context level 1 asks of vendors that do not
// know them.
inline constexpr uint8_t kTraceFlagSampled = 0x01;

// Length of a version-00 traceparent: "00-" 32 hex "-" 16 hex "-" 2 hex.
inline constexpr size_t kTraceparentLength = 55;
// Length of a request id we make: a UUID in its 8-4-4-4-12 form.
inline constexpr size_t kRequestIdLength = 36;
// Longest incoming x-request-id kept as is; a longer one (or one with bytes outside printable
// ASCII) is replaced by a fresh id.
inline constexpr size_t kMaxRequestIdBytes = 128;

// One span's position in a trace.
struct TraceContext {
  std::array<uint8_t, 16> trace_id{};
  std::array<uint8_t, 8> span_id{}; // the parent-id field of the traceparent that carries it
  uint8_t flags = 0;

  bool sampled() const { return (flags & kTraceFlagSampled) != 0; }
  // "00-<trace-id>-<span-id>-<flags>", lowercase hex.
  std::string traceparent() const;
  std::string traceIdHex() const;
  std::string spanIdHex() const;
  bool operator==(const TraceContext&) const = default;
};

// Parses a traceparent header value. Accepts version 00 (exactly 55 characters) and, as the
// spec asks for forward compatibility, versions 01..fe whose first 55 characters have the
// version-00 layout (followed by nothing or by '-'). Rejects version ff, uppercase or
// non-hex digits, misplaced dashes, and an all-zero trace-id or parent-id. The error names
// the part that was wrong.
Result<TraceContext> parseTraceparent(std::string_view value);

// True when `id` is a usable incoming x-request-id: 1..kMaxRequestIdBytes bytes of
// printable ASCII (0x21..0x7e).
bool isAcceptableRequestId(std::string_view id);

// A fast, non-cryptographic source of ids (xoshiro256**). Not thread-safe: use one per
// thread (threadIdGenerator()) or give each test its own seeded instance.
class IdGenerator {
public:
  explicit IdGenerator(uint64_t seed);

  uint64_t next();

  // A new root context: random non-zero trace-id and span-id.
  TraceContext newTrace(bool sampled);
  // A child of `parent`: same trace-id, a new non-zero span-id, the parent's sampled bit.
  TraceContext childOf(const TraceContext& parent);
  // The traceparent to send upstream for a request that arrived with `incoming` (the header
  // value, empty when absent): a child of it when it parses, else a new root context with
  // `sample_new_traces` deciding its sampled bit.
  TraceContext propagate(std::string_view incoming, bool sample_new_traces);

  // A UUID version 4 (random) in lowercase 8-4-4-4-12 form.
  std::string requestId();
  // As requestId(), into out[0..36) without allocating.
  void writeRequestId(char* out);

private:
  Xoshiro256 gen_;
};

// The calling thread's generator, seeded from the OS's randomness on first use.
IdGenerator& threadIdGenerator();

} // namespace trellis::telemetry
