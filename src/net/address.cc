#include "net/address.h"

#include <charconv>

namespace trellis::net {

std::string SocketAddress::toString() const {
  if (ip.is_v6())
    return fmt::format("[{}]:{}", ip.to_string(), port);
  return fmt::format("{}:{}", ip.to_string(), port);
}

Result<SocketAddress> parseSocketAddress(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return makeError(ErrorCode::kInvalidArgument, "invalid address \"{}\": {}", text, why);
  };
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos)
      return bad("missing ']' after IPv6 address");
    host = text.substr(1, close - 1);
    if (close + 1 >= text.size() || text[close + 1] != ':')
      return bad("expected ':port' after ']'");
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return bad("expected host:port");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      return bad("IPv6 addresses must be written in brackets, e.g. [::1]:80");
  }
  if (port.empty())
    return bad("missing port");
  unsigned p = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc() || ptr != port.data() + port.size() || p > 65535)
    return bad(fmt::format("port \"{}\" is not a number from 0 to 65535", port));
  SocketAddress out;
  out.port = static_cast<uint16_t>(p);
  if (host == "localhost") {
    out.ip = asio::ip::make_address_v4("127.0.0.1");
    return out;
  }
  std::error_code aec;
  out.ip = asio::ip::make_address(std::string(host), aec);
  if (aec)
    return bad(fmt::format("\"{}\" is not an IP address", host));
  return out;
}

SocketAddress fromEndpoint(const asio::ip::tcp::endpoint& ep) {
  return {ep.address(), ep.port()};
}

} // namespace trellis::net
