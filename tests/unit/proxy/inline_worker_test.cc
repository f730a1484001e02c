// A proxy with concurrency 1 runs its one worker on the main dispatcher (docs/proxy.md
// "Command and signals"): requests through a real listener to local upstreams, updates applied
// while requests are in flight, and teardown with requests in flight and idle connections
// open (run under valgrind or ASan to see that no session outlives its worker).
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/in.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/dispatcher.h"
#include "base/time.h"
#include "http/server.h"
#include "proxy/config.h"
#include "proxy/proxy_server.h"

namespace trellis::proxy {
namespace {

using namespace std::chrono_literals;

constexpr auto kWait = 10s; // a generous bound on every wait: a hang fails instead

size_t threadCount() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task"))
    ++n;
  return n;
}

// The main dispatcher, run by its own thread as trellis proxy's main thread runs it.
class MainLoop {
public:
  MainLoop() : thread_([this] { d.run(); }) {}
  ~MainLoop() { join(); }

  // Runs `fn` on the loop's thread and returns its result.
  template <typename Fn> auto call(Fn fn) -> decltype(fn()) {
    using R = decltype(fn());
    auto p = std::make_shared<std::promise<R>>();
    auto f = p->get_future();
    d.post([p, fn = std::move(fn)]() mutable {
      if constexpr (std::is_void_v<R>) {
        fn();
        p->set_value();
      } else {
        p->set_value(fn());
      }
    });
    if (f.wait_for(kWait) != std::future_status::ready) {
      std::fprintf(stderr, "the main loop did not run a call within 10 s (deadlock?)\n");
      std::abort(); // the call still refers to this frame: no way to go on safely
    }
    return f.get();
  }
  // Stops the loop and joins its thread.
  void join() {
    d.exit();
    if (thread_.joinable())
      thread_.join();
  }

  Dispatcher d{"main", realTimeSource()};

private:
  std::thread thread_;
};

// An HTTP upstream on its own thread. Answers `name` at once, except /slow: held until
// releaseSlow() (a slow upstream), or until the proxy closes the connection.
class Upstream {
public:
  explicit Upstream(std::string name) : name_(std::move(name)) {
    server_ = std::make_unique<http::Server>(
        d_, http::ServerSettings{},
        [this](http::ServerRequest& req, std::shared_ptr<http::ResponseWriter> w) {
          if (req.path != "/slow") {
            w->send(200, {}, name_);
            return;
          }
          w->onClosed([this] {
            std::lock_guard lock(mu_);
            ++closed_;
            cv_.notify_all();
          });
          held_.push_back(std::move(w));
          std::lock_guard lock(mu_);
          ++received_;
          cv_.notify_all();
        });
    EXPECT_TRUE(server_->listen(net::parseSocketAddress("127.0.0.1:0").value()).ok());
    thread_ = std::thread([this] { d_.run(); });
  }
  ~Upstream() {
    d_.post([this] {
      held_.clear();
      server_.reset();
      d_.exit();
    });
    thread_.join();
  }

  std::string address() const { return server_->boundAddress().toString(); }
  // Waits until `n` slow requests have arrived / have seen their connection close.
  bool waitReceived(int n) { return waitFor(received_, n); }
  bool waitClosed(int n) { return waitFor(closed_, n); }
  void releaseSlow() {
    d_.post([this] {
      for (auto& w : held_)
        w->send(200, {}, "slow-" + name_);
      held_.clear();
    });
  }

private:
  bool waitFor(const int& v, int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return v >= n; });
  }

  std::string name_;
  Dispatcher d_{"upstream", realTimeSource()};
  std::unique_ptr<http::Server> server_;
  std::vector<std::shared_ptr<http::ResponseWriter>> held_; // upstream thread only
  std::mutex mu_;
  std::condition_variable cv_;
  int received_ = 0, closed_ = 0;
  std::thread thread_;
};

struct Response {
  int status = 0;
  std::string body;
};

// A blocking client connection; every read gives up after kWait.
class Client {
public:
  explicit Client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~Client() { ::close(fd_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return connected_; }
  bool send(std::string_view s) {
    return ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL) == ssize_t(s.size());
  }
  std::optional<Response> get(const std::string& path) {
    if (!send("GET " + path + " HTTP/1.1\r\nHost: test\r\n\r\n"))
      return std::nullopt;
    return read();
  }
  // One response (with a Content-Length body); nullopt when the connection closes first.
  std::optional<Response> read() {
    size_t head_end;
    while ((head_end = buf_.find("\r\n\r\n")) == std::string::npos)
      if (!fill())
        return std::nullopt;
    Response r;
    r.status = std::atoi(buf_.substr(9, 3).c_str());
    size_t length = 0;
    const size_t cl = lower(buf_.substr(0, head_end)).find("\r\ncontent-length:");
    if (cl != std::string::npos)
      length = std::strtoul(buf_.c_str() + cl + 17, nullptr, 10);
    while (buf_.size() < head_end + 4 + length)
      if (!fill())
        return std::nullopt;
    r.body = buf_.substr(head_end + 4, length);
    buf_.erase(0, head_end + 4 + length);
    return r;
  }
  // True when the peer closes the connection (EOF or reset) with no more bytes first.
  bool closedWithoutData() { return !fill() && buf_.empty() && eof_; }

private:
  static std::string lower(std::string s) {
    for (char& c : s)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }
  bool fill() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(kWait).count())) != 1)
      return false; // timed out: eof_ stays false
    char tmp[4096];
    const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  bool eof_ = false;
  std::string buf_;
};

