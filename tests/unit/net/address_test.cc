#include "net/address.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace trellis::net {
namespace {

// The general parser's answer, for comparison with the IPv4 fast path.
std::optional<asio::ip::address> reference(const std::string& host) {
  std::error_code ec;
  auto a = asio::ip::make_address(host, ec);
  if (ec)
    return std::nullopt;
  return a;
}

TEST(SocketAddress, FormatsIpv4AndIpv6) {
  EXPECT_EQ((SocketAddress{asio::ip::make_address("0.0.0.0"), 0}).toString(), "0.0.0.0:0");
  EXPECT_EQ((SocketAddress{asio::ip::make_address("255.255.255.255"), 65535}).toString(),
            "255.255.255.255:65535");
  EXPECT_EQ((SocketAddress{asio::ip::make_address("10.1.20.3"), 8080}).toString(),
            "10.1.20.3:8080");
  EXPECT_EQ((SocketAddress{asio::ip::make_address("::1"), 53}).toString(), "[::1]:53");
}

TEST(SocketAddress, FormatMatchesTheLibraryForRandomAddresses) {
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    const asio::ip::address_v4 ip(rng());
    const auto port = static_cast<uint16_t>(rng());
    const SocketAddress a{ip, port};
    EXPECT_EQ(a.toString(), ip.to_string() + ":" + std::to_string(port));
    auto back = parseSocketAddress(a.toString());
    ASSERT_TRUE(back.ok()) << a.toString();
    EXPECT_EQ(*back, a);
  }
}

TEST(SocketAddress, Ipv4ParsingAgreesWithTheLibrary) {
  // Strings near the edges of the dotted-quad form: each must parse exactly when the
  // general parser (inet_pton) accepts it, to the same address.
  const char* hosts[] = {"1.2.3.4",      "0.0.0.0",      "255.255.255.255", "256.1.1.1",
                         "1.2.3",        "1.2.3.4.5",    "01.2.3.4",        "1.02.3.4",
                         "1.2.3.04",     "1..3.4",       ".1.2.3",          "1.2.3.",
                         "1.2.3.4 ",     " 1.2.3.4",     "+1.2.3.4",        "-1.2.3.4",
                         "1.2.3.1000",   "1.2.3.0255",   "0x1.2.3.4",       "1.2.3.a",
                         "999.1.1.1",    "10.0.0.1",     "127.0.0.1",       "1.2.3.4\n",
                         "",             "1",            "1.2",             "::ffff:1.2.3.4"};
  for (const char* h : hosts) {
    auto got = parseSocketAddress(std::string(h) + ":80");
    auto want = std::string_view(h).find(':') == std::string_view::npos
                    ? reference(h)
                    : std::optional<asio::ip::address>();
    EXPECT_EQ(got.ok(), want.has_value()) << "\"" << h << "\"";
    if (got.ok() && want) {
      EXPECT_EQ(got->ip, *want) << h;
    }
  }
  std::mt19937 rng(11);
  const std::string alphabet = "0123456789.";
  for (int i = 0; i < 50000; ++i) {
    std::string h;
    const size_t n = 1 + rng() % 17;
    for (size_t k = 0; k < n; ++k)
      h += alphabet[rng() % alphabet.size()];
    auto got = parseSocketAddress(h + ":1");
    auto want = reference(h);
    ASSERT_EQ(got.ok(), want.has_value()) << "\"" << h << "\"";
    if (want) {
      ASSERT_EQ(got->ip, *want) << h;
    }
  }
}

TEST(SocketAddress, ErrorsNameTheProblem) {
  auto r = parseSocketAddress("300.1.1.1:80");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("\"300.1.1.1\" is not an IP address"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(parseSocketAddress("localhost:9")->ip, asio::ip::make_address("127.0.0.1"));
  EXPECT_TRUE(parseSocketAddress("[::1]:80")->ip.is_v6());
}

} // namespace
} // namespace trellis::net
