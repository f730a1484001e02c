#pragma once

// The DNS server: UDP and TCP (RFC 1035 4.2, RFC 7766) on one address and one dispatcher,
// answering from a Zone and forwarding out-of-zone names to recursors over UDP (and over TCP
// when a recursor's UDP answer is truncated).

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "base/dispatcher.h"
#include "base/result.h"
#include "dns/directory.h"
#include "dns/random.h"
#include "dns/wire.h"
#include "dns/zone.h"
#include "net/address.h"

namespace trellis::dns {

struct ServerConfig {
  // UDP and TCP listen on this address. Port 0 picks a free port, the same for both.
  net::SocketAddress listen{asio::ip::make_address_v4("127.0.0.1"), 8600};
  ZoneConfig zone;
  // Open TCP connections at most; further connections are accepted and closed at once.
  size_t max_tcp_connections = 128;
  // A TCP connection waiting this long for a whole query (or for the peer to take a reply)
  // is closed (RFC 7766 6.2.3 suggests seconds).
  Duration tcp_idle_timeout = std::chrono::seconds(10);
  // Upstream resolvers for names outside the zone, tried in order. Empty: such names are
  // REFUSED.
  std::vector<net::SocketAddress> recursors;
  // How long each recursor gets before the next is tried; when all fail, SERVFAIL.
  Duration recursor_timeout = std::chrono::seconds(2);
  // Forwarded queries in flight at most; beyond it new ones get SERVFAIL at once.
  size_t max_pending_forwards = 256;

  Status validate() const;
};

// Counters for the metrics endpoint. Written on the server's dispatcher thread, readable
// from any thread (relaxed atomics: each value is exact, a set of them is not a snapshot).
struct ServerStats {
  // Question types counted separately; everything else is counted as kOtherType.
  static constexpr std::array<RrType, 8> kCountedTypes = {RrType::kA,   RrType::kAaaa, RrType::kSrv,
                                                          RrType::kSoa, RrType::kNs,   RrType::kPtr,
                                                          RrType::kTxt, RrType::kAny};
  static constexpr size_t kOtherType = kCountedTypes.size();
  static constexpr std::array<Rcode, 7> kCountedRcodes = {
      Rcode::kNoError, Rcode::kFormErr, Rcode::kServFail, Rcode::kNxDomain,
      Rcode::kNotImp,  Rcode::kRefused, Rcode::kBadVers};
  static constexpr size_t kOtherRcode = kCountedRcodes.size();

  // Bucket index for a type/rcode, and a label for each bucket ("A", ..., "other").
  static size_t typeIndex(RrType type);
  static size_t rcodeIndex(Rcode rcode);
  static std::string typeLabel(size_t index);
  static std::string rcodeLabel(size_t index);

  uint64_t queriesOfType(RrType type) const { return queries_by_type[typeIndex(type)].load(); }
  uint64_t responsesWithRcode(Rcode rcode) const {
    return responses_by_rcode[rcodeIndex(rcode)].load();
  }

  std::array<std::atomic<uint64_t>, kOtherType + 1> queries_by_type{};
  std::array<std::atomic<uint64_t>, kOtherRcode + 1> responses_by_rcode{};
  std::atomic<uint64_t> udp_queries{0};     // datagrams received
  std::atomic<uint64_t> tcp_queries{0};     // framed messages received over TCP
  std::atomic<uint64_t> malformed{0};       // requests that failed to parse
  std::atomic<uint64_t> dropped{0};         // requests not answered (unreadable header, QR)
  std::atomic<uint64_t> truncated{0};       // replies sent with TC set
  std::atomic<uint64_t> udp_send_errors{0}; // replies the socket would not take
  std::atomic<uint64_t> tcp_accepted{0};
  std::atomic<uint64_t> tcp_rejected{0};     // over max_tcp_connections
  std::atomic<uint64_t> tcp_idle_closed{0};  // closed by tcp_idle_timeout
  std::atomic<uint64_t> tcp_active{0};       // gauge: open connections
  std::atomic<uint64_t> forwarded{0};        // queries sent to recursors over UDP
  std::atomic<uint64_t> forwarded_tcp{0};    // asked again over TCP: the UDP answer was truncated
  std::atomic<uint64_t> forward_failed{0};   // all recursors failed or timed out: SERVFAIL
  std::atomic<uint64_t> forward_rejected{0}; // over max_pending_forwards: SERVFAIL
};

class Server {
public:
  // Binds UDP then TCP on config.listen (with port 0: UDP picks the port and TCP binds the
  // same number, retrying with a new port if TCP finds it taken) and starts serving on
  // `dispatcher`. Call on the dispatcher's thread, or before it runs. `directory` and
  // `random` must outlive the server.
  static Result<std::unique_ptr<Server>> create(Dispatcher& dispatcher, ServerConfig config,
                                                Directory& directory, RandomSource& random);
  // Closes the sockets, every TCP connection and forwarded query. Call on the dispatcher's
  // thread.
  ~Server();

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The bound addresses (the ports are equal).
  net::SocketAddress udpAddress() const;
  net::SocketAddress tcpAddress() const;
  uint16_t port() const { return udpAddress().port; }

  const ServerStats& stats() const;
  const Zone& zone() const;

  struct Core;

private:
  explicit Server(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  std::shared_ptr<Core> core_;
};

} // namespace trellis::dns
