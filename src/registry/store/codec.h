#pragma once

#include <string>
#include <string_view>

#include "base/result.h"
#include "registry/model.h"

// The stored form of catalog objects: JSON with Consul's field names (readable with the
// sqlite3 shell, and tolerant of fields added later: unknown fields are ignored, missing ones
// take their defaults). Durations are integer nanoseconds.
namespace trellis::registry::codec {

std::string encodeNode(const Node& n);
std::string encodeService(const Service& s);
std::string encodeCheck(const Check& c);

// Errors say which field is wrong; the caller adds which row.
Result<NodePtr> decodeNode(std::string_view text);
Result<ServicePtr> decodeService(std::string_view text);
Result<CheckPtr> decodeCheck(std::string_view text);

} // namespace trellis::registry::codec
