#pragma once

#include <string>
#include <string_view>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "manifest/manifest.h"

namespace trellis::manifest::testing {

// The error message for text that must fail to load (as "test.yaml").
inline std::string loadError(std::string_view yaml) {
  auto r = loadString(yaml, "test.yaml");
  if (r.ok()) {
    ADD_FAILURE() << "expected an error for:\n" << yaml;
    return "";
  }
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << r.error().message();
  return r.error().message();
}

// The single resource of text that must load.
inline Resource loadOne(std::string_view yaml) {
  auto r = loadString(yaml, "test.yaml");
  if (!r.ok()) {
    ADD_FAILURE() << r.error().message();
    return {};
  }
  if (r->size() != 1) {
    ADD_FAILURE() << "expected one resource, got " << r->size();
    return {};
  }
  return r->front();
}

// toJson, then fromJson of its dump re-parsed, gives an equal resource; so does loading the
// dump as a manifest.
inline void expectRoundTrip(const Resource& r) {
  const nlohmann::json j = toJson(r);
  auto back = fromJson(nlohmann::json::parse(j.dump()));
  ASSERT_TRUE(back.ok()) << back.error().message() << "\n" << j.dump(2);
  EXPECT_EQ(*back, r) << j.dump(2);
  EXPECT_EQ(toJson(*back), j);
  // The canonical form is also valid input for `trellis apply` (JSON is YAML).
  auto applied = loadString(j.dump(), "canonical.json");
  ASSERT_TRUE(applied.ok()) << applied.error().message();
  ASSERT_EQ(applied->size(), 1u);
  EXPECT_EQ(applied->front(), r);
}

} // namespace trellis::manifest::testing
