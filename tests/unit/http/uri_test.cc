#include "http/uri.h"

#include <gtest/gtest.h>

namespace trellis::http {
namespace {

TEST(Uri, PercentDecode) {
  EXPECT_EQ(*percentDecode("a%20b%2Fc"), "a b/c");
  EXPECT_EQ(*percentDecode("a+b"), "a+b");
  EXPECT_EQ(*percentDecode("a+b", true), "a b");
  EXPECT_EQ(*percentDecode("%e2%9c%93"), "\xe2\x9c\x93");
  EXPECT_FALSE(percentDecode("%").ok());
  EXPECT_FALSE(percentDecode("%4").ok());
  EXPECT_FALSE(percentDecode("%zz").ok());
}

TEST(Uri, PercentEncodeRoundTrips) {
  const std::string raw = "a b/c?d=e&f\xff";
  EXPECT_EQ(percentEncode(raw), "a%20b%2Fc%3Fd%3De%26f%FF");
  EXPECT_EQ(percentEncode("/v1/kv/x y", true), "/v1/kv/x%20y");
  EXPECT_EQ(*percentDecode(percentEncode(raw)), raw);
}

TEST(Uri, ParseQuery) {
  auto q = parseQuery("recurse&index=10&dc=&x=a+b%3D&&y=1=2");
  ASSERT_TRUE(q.ok());
  QueryParams want = {{"recurse", ""}, {"index", "10"}, {"dc", ""}, {"x", "a b="}, {"y", "1=2"}};
  EXPECT_EQ(*q, want);
  EXPECT_TRUE(parseQuery("")->empty());
  EXPECT_FALSE(parseQuery("a=%G0").ok());
}

TEST(Uri, SplitTarget) {
  auto t = splitTarget("/v1/health?passing");
  EXPECT_EQ(t.path, "/v1/health");
  EXPECT_EQ(t.query, "passing");
  t = splitTarget("/plain");
  EXPECT_EQ(t.path, "/plain");
  EXPECT_EQ(t.query, "");
  t = splitTarget("http://example.com:8080/p/q?x=1");
  EXPECT_EQ(t.path, "/p/q");
  EXPECT_EQ(t.query, "x=1");
  t = splitTarget("http://example.com");
  EXPECT_EQ(t.path, "/");
  t = splitTarget("http://example.com?z");
  EXPECT_EQ(t.path, "/");
  EXPECT_EQ(t.query, "z");
  t = splitTarget("*");
  EXPECT_EQ(t.path, "*");
}

} // namespace
} // namespace trellis::http
