#pragma once

#include <functional>

#include <asio/signal_set.hpp>

#include "base/dispatcher.h"

namespace trellis {

// Turns SIGINT/SIGTERM into a graceful stop and SIGHUP into a reload, delivered as callbacks
// on the given dispatcher's thread (never inside a signal handler).
class SignalWatcher {
public:
  SignalWatcher(Dispatcher& dispatcher, std::function<void(int signo)> on_stop,
                std::function<void()> on_reload);
  ~SignalWatcher();

private:
  void wait();

  asio::signal_set signals_;
  std::function<void(int)> on_stop_;
  std::function<void()> on_reload_;
};

} // namespace trellis
