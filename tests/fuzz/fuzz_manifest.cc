// Fuzzes manifest loading (YAML documents of HTTPRoute, TrafficPolicy and Service) with
// untrusted text.
//
// Properties checked beyond "no crash, no sanitizer report, bounded memory":
//  - every resource that loads has a canonical JSON form that fromJson accepts again, giving
//    an equal resource (the round trip the server's storage relies on).

#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "manifest/manifest.h"

#define FUZZ_CHECK(cond)                                                                           \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      __builtin_trap();                                                                            \
  } while (0)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace trellis;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto rs = manifest::loadString(text, "fuzz.yaml");
  if (!rs.ok())
    return 0;
  for (const auto& r : *rs) {
    auto back = manifest::fromJson(manifest::toJson(r));
    FUZZ_CHECK(back.ok());
    FUZZ_CHECK(*back == r);
  }
  return 0;
}
