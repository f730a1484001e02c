#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"

namespace trellis {

using Duration = std::chrono::nanoseconds;

// Parses a duration: a non-negative decimal number followed by a unit, or several such
// terms ("1m30s"). Units: ns, us (or µs), ms, s, m, h. "0" alone is accepted. Errors name
// the offending text, e.g. `invalid duration "10x": unknown unit "x"`.
Result<Duration> parseDuration(std::string_view text);

// Parses a byte size: an integer followed by an optional unit: B, KB/MB/GB (powers of 1000),
// KiB/MiB/GiB (powers of 1024), or k/m/g as binary shorthands. Overflow is an error.
Result<uint64_t> parseSize(std::string_view text);

// Formats a duration compactly ("250ms", "1.5s") for logs and config dumps.
std::string formatDuration(Duration d);

} // namespace trellis
