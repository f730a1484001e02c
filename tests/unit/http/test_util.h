#pragma once

#include <chrono>
#include <functional>
#include <string>

#include <asio/ip/tcp.hpp>
#include <asio/write.hpp>

#include "base/dispatcher.h"
#include "net/address.h"

namespace trellis::http::testing {

// Runs `d` on the calling thread until `pred()` holds; false after `limit` of real time (a
// hung test fails instead of blocking CI). Waits on socket events, never sleeps.
inline bool pumpUntil(Dispatcher& d, const std::function<bool()>& pred,
                      std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    if (d.runReady() == 0)
      d.io().run_one_for(std::chrono::milliseconds(5));
  }
  return true;
}

// Runs whatever is ready, repeatedly, until nothing is (for "nothing happens" checks).
inline void drain(Dispatcher& d) {
  for (int i = 0; i < 20; ++i) {
    if (d.runReady() == 0)
      d.io().run_one_for(std::chrono::milliseconds(2));
  }
}

inline net::SocketAddress loopback(uint16_t port = 0) {
  return {asio::ip::make_address("127.0.0.1"), port};
}

// A hand-driven TCP client on the dispatcher: writes raw bytes, collects whatever arrives.
class RawConn {
public:
  RawConn(Dispatcher& d, const net::SocketAddress& to) : sock_(d.io()) {
    sock_.connect(to.tcp());
    read();
  }
  ~RawConn() { close(); }

  void send(std::string_view data) { asio::write(sock_, asio::buffer(data)); }
  void close() {
    asio::error_code ec;
    sock_.close(ec);
  }
  void shutdownWrite() {
    asio::error_code ec;
    sock_.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
  }
  const std::string& received() const { return received_; }
  bool eof() const { return eof_; }
  size_t count(std::string_view needle) const {
    size_t n = 0;
    for (size_t p = received_.find(needle); p != std::string::npos;
         p = received_.find(needle, p + 1))
      ++n;
    return n;
  }
  asio::ip::tcp::socket& socket() { return sock_; }

private:
  void read() {
    sock_.async_read_some(asio::buffer(buf_), [this](const asio::error_code& ec, size_t n) {
      if (ec) {
        eof_ = true;
        return;
      }
      received_.append(buf_, n);
      read();
    });
  }

  asio::ip::tcp::socket sock_;
  char buf_[16384];
  std::string received_;
  bool eof_ = false;
};

// A hand-driven TCP server on the dispatcher: accepts one connection, collects what it
// receives, answers with whatever the test writes.
class RawServer {
public:
  explicit RawServer(Dispatcher& d) : acceptor_(d.io()), peer_(d.io()) {
    auto ep = loopback().tcp();
    acceptor_.open(ep.protocol());
    acceptor_.bind(ep);
    acceptor_.listen();
    acceptor_.async_accept(peer_, [this](const asio::error_code& ec) {
      if (ec)
        return;
      accepted_ = true;
      read();
    });
  }
  net::SocketAddress address() const { return net::fromEndpoint(acceptor_.local_endpoint()); }
  bool accepted() const { return accepted_; }
  const std::string& received() const { return received_; }
  bool peerClosed() const { return peer_closed_; }
  void send(std::string_view data) { asio::write(peer_, asio::buffer(data)); }
  void close() {
    asio::error_code ec;
    peer_.close(ec);
  }
  // Closes with a TCP reset instead of a FIN.
  void reset() {
    asio::error_code ec;
    peer_.set_option(asio::socket_base::linger(true, 0), ec);
    peer_.close(ec);
  }

private:
  void read() {
    peer_.async_read_some(asio::buffer(buf_), [this](const asio::error_code& ec, size_t n) {
      if (ec) {
        peer_closed_ = true;
        return;
      }
      received_.append(buf_, n);
      read();
    });
  }

  asio::ip::tcp::acceptor acceptor_;
  asio::ip::tcp::socket peer_;
  char buf_[16384];
  std::string received_;
  bool accepted_ = false;
  bool peer_closed_ = false;
};

} // namespace trellis::http::testing
