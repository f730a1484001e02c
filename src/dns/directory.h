#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <asio/ip/address.hpp>

namespace trellis::dns {

// An instance's health as discovery sees it. kPassing and kWarning count as healthy (unless
// the zone is configured with only_passing); kCritical instances are never answered.
enum class Health { kPassing, kWarning, kCritical };

// One instance of a service, in DNS-neutral terms.
struct ServiceInstance {
  std::string node;          // name of the node (machine) the instance runs on
  asio::ip::address address; // where the instance listens
  uint16_t port = 0;
  Health health = Health::kPassing;
  uint16_t weight = 1; // SRV weight (RFC 2782); Consul's default is 1
  // True when `address` is the node's own address (Consul: an empty ServiceAddress). SRV
  // targets are then "<node>.node.<dc>.<domain>", otherwise an address name; see docs/dns.md.
  bool on_node_address = true;
};

struct NodeRecord {
  std::vector<asio::ip::address> addresses; // may hold both an IPv4 and an IPv6 address
};

// What the DNS zone asks of the service catalog. The control plane implements it over the
// registry; tests use a fake. Names and tags arrive lower-cased (DNS is case-insensitive), so
// implementations must match them case-insensitively. Called on the DNS server's dispatcher
// thread, once or twice per query: implementations must be thread-safe with respect to
// their own writers and should not block on I/O.
class Directory {
public:
  virtual ~Directory() = default;

  // Every instance of `service` (whatever its health), or only those carrying `tag` when
  // one is given. Empty when the service has no (matching) instances.
  virtual std::vector<ServiceInstance> serviceInstances(std::string_view service,
                                                        std::optional<std::string_view> tag) = 0;

  // Whether `service` is known at all, even with no instances.
  virtual bool serviceExists(std::string_view service) = 0;

  // The node called `node`, or nullopt when there is none.
  virtual std::optional<NodeRecord> node(std::string_view node) = 0;
};

} // namespace trellis::dns