std::shared_ptr<const Snapshot> config(const std::string& cluster, const std::string& endpoint) {
  const std::string yaml = "admin: {address: 127.0.0.1:0}\n"
                           "listeners:\n"
                           "  - name: web\n"
                           "    address: 127.0.0.1:0\n"
                           "    routes:\n"
                           "      - match: {prefix: /}\n"
                           "        cluster: " +
                           cluster +
                           "\n"
                           "clusters:\n"
                           "  - name: " +
                           cluster + "\n    endpoints: [" + endpoint + "]\n";
  auto s = loadConfigString(yaml, "test.yaml");
  EXPECT_TRUE(s.ok()) << s.error().message();
  return std::move(s).value();
}

// A started proxy with `concurrency` workers on a running main loop.
struct Rig {
  explicit Rig(size_t concurrency) {
    server = std::make_unique<ProxyServer>(main.d, ProxyOptions{"", concurrency});
    threads_before = threadCount();
    EXPECT_TRUE(main.call([&] { return server->start(config("api", a.address())); }).ok());
    port = main.call([&] { return server->listenerAddress("web")->port; });
    admin_port = main.call([&] { return server->adminAddress().port; });
  }
  ~Rig() {
    main.join();
    server.reset();
  }

  Upstream a{"a"}, b{"b"};
  MainLoop main;
  std::unique_ptr<ProxyServer> server;
  size_t threads_before = 0;
  uint16_t port = 0, admin_port = 0;
};

TEST(InlineWorker, OneWorkerRunsOnTheMainThreadAndServesRequests) {
  Rig rig(1);
  EXPECT_EQ(threadCount(), rig.threads_before) << "concurrency 1 starts no worker thread";
  Client c(rig.port);
  for (int i = 0; i < 3; ++i) { // one keep-alive connection, one request after the other
    auto r = c.get("/x");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "a");
  }
  // The admin's /clusters reads the worker's runtime: inline, not posted to its own thread.
  Client admin(rig.admin_port);
  auto clusters = admin.get("/clusters");
  ASSERT_TRUE(clusters);
  ASSERT_EQ(clusters->status, 200);
  auto j = nlohmann::json::parse(clusters->body);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["name"], "api");
  EXPECT_EQ(j[0]["endpoints"][0]["address"], rig.a.address());
  EXPECT_EQ(j[0]["endpoints"][0]["idle_connections"], 1) << "the connection that served c";
  // Both metric shards are written on the one thread: the worker's (1) and main's (0).
  auto metrics = admin.get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("trellis_proxy_downstream_connections_total{listener=\"web\"} 1\n"),
            std::string::npos);
  EXPECT_NE(metrics->body.find("trellis_proxy_config_generation 1\n"), std::string::npos);
}

TEST(InlineWorker, TwoWorkersStillRunOnTheirOwnThreads) {
  Rig rig(2);
  EXPECT_EQ(threadCount(), rig.threads_before + 2);
  Client c(rig.port);
  auto r = c.get("/x");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "a");
}

class UpdateTest : public ::testing::TestWithParam<size_t> {};

