#include <gtest/gtest.h>

#include "control/filter.h"

namespace trellis::control {
namespace {

bool known(std::string_view s) {
  return s == "ServiceTags" || s == "ServiceName" || s.substr(0, 11) == "ServiceMeta";
}

FieldValue resolve(std::string_view sel) {
  if (sel == "ServiceTags")
    return FieldValue::ofList({"primary", "v2"});
  if (sel == "ServiceName")
    return FieldValue::string("web");
  if (sel == "ServiceMeta")
    return FieldValue::ofMap({{"version", "2"}});
  if (sel == "ServiceMeta.version")
    return FieldValue::string("2");
  return FieldValue{};
}

bool eval(std::string_view text) {
  auto f = Filter::parse(text, known);
  EXPECT_TRUE(f.ok()) << text << ": " << (f.ok() ? "" : f.error().message());
  return f.ok() && f->matches(resolve);
}

TEST(Filter, Matches) {
  EXPECT_TRUE(eval(R"(ServiceMeta.version == "2")"));
  EXPECT_FALSE(eval(R"(ServiceMeta.version == "3")"));
  EXPECT_TRUE(eval(R"(ServiceMeta.version != "3")"));
  EXPECT_TRUE(eval(R"(ServiceTags contains "primary")"));
  EXPECT_FALSE(eval(R"(ServiceTags contains "prim")"));
  EXPECT_TRUE(eval(R"("v2" in ServiceTags)"));
  EXPECT_TRUE(eval(R"(v2 in ServiceTags)"));
  EXPECT_TRUE(eval(R"("v3" not in ServiceTags)"));
  EXPECT_TRUE(eval(R"(ServiceTags not contains "x")"));
  EXPECT_TRUE(eval(R"(ServiceMeta contains "version")"));
  EXPECT_TRUE(eval(R"(ServiceMeta.other is empty)"));
  EXPECT_TRUE(eval(R"(ServiceTags is not empty)"));
  EXPECT_TRUE(eval(R"(ServiceName == web and (ServiceMeta.version == "1" or "v2" in ServiceTags))"));
  EXPECT_FALSE(eval(R"(not ServiceName == `web`)"));
  EXPECT_TRUE(eval(R"(ServiceName == "w\"x" or ServiceName == "web")"));
}

TEST(Filter, Errors) {
  auto err = [](std::string_view text) {
    auto f = Filter::parse(text, known);
    EXPECT_FALSE(f.ok()) << text;
    return f.ok() ? std::string() : f.error().message();
  };
  EXPECT_EQ(err(R"(Bogus == "x")"), "filter: unknown selector \"Bogus\"");
  EXPECT_NE(err(R"(ServiceName ==)").find("expected a value"), std::string::npos);
  EXPECT_NE(err(R"(ServiceName == "x)").find("unterminated"), std::string::npos);
  EXPECT_NE(err(R"((ServiceName == "x")").find("expected ')'"), std::string::npos);
  EXPECT_NE(err(R"(ServiceName ~ "x")").find("expected =="), std::string::npos);
  EXPECT_NE(err(R"(ServiceName == "x" junk)").find("unexpected text"), std::string::npos);
  std::string deep(200, '(');
  EXPECT_NE(err(deep + "ServiceName == x").find("nested too deeply"), std::string::npos);
  EXPECT_NE(err(std::string(kMaxFilterLength + 1, ' ')).find("longer than"), std::string::npos);
}

} // namespace
} // namespace trellis::control
