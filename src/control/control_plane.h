#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/dispatcher.h"
#include "base/result.h"
#include "net/address.h"

// `trellis server`: the registry with its durable store, health checks, the Consul-compatible
// HTTP API and DNS discovery, all on one event loop.
namespace trellis::control {

struct ControlPlaneOptions {
  std::string data_dir;
  net::SocketAddress http_addr{asio::ip::make_address_v4("127.0.0.1"), 8500};
  net::SocketAddress dns_addr{asio::ip::make_address_v4("127.0.0.1"), 8600};
  std::string dns_domain = "trellis";
  std::vector<net::SocketAddress> recursors;
  std::string node_name; // empty: the host name
  Duration mesh_heartbeat = std::chrono::seconds(10);    // docs/protocol.md
  Duration mesh_coalesce = std::chrono::milliseconds(2); // docs/protocol.md
  Duration mesh_max_ack_wait = std::chrono::seconds(1);  // docs/protocol.md "Pacing"
  size_t mesh_endpoint_tombstones = 1024;                // docs/protocol.md
};

// $XDG_STATE_HOME/trellis, else $HOME/.local/state/trellis, else ./trellis-data.
std::string defaultDataDir();

class ControlPlane {
public:
  ControlPlane(Dispatcher& loop, ControlPlaneOptions options);
  ~ControlPlane();

  // Opens the store, loads the catalog, binds both listeners and registers the server's own
  // node. Errors: kInvalidArgument for bad options, anything else for the store or a bind.
  // `ready` runs on the loop once the node is registered (ok) or could not be (error).
  Status start(std::function<void(Status)> ready);
  // Stops accepting and closes connections; the store is flushed on destruction.
  void stop();

  net::SocketAddress httpAddress() const;
  net::SocketAddress dnsAddress() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace trellis::control
