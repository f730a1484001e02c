#include "base/signals.h"

#include <csignal>

namespace trellis {

SignalWatcher::SignalWatcher(Dispatcher& dispatcher, std::function<void(int)> on_stop,
                             std::function<void()> on_reload)
    : signals_(dispatcher.io(), SIGINT, SIGTERM, SIGHUP), on_stop_(std::move(on_stop)),
      on_reload_(std::move(on_reload)) {
  std::signal(SIGPIPE, SIG_IGN);
  wait();
}

SignalWatcher::~SignalWatcher() {
  std::error_code ec;
  signals_.cancel(ec);
}

void SignalWatcher::wait() {
  signals_.async_wait([this](const std::error_code& ec, int signo) {
    if (ec)
      return;
    if (signo == SIGHUP) {
      if (on_reload_)
        on_reload_();
    } else if (on_stop_) {
      on_stop_(signo);
    }
    wait();
  });
}

} // namespace trellis
