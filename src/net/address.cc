#include "net/address.h"

#include <charconv>
#include <optional>

namespace trellis::net {

std::string SocketAddress::toString() const {
  if (ip.is_v6())
    return fmt::format("[{}]:{}", ip.to_string(), port);
  // IPv4 by hand: a proxy formats every endpoint of a changed cluster (balancer keys), and
  // inet_ntop plus a format string cost ten times this.
  char buf[sizeof("255.255.255.255:65535")];
  char* p = buf;
  char* const end = buf + sizeof(buf);
  const auto bytes = ip.to_v4().to_bytes();
  for (size_t i = 0; i < bytes.size(); ++i) {
    p = std::to_chars(p, end, bytes[i]).ptr;
    *p++ = i + 1 < bytes.size() ? '.' : ':';
  }
  p = std::to_chars(p, end, port).ptr;
  return std::string(buf, p);
}

namespace {

// A dotted-quad IPv4 address in the strict form inet_pton accepts: four decimal numbers
// 0..255 without leading zeros or signs. nullopt for anything else (which then goes to the
// general parser, for IPv6 and for the precise error).
std::optional<asio::ip::address_v4> parseIpv4(std::string_view s) {
  asio::ip::address_v4::bytes_type b{};
  size_t pos = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    if (i > 0) {
      if (pos >= s.size() || s[pos] != '.')
        return std::nullopt;
      ++pos;
    }
    const size_t start = pos;
    unsigned v = 0;
    while (pos < s.size() && pos - start < 3 && s[pos] >= '0' && s[pos] <= '9')
      v = v * 10 + static_cast<unsigned>(s[pos++] - '0');
    const size_t len = pos - start;
    if (len == 0 || v > 255 || (len > 1 && s[start] == '0'))
      return std::nullopt;
    b[i] = static_cast<unsigned char>(v);
  }
  if (pos != s.size())
    return std::nullopt;
  return asio::ip::address_v4(b);
}

} // namespace

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
  if (auto v4 = parseIpv4(host)) {
    out.ip = *v4;
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
