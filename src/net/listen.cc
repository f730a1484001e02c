#include "net/listen.h"

#include <cerrno>
#include <cstring>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace trellis::net {

ListenSocket& ListenSocket::operator=(ListenSocket&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

ListenSocket::~ListenSocket() {
  if (fd_ >= 0)
    ::close(fd_);
}

namespace {

Result<ListenSocket> bindOne(const SocketAddress& addr, int backlog) {
  auto ep = addr.tcp();
  int fd = ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return makeError(ErrorCode::kIo, "socket() for {}: {}", addr.toString(), strerror(errno));
  ListenSocket s(fd);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
    return makeError(ErrorCode::kIo, "SO_REUSEPORT on {}: {}", addr.toString(), strerror(errno));
  if (::bind(fd, static_cast<const sockaddr*>(ep.data()), static_cast<socklen_t>(ep.size())) != 0)
    return makeError(ErrorCode::kUnavailable, "cannot bind {}: {}", addr.toString(),
                     strerror(errno));
  if (::listen(fd, backlog) != 0)
    return makeError(ErrorCode::kIo, "listen on {}: {}", addr.toString(), strerror(errno));
  return s;
}

} // namespace

Result<ListenGroup> bindReusePortGroup(const SocketAddress& addr, size_t count, int backlog) {
  ListenGroup g;
  g.bound = addr;
  for (size_t i = 0; i < count; ++i) {
    auto s = bindOne(g.bound, backlog);
    if (!s.ok())
      return s.error();
    if (i == 0 && addr.port == 0) {
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      ::getsockname(s->fd(), reinterpret_cast<sockaddr*>(&ss), &len);
      g.bound.port = ntohs(ss.ss_family == AF_INET6
                               ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                               : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    }
    g.sockets.push_back(std::move(s).value());
  }
  return g;
}

} // namespace trellis::net
