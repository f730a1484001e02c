#pragma once

#include <string>
#include <string_view>

// Text encodings shared by the exposition format and the access log. Every function here
// accepts arbitrary bytes (label values and request fields come from untrusted peers) and
// always produces valid UTF-8 in the target syntax.
namespace trellis::telemetry {

// Appends `in` to `out`, replacing every byte that does not start a well-formed UTF-8
// sequence (overlong forms, surrogates and code points past U+10FFFF included) with U+FFFD.
void appendValidUtf8(std::string_view in, std::string& out);

// True when `in` is well-formed UTF-8.
bool isValidUtf8(std::string_view in);

// Appends `in` as a JSON string literal (with the surrounding quotes): `"` and `\` escaped,
// control characters as \n \r \t \b \f or \u00XX, invalid UTF-8 replaced with U+FFFD.
void appendJsonString(std::string_view in, std::string& out);

// Appends `in` escaped for a Prometheus label value (text format 0.0.4): `\` -> `\\`,
// `"` -> `\"`, newline -> `\n`. Invalid UTF-8 is replaced with U+FFFD.
void appendPrometheusLabelValue(std::string_view in, std::string& out);

// Appends `in` escaped for a `# HELP` line: `\` -> `\\`, newline -> `\n`.
void appendPrometheusHelp(std::string_view in, std::string& out);

// Appends a sample value the way Prometheus parses it: shortest round-trip decimal,
// "+Inf", "-Inf" or "NaN".
void appendPrometheusValue(double v, std::string& out);

// Returns the longest prefix of `in` that is at most `max_bytes` long and does not cut a
// UTF-8 sequence in half (only continuation bytes are inspected; validity is not checked).
std::string_view truncateUtf8(std::string_view in, size_t max_bytes);

} // namespace trellis::telemetry
