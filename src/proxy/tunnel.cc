#include "proxy/tunnel.h"

#include <asio/write.hpp>

namespace trellis::proxy {

Tunnel::Tunnel(Dispatcher& dispatcher, asio::ip::tcp::socket a, asio::ip::tcp::socket b,
               std::string a_to_b, std::string b_to_a, Duration idle_timeout, DoneCallback done)
    : dispatcher_(dispatcher), a_(std::move(a)), b_(std::move(b)), idle_timeout_(idle_timeout),
      done_(std::move(done)) {
  ab_ = {&a_, &b_, std::make_unique<char[]>(kBufferSize), std::move(a_to_b)};
  ba_ = {&b_, &a_, std::make_unique<char[]>(kBufferSize), std::move(b_to_a)};
}

Tunnel::~Tunnel() { closeAll(); }

void Tunnel::start() {
  last_activity_ = dispatcher_.now();
  if (idle_timeout_.count() > 0) {
    idle_timer_ = dispatcher_.createTimer([this] { onIdleTimer(); });
    idle_timer_->enable(idle_timeout_);
  }
  for (Direction* d : {&ab_, &ba_}) {
    if (!d->initial.empty())
      write(*d, d->initial.data(), d->initial.size(), true);
    else
      pump(*d);
  }
}

void Tunnel::pump(Direction& d) {
  if (closed_)
    return;
  d.from->async_read_some(
      asio::buffer(d.buf.get(), kBufferSize),
      [this, self = shared_from_this(), &d](const std::error_code& ec, size_t n) {
        if (closed_)
          return;
        if (ec) {
          if (ec == asio::error::eof) {
            finish(d);
          } else {
            closeAll();
          }
          return;
        }
        last_activity_ = dispatcher_.now();
        write(d, d.buf.get(), n, false);
      });
}

void Tunnel::write(Direction& d, const char* data, size_t n, bool initial) {
  asio::async_write(*d.to, asio::buffer(data, n),
                    [this, self = shared_from_this(), &d, initial](const std::error_code& ec,
                                                                    size_t written) {
                      if (closed_)
                        return;
                      if (ec) {
                        closeAll();
                        return;
                      }
                      d.bytes += written;
                      last_activity_ = dispatcher_.now();
                      if (initial)
                        std::string().swap(d.initial);
                      pump(d);
                    });
}

void Tunnel::finish(Direction& d) {
  d.done = true;
  std::error_code ec;
  d.to->shutdown(asio::ip::tcp::socket::shutdown_send, ec);
  if (ab_.done && ba_.done)
    closeAll();
}

void Tunnel::onIdleTimer() {
  if (closed_)
    return;
  Duration idle = dispatcher_.now() - last_activity_;
  if (idle >= idle_timeout_) {
    closeAll();
    return;
  }
  idle_timer_->enable(idle_timeout_ - idle);
}

void Tunnel::closeAll() {
  if (closed_)
    return;
  closed_ = true;
  std::error_code ec;
  a_.close(ec);
  b_.close(ec);
  if (idle_timer_)
    idle_timer_->disable();
  if (done_) {
    auto done = std::move(done_);
    done_ = nullptr;
    done(Counters{ab_.bytes, ba_.bytes});
  }
}

} // namespace trellis::proxy
