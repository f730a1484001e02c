#pragma once

#include <vector>

#include "base/result.h"
#include "net/address.h"

namespace trellis::net {

// An open, listening TCP socket (a file descriptor) not yet bound to any event loop. Closes
// the descriptor on destruction unless release()d.
class ListenSocket {
public:
  explicit ListenSocket(int fd = -1) : fd_(fd) {}
  ListenSocket(ListenSocket&& o) noexcept : fd_(o.release()) {}
  ListenSocket& operator=(ListenSocket&& o) noexcept;
  ~ListenSocket();

  int fd() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

private:
  int fd_;
};

struct ListenGroup {
  SocketAddress bound; // the address actually bound (the real port when 0 was asked for)
  std::vector<ListenSocket> sockets;
};

// Binds `count` listening sockets to one address with SO_REUSEPORT, so each worker accepts on
// its own socket and the kernel spreads connections between them. With port 0 the first bind
// picks the port and the others join it. Errors name the address and the OS reason.
Result<ListenGroup> bindReusePortGroup(const SocketAddress& addr, size_t count,
                                       int backlog = 4096);

} // namespace trellis::net
