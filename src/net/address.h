#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>

#include "base/result.h"

namespace trellis::net {

// An IP address and port, as given in configuration ("127.0.0.1:8080", "[::1]:53",
// "localhost:0"). Host names are limited to "localhost"; everything else must be a literal,
// because the data plane never blocks on name resolution.
struct SocketAddress {
  asio::ip::address ip;
  uint16_t port = 0;

  asio::ip::tcp::endpoint tcp() const { return {ip, port}; }
  asio::ip::udp::endpoint udp() const { return {ip, port}; }
  // "127.0.0.1:8080" or "[::1]:8080".
  std::string toString() const;
  bool operator==(const SocketAddress&) const = default;
};

// Parses "host:port". Errors name the text and what is wrong with it.
Result<SocketAddress> parseSocketAddress(std::string_view text);

SocketAddress fromEndpoint(const asio::ip::tcp::endpoint& ep);

} // namespace trellis::net