TEST_P(UpdateTest, UpdatesApplyWhileRequestsAreInFlight) {
  Rig rig(GetParam());
  Client slow_a(rig.port);
  ASSERT_TRUE(slow_a.send("GET /slow HTTP/1.1\r\nHost: test\r\n\r\n"));
  ASSERT_TRUE(rig.a.waitReceived(1));
  Client c(rig.port);
  std::optional<Client> slow_b;
  for (int k = 1; k <= 8; ++k) {
    // Alternately the same cluster with the other endpoint (replaced in place) and a renamed
    // cluster (rebuilt by name): both paths of the update.
    const bool to_b = k % 2 == 1;
    const std::string cluster = k % 4 < 2 ? "api" : "api-" + std::to_string(k);
    auto snap = config(cluster, to_b ? rig.b.address() : rig.a.address());
    ASSERT_TRUE(rig.main.call([&] { return rig.server->apply(snap); }).ok()) << k;
    EXPECT_EQ(rig.main.call([&] { return rig.server->snapshot(); }), snap);
    auto r = c.get("/x"); // a new request on the same connection: the new configuration
    ASSERT_TRUE(r) << k;
    EXPECT_EQ(r->body, to_b ? "b" : "a") << k;
    if (k == 3) { // a second request in flight across the remaining updates
      slow_b.emplace(rig.port);
      ASSERT_TRUE(slow_b->send("GET /slow HTTP/1.1\r\nHost: test\r\n\r\n"));
      ASSERT_TRUE(rig.b.waitReceived(1));
    }
  }
  // Requests in flight finish on the configuration they started with.
  rig.a.releaseSlow();
  rig.b.releaseSlow();
  auto ra = slow_a.read();
  ASSERT_TRUE(ra);
  EXPECT_EQ(ra->status, 200);
  EXPECT_EQ(ra->body, "slow-a");
  auto rb = slow_b->read();
  ASSERT_TRUE(rb);
  EXPECT_EQ(rb->body, "slow-b");
  // Still served on the last configuration (k = 8: a).
  auto r = c.get("/x");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "a");
}

INSTANTIATE_TEST_SUITE_P(InlineWorker, UpdateTest, ::testing::Values(1, 2),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return std::to_string(info.param) + "Workers";
                         });

enum class Teardown {
  kStopThenDestroy,    // stop() on main, the loop runs on, then the destructor
  kStopInsideAHandler, // stop() and exit() from one main handler (trellis proxy's signals)
  kDestroyWithoutStop, // the destructor alone
};

struct TeardownCase {
  size_t concurrency;
  Teardown how;
};

void PrintTo(const TeardownCase& c, std::ostream* os) {
  *os << c.concurrency << " workers, teardown " << static_cast<int>(c.how);
}

class TeardownTest : public ::testing::TestWithParam<TeardownCase> {};

TEST_P(TeardownTest, WithARequestInFlightAndIdleConnectionsOpen) {
  const auto [concurrency, how] = GetParam();
  auto rig = std::make_unique<Rig>(concurrency);
  // Idle keep-alive connections (each also leaves an idle pooled upstream connection), one
  // request head half sent, and one request waiting for a slow upstream.
  std::vector<std::unique_ptr<Client>> idle;
  for (int i = 0; i < 3; ++i) {
    idle.push_back(std::make_unique<Client>(rig->port));
    auto r = idle.back()->get("/x");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "a");
  }
  Client partial(rig->port);
  ASSERT_TRUE(partial.send("GET /x HTTP/1.1\r\nHo"));
  Client slow(rig->port);
  ASSERT_TRUE(slow.send("GET /slow HTTP/1.1\r\nHost: test\r\n\r\n"));
  ASSERT_TRUE(rig->a.waitReceived(1));

  switch (how) {
  case Teardown::kStopThenDestroy:
    rig->main.call([&] { rig->server->stop(); });
    EXPECT_FALSE(Client(rig->port).connected()) << "stop() closes the listeners";
    break;
  case Teardown::kStopInsideAHandler:
    rig->main.d.post([&] {
      rig->server->stop();
      rig->main.d.exit();
    });
    break;
  case Teardown::kDestroyWithoutStop:
    break;
  }
  rig->main.join();
  rig->server.reset();

  // Every session went with the proxy: its clients see the connection closed, and the slow
  // upstream sees the proxy's connection close without the request having been answered.
  for (auto& c : idle)
    EXPECT_TRUE(c->closedWithoutData());
  EXPECT_TRUE(partial.closedWithoutData());
  EXPECT_TRUE(slow.closedWithoutData());
  EXPECT_TRUE(rig->a.waitClosed(1));
  rig.reset();
}

INSTANTIATE_TEST_SUITE_P(InlineWorker, TeardownTest,
                         ::testing::Values(TeardownCase{1, Teardown::kStopThenDestroy},
                                           TeardownCase{1, Teardown::kStopInsideAHandler},
                                           TeardownCase{1, Teardown::kDestroyWithoutStop},
                                           TeardownCase{2, Teardown::kStopThenDestroy},
                                           TeardownCase{2, Teardown::kDestroyWithoutStop}),
                         [](const ::testing::TestParamInfo<TeardownCase>& info) {
                           const char* how = info.param.how == Teardown::kStopThenDestroy
                                                 ? "StopThenDestroy"
                                             : info.param.how == Teardown::kStopInsideAHandler
                                                 ? "StopInsideAHandler"
                                                 : "DestroyWithoutStop";
                           return std::string(how) + "With" +
                                  std::to_string(info.param.concurrency) + "Workers";
                         });

} // namespace
} // namespace trellis::proxy
