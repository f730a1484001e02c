#pragma once

#include <functional>
#include <memory>
#include <string>

#include <asio/ip/tcp.hpp>

#include "base/dispatcher.h"

namespace trellis::proxy {

// Copies bytes both ways between two connected sockets until both directions have ended:
// EOF on one side becomes a half-close (shutdown of writes) on the other, so protocols that
// rely on half-close work. Back-pressure: each direction reads again only after its last
// write completed, so at most one buffer per direction is held. An error on either side, or
// no bytes either way for `idle_timeout`, closes both.
class Tunnel : public std::enable_shared_from_this<Tunnel> {
public:
  struct Counters {
    uint64_t a_to_b = 0;
    uint64_t b_to_a = 0;
  };
  using DoneCallback = std::function<void(const Counters&)>;

  // `a_to_b` / `b_to_a` are bytes already read that must be delivered first.
  Tunnel(Dispatcher& dispatcher, asio::ip::tcp::socket a, asio::ip::tcp::socket b,
         std::string a_to_b, std::string b_to_a, Duration idle_timeout, DoneCallback done);
  ~Tunnel();

  void start();

  static constexpr size_t kBufferSize = 32 * 1024;

private:
  struct Direction {
    asio::ip::tcp::socket* from;
    asio::ip::tcp::socket* to;
    std::unique_ptr<char[]> buf;
    std::string initial;
    uint64_t bytes = 0;
    bool done = false;
  };
  void pump(Direction& d);
  void write(Direction& d, const char* data, size_t n, bool initial);
  void finish(Direction& d);
  void closeAll();
  void onIdleTimer();

  Dispatcher& dispatcher_;
  asio::ip::tcp::socket a_, b_;
  Direction ab_, ba_;
  Duration idle_timeout_;
  MonotonicTime last_activity_;
  std::unique_ptr<Timer> idle_timer_;
  DoneCallback done_;
  bool closed_ = false;
};

} // namespace trellis::proxy
