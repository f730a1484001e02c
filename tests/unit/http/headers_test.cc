#include "http/headers.h"

#include <gtest/gtest.h>

namespace trellis::http {
namespace {

TEST(HeaderMap, AddGetCaseInsensitive) {
  HeaderMap h;
  h.add("Content-Type", "text/plain");
  h.add("X-A", "1");
  h.add("x-a", "2");
  EXPECT_EQ(h.size(), 3u);
  EXPECT_EQ(h.get("content-type").value_or(""), "text/plain");
  EXPECT_EQ(h.get("X-A").value_or(""), "1");
  EXPECT_EQ(h.count("X-a"), 2u);
  EXPECT_EQ(h.getAll("x-A"), "1, 2");
  EXPECT_FALSE(h.get("missing").has_value());
  EXPECT_FALSE(h.contains("missing"));
  // Names keep their spelling and order.
  std::vector<std::string> names;
  for (auto e : h)
    names.emplace_back(e.name);
  EXPECT_EQ(names, (std::vector<std::string>{"Content-Type", "X-A", "x-a"}));
}

TEST(HeaderMap, SetReplacesAllAtFirstPosition) {
  HeaderMap h{{"A", "1"}, {"B", "2"}, {"a", "3"}, {"C", "4"}};
  h.set("A", "new");
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h.at(0).name, "A");
  EXPECT_EQ(h.at(0).value, "new");
  EXPECT_EQ(h.at(1).name, "B");
  EXPECT_EQ(h.at(2).name, "C");
  h.set("D", "5");
  EXPECT_EQ(h.at(3).value, "5");
  // Setting from a view into the map itself is safe.
  h.set("B", *h.get("C"));
  EXPECT_EQ(h.get("b").value_or(""), "4");
}

TEST(HeaderMap, RemoveAndCompaction) {
  HeaderMap h;
  for (int i = 0; i < 200; ++i)
    h.add("X-Long-Name-" + std::to_string(i % 2), std::string(20, 'v'));
  EXPECT_EQ(h.remove("x-long-name-0"), 100u);
  EXPECT_EQ(h.size(), 100u);
  EXPECT_EQ(h.remove("x-long-name-0"), 0u);
  for (auto e : h)
    EXPECT_EQ(e.name, "X-Long-Name-1");
  EXPECT_EQ(h.byteSize(), 100u * (13 + 20));
  h.clear();
  EXPECT_TRUE(h.empty());
}

TEST(HeaderMap, Equality) {
  HeaderMap a{{"A", "1"}}, b{{"A", "1"}}, c{{"a", "1"}};
  EXPECT_EQ(a, b);
  EXPECT_FALSE(a == c);
}

TEST(Headers, Validation) {
  EXPECT_TRUE(isValidHeaderName("X-Foo_bar.1"));
  EXPECT_FALSE(isValidHeaderName(""));
  EXPECT_FALSE(isValidHeaderName("X Foo"));
  EXPECT_FALSE(isValidHeaderName("X:Foo"));
  EXPECT_TRUE(isValidHeaderValue("a b\tc"));
  EXPECT_FALSE(isValidHeaderValue("a\r\nInjected: 1"));
  EXPECT_FALSE(isValidHeaderValue(" lead"));
  EXPECT_FALSE(validateHeaders(HeaderMap{{"Ok", "1"}, {"Bad", "x\ny"}}).ok());
  EXPECT_TRUE(validateHeaders(HeaderMap{{"Ok", "1"}}).ok());
}

TEST(Headers, HopByHop) {
  EXPECT_TRUE(isHopByHopHeader("Connection"));
  EXPECT_TRUE(isHopByHopHeader("keep-alive"));
  EXPECT_TRUE(isHopByHopHeader("Proxy-Connection"));
  EXPECT_TRUE(isHopByHopHeader("TE"));
  EXPECT_TRUE(isHopByHopHeader("Trailer"));
  EXPECT_TRUE(isHopByHopHeader("Transfer-Encoding"));
  EXPECT_TRUE(isHopByHopHeader("Upgrade"));
  EXPECT_FALSE(isHopByHopHeader("Content-Length"));
  EXPECT_FALSE(isHopByHopHeader("X-Custom"));

  HeaderMap h{{"Connection", "close, X-Secret"},
              {"X-Secret", "s"},
              {"Keep-Alive", "5"},
              {"Host", "a"},
              {"TE", "trailers"},
              {"Content-Length", "1"}};
  EXPECT_TRUE(isHopByHop(h, "x-secret"));
  EXPECT_FALSE(isHopByHop(h, "Host"));
  EXPECT_EQ(removeHopByHopHeaders(h), 4u);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_EQ(h.at(0).name, "Host");
  EXPECT_EQ(h.at(1).name, "Content-Length");
}

TEST(Headers, ListTokens) {
  EXPECT_TRUE(listHasToken("keep-alive, Upgrade", "upgrade"));
  EXPECT_TRUE(listHasToken(" ,close ,", "CLOSE"));
  EXPECT_FALSE(listHasToken("closed", "close"));
  std::vector<std::string> els;
  forEachListElement("a, ,b\t,  c", [&](std::string_view e) { els.emplace_back(e); });
  EXPECT_EQ(els, (std::vector<std::string>{"a", "b", "c"}));
}

} // namespace
} // namespace trellis::http
