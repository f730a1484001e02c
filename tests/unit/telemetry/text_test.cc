#include "telemetry/text.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace trellis::telemetry {
namespace {

TEST(TextTest, Utf8Validation) {
  struct Case {
    std::string in;
    bool valid;
  };
  const Case cases[] = {
      {"", true},
      {"plain ascii", true},
      {"\xc3\xa9", true},          // é
      {"\xe2\x82\xac", true},      // €
      {"\xf0\x9f\x98\x80", true},  // emoji
      {"\xf4\x8f\xbf\xbf", true},  // U+10FFFF
      {"\xff", false},
      {"\xc3", false},             // truncated
      {"\xc0\xaf", false},         // overlong '/'
      {"\xe0\x80\xaf", false},     // overlong
      {"\xed\xa0\x80", false},     // surrogate U+D800
      {"\xf4\x90\x80\x80", false}, // past U+10FFFF
      {"\x80", false},             // lone continuation
  };
  for (const Case& c : cases)
    EXPECT_EQ(isValidUtf8(c.in), c.valid) << testing::PrintToString(c.in);
}

TEST(TextTest, InvalidBytesBecomeReplacementCharacters) {
  std::string out;
  appendValidUtf8("a\xff" "b\xc3\xa9" "c\xe2\x82", out);
  EXPECT_EQ(out, "a\xef\xbf\xbd" "b\xc3\xa9" "c\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_TRUE(isValidUtf8(out));
}

TEST(TextTest, JsonStringsParseBackToTheSanitisedInput) {
  const std::string hostile = std::string("q\"b\\s/\n\r\t\b\f\x01\x1f\x7f ") + '\0' +
                              "\xe2\x80\xa8 \xc3\xa9 \xff end";
  std::string out;
  appendJsonString(hostile, out);
  nlohmann::json parsed = nlohmann::json::parse(out);
  std::string expected;
  appendValidUtf8(hostile, expected);
  EXPECT_EQ(parsed.get<std::string>(), expected);
  EXPECT_EQ(out.find('\n'), std::string::npos);
}

TEST(TextTest, PrometheusEscapes) {
  std::string out;
  appendPrometheusLabelValue("a\\b\"c\nd\te", out);
  EXPECT_EQ(out, "a\\\\b\\\"c\\nd\te");
  out.clear();
  appendPrometheusHelp("x\\y\"z\nw", out);
  EXPECT_EQ(out, "x\\\\y\"z\\nw");
}

TEST(TextTest, PrometheusValues) {
  const std::pair<double, std::string> cases[] = {
      {0, "0"},
      {1, "1"},
      {-2.5, "-2.5"},
      {0.0005, "0.0005"},
      {0.1, "0.1"},
      {1e21, "1e+21"},
      {std::numeric_limits<double>::infinity(), "+Inf"},
      {-std::numeric_limits<double>::infinity(), "-Inf"},
      {std::numeric_limits<double>::quiet_NaN(), "NaN"},
  };
  for (const auto& [v, want] : cases) {
    std::string out;
    appendPrometheusValue(v, out);
    EXPECT_EQ(out, want);
  }
}

TEST(TextTest, TruncateKeepsSequencesWhole) {
  EXPECT_EQ(truncateUtf8("hello", 10), "hello");
  EXPECT_EQ(truncateUtf8("hello", 3), "hel");
  EXPECT_EQ(truncateUtf8("ab\xe2\x82\xac", 4), "ab");      // € would be cut
  EXPECT_EQ(truncateUtf8("ab\xe2\x82\xac", 5), "ab\xe2\x82\xac");
  EXPECT_EQ(truncateUtf8("\x80\x80\x80\x80\x80\x80", 4).size(), 4u); // garbage: plain cut
}

} // namespace
} // namespace trellis::telemetry
