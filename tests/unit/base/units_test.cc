#include "base/units.h"

#include <gtest/gtest.h>

namespace trellis {
namespace {

using namespace std::chrono_literals;

TEST(ParseDurationTest, Units) {
  EXPECT_EQ(*parseDuration("250ms"), 250ms);
  EXPECT_EQ(*parseDuration("10s"), 10s);
  EXPECT_EQ(*parseDuration("1.5s"), 1500ms);
  EXPECT_EQ(*parseDuration("2m"), 120s);
  EXPECT_EQ(*parseDuration("1h"), 3600s);
  EXPECT_EQ(*parseDuration("7us"), 7us);
  EXPECT_EQ(*parseDuration("7\xC2\xB5s"), 7us);
  EXPECT_EQ(*parseDuration("30ns"), 30ns);
  EXPECT_EQ(*parseDuration("1m30s"), 90s);
  EXPECT_EQ(*parseDuration("0"), 0ns);
  EXPECT_EQ(*parseDuration("0s"), 0ns);
}

TEST(ParseDurationTest, BadInputNamesTheText) {
  struct Case {
    const char* in;
    const char* msg;
  } cases[] = {
      {"", "invalid duration \"\": empty"},
      {"10", "invalid duration \"10\": missing unit after \"10\" (use ns, us, ms, s, m or h)"},
      {"10x", "invalid duration \"10x\": unknown unit \"x\" (use ns, us, ms, s, m or h)"},
      {"ms", "invalid duration \"ms\": expected a number at \"ms\""},
      {"-5s", "invalid duration \"-5s\": expected a number at \"-5s\""},
      {"1..5s", "invalid duration \"1..5s\": malformed number \"1..5\""},
      {"5s ", "invalid duration \"5s \": expected a number at \" \""},
      {"99999999999h", "invalid duration \"99999999999h\": too large"},
  };
  for (const auto& c : cases) {
    auto r = parseDuration(c.in);
    ASSERT_FALSE(r.ok()) << c.in;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(r.error().message(), c.msg);
  }
}

TEST(ParseSizeTest, Units) {
  EXPECT_EQ(*parseSize("0"), 0u);
  EXPECT_EQ(*parseSize("512"), 512u);
  EXPECT_EQ(*parseSize("512B"), 512u);
  EXPECT_EQ(*parseSize("64KiB"), 64u * 1024);
  EXPECT_EQ(*parseSize("60KiB"), 61440u);
  EXPECT_EQ(*parseSize("10MiB"), 10u * 1024 * 1024);
  EXPECT_EQ(*parseSize("1GiB"), 1024ull * 1024 * 1024);
  EXPECT_EQ(*parseSize("2KB"), 2000u);
  EXPECT_EQ(*parseSize("3MB"), 3'000'000u);
  EXPECT_EQ(*parseSize("1 MiB"), 1024u * 1024);
  EXPECT_EQ(*parseSize("4k"), 4096u);
}

TEST(ParseSizeTest, BadInputNamesTheText) {
  struct Case {
    const char* in;
    const char* msg;
  } cases[] = {
      {"", "invalid size \"\": empty"},
      {"KiB", "invalid size \"KiB\": expected a number"},
      {"12XB",
       "invalid size \"12XB\": unknown unit \"XB\" (use B, KiB, MiB, GiB, KB, MB or GB)"},
      {"1.5MiB",
       "invalid size \"1.5MiB\": unknown unit \".5MiB\" (use B, KiB, MiB, GiB, KB, MB or GB)"},
      {"99999999999999999999", "invalid size \"99999999999999999999\": too large"},
      {"99999999999GiB", "invalid size \"99999999999GiB\": too large"},
  };
  for (const auto& c : cases) {
    auto r = parseSize(c.in);
    ASSERT_FALSE(r.ok()) << c.in;
    EXPECT_EQ(r.error().message(), c.msg);
  }
}

TEST(FormatDurationTest, RoundTrips) {
  for (const char* s : {"250ms", "10s", "2m", "1h", "7us", "30ns", "0s"}) {
    auto d = parseDuration(s);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(formatDuration(*d), s);
  }
}

} // namespace
} // namespace trellis
