// trellis_loopback_floor: what this machine's loopback TCP costs for one registry change pushed
// to N streams, with no server in the way: bench/propagation's scenario A reduced to its
// sockets. One process (the sender, forked child) does send() of B bytes on each of N TCP
// loopback connections, in one loop on one thread; the other (the receiver, the parent) reads
// them on one thread with level-triggered epoll and a 1024-event array, as
// bench/tools/mesh_streams.cc does. The server's push can be no faster than this.
//
// --senders T (1..8, default 1): the sender's loop is shared by T threads, thread k sending on
// connections k, k+T, ...: what a push fanned out from several threads could do on this
// machine. The threads live for the whole run and start each round together (a barrier, the
// hand-off a multi-threaded server would pay too); the round's send loop ends when the last
// one is done.
//
// Per round: t0 = CLOCK_MONOTONIC just before the first send(); it travels in every payload's
// first 8 bytes (the round number in the next 8). t_last = the receiver's CLOCK_MONOTONIC after
// the recv() that completed the last of the N sockets' B bytes. Latency = t_last - t0. The
// rounds run in lockstep: the receiver tells the sender (over a pipe) when a round is complete;
// the sender then waits --gap-ms and starts the next, so both start a round idle, like the
// server and the client between two changes of the bench. The sender's per-round send-loop
// times and CPU come back over a second pipe after the last round.
//
// CPU: getrusage(RUSAGE_SELF) of each process over the rounds (from the first round's start to
// the last one's end, the gaps included: both are asleep then), divided by the rounds.
//
// Output, on stdout, one JSON object:
//   {"connections":N,"bytes":B,"rounds":R,"gap_ms":G,"p50_ms":..,"p99_ms":..,"max_ms":..,
//    "send_loop_p50_ms":..,"send_loop_p99_ms":..,"short_sends":K,
//    "sender_cpu_ms":{"user":..,"system":..},"receiver_cpu_ms":{"user":..,"system":..}}
// (short_sends: send() calls that did not take the whole payload at once; the rest was sent
// once the socket had room, outside the timed loop). Any failure: a message naming it on
// stderr, exit code 1. Every wait has a timeout (a round: kRoundTimeout).
//
// --processes P: bench/propagation's scenario B reduced to its sockets and wake-ups: what it
// costs to wake P separate processes with one small message each and get one small reply from
// each, with no proxy logic. The parent is the sender (one thread, like the server's loop); it
// forks P children, each of which connects one TCP loopback socket to it, says it is ready (one
// byte) and then sits on one thread blocked in epoll_wait on that socket, like an idle proxy.
// Per round the sender waits --gap-ms, takes t0 (CLOCK_MONOTONIC), send()s B bytes to each
// child in one loop, then epoll-waits (level-triggered) for the replies: each child, once its
// B bytes have arrived, writes --reply-bytes R back on the same connection (an ack POST is
// ~150 B), its first 16 bytes echoing the payload's header. Latency = the sender's time after
// the recv() that completed the last of the P replies - t0. After the last round the sender
// shuts down its side of every connection; each child answers with its CPU over the rounds
// and exits. Any child exiting earlier (SIGCHLD, through a signalfd) or closing its connection
// is an error; the children also die with the sender (PR_SET_PDEATHSIG) and give up after
// kRoundTimeout + --gap-ms + kWaitTimeout without a message.
//
// CPU in this mode: "sender_cpu_ms" as above (the parent's RUSAGE_SELF from the first round's
// start to the last one's end); "children_cpu_ms" is the sum over the P children of each one's
// RUSAGE_SELF from just after its ready byte (connected, epoll set up) to the sender's end of
// the rounds (one more wake-up, to read that end), divided by the rounds: forks and connects
// are left out, which RUSAGE_CHILDREN would count. Output: the keys above with "connections"
// = P and "children_cpu_ms" in place of "receiver_cpu_ms", plus "processes":P and
// "reply_bytes":R. In both modes the kernel may split CPU time into user and system by
// sampling at the timer tick (CONFIG_TICK_CPU_ACCOUNTING): user + system is the exact run time,
// but for a process that runs a few microseconds per round the split is noise.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace trellis::bench {
namespace {

// Limits on the arguments. Connections: one client address to one server port has about
// 28,000 ephemeral ports (net.ipv4.ip_local_port_range); bytes: a payload must hold its
// 16-byte header, and a round keeps N x B bytes in flight.
constexpr int kMaxConnections = 20000;
constexpr int kMinBytes = 16;
constexpr int kMaxBytes = 1 << 20;
constexpr int kMaxRounds = 100000;
constexpr int kMaxGapMs = 10000;
constexpr int kMaxSenders = 8;
// A round not complete within this long is an error; the other waits (connections, the
// sender's go, its results) have the same bound.
constexpr int64_t kRoundTimeoutNs = 10'000'000'000;
constexpr int kWaitTimeoutMs = 10000;
// Descriptors a process needs beyond its N sockets (stdio, epoll, pipes, listener).
constexpr rlim_t kSpareFds = 64;
constexpr size_t kHeaderBytes = 16; // t0 (int64), round (uint64), host byte order
constexpr size_t kReadBytes = 64 * 1024;
constexpr uint32_t kControlTag = UINT32_MAX;

// --processes: each child is a process (fork) with a socket; RLIMIT_NPROC and memory bound
// this more than descriptors do. A reply echoes the payload's 16-byte header.
constexpr int kMaxProcesses = 2000;
constexpr int kMinReplyBytes = 16;
constexpr int kMaxReplyBytes = 1 << 20;

struct Options {
  int connections = 1000;
  int bytes = 300;
  int rounds = 200;
  int gap_ms = 20;
  int processes = 0; // > 0: the --processes mode
  int reply_bytes = 150;
  int senders = 1; // threads sharing the send loop (not with --processes)
};

int64_t monotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

int64_t toNs(const timeval& tv) {
  return int64_t(tv.tv_sec) * 1'000'000'000 + tv.tv_usec * 1000;
}

struct CpuNs {
  int64_t user = 0;
  int64_t system = 0;
};

CpuNs cpuNow() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return {toNs(ru.ru_utime), toNs(ru.ru_stime)};
}

CpuNs operator-(const CpuNs& a, const CpuNs& b) {
  return {a.user - b.user, a.system - b.system};
}

// Sleeps ms milliseconds (CLOCK_MONOTONIC), starting over after a signal.
void sleepMs(int ms) {
  const timespec t{ms / 1000, long(ms % 1000) * 1'000'000};
  while (clock_nanosleep(CLOCK_MONOTONIC, 0, &t, nullptr) == EINTR) {
  }
}

std::string errnoText(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

// Percentile as bench/propagation's pct(): the sorted sample at round(p * (n - 1)).
double percentileMs(std::vector<int64_t> ns, double p) {
  std::sort(ns.begin(), ns.end());
  const size_t i = size_t(p / 100 * double(ns.size() - 1) + 0.5);
  return double(ns[std::min(i, ns.size() - 1)]) / 1e6;
}

// Waits until fd is ready for `events` or timeout_ms passes; false on timeout or error.
bool waitFd(int fd, short events, int timeout_ms, std::string& err, const char* what) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int k = poll(&p, 1, timeout_ms);
    if (k > 0)
      return true;
    if (k == 0) {
      err = std::string(what) + ": nothing after " + std::to_string(timeout_ms) + " ms";
      return false;
    }
    if (errno != EINTR) {
      err = errnoText(std::string(what) + ": poll");
      return false;
    }
  }
}

bool writeAll(int fd, const void* data, size_t n, std::string& err, const char* what) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      err = errnoText(what);
      return false;
    }
    p += w;
    n -= size_t(w);
  }
  return true;
}

// Reads exactly n bytes, each wait bounded by kWaitTimeoutMs; end of file is an error.
bool readAll(int fd, void* data, size_t n, std::string& err, const char* what) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    if (!waitFd(fd, POLLIN, kWaitTimeoutMs, err, what))
      return false;
    const ssize_t r = ::read(fd, p, n);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      err = errnoText(what);
      return false;
    }
    if (r == 0) {
      err = std::string(what) + ": the other process closed the pipe";
      return false;
    }
    p += r;
    n -= size_t(r);
  }
  return true;
}

bool setNoDelay(int fd, std::string& err) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
    err = errnoText("setsockopt TCP_NODELAY");
    return false;
  }
  return true;
}

bool setNonBlocking(int fd, std::string& err) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    err = errnoText("fcntl O_NONBLOCK");
    return false;
  }
  return true;
}

// Each process holds N sockets and a few more descriptors: raise the soft limit (and the hard
// one, which only a privileged process may) to N + kSpareFds. Inherited by the forked sender.
bool raiseFdLimit(int connections, std::string& err) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
    err = errnoText("getrlimit RLIMIT_NOFILE");
    return false;
  }
  const rlim_t need = rlim_t(connections) + kSpareFds;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= need)
    return true;
  rlimit want = rl;
  want.rlim_cur = need;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
    want.rlim_max = need;
  if (setrlimit(RLIMIT_NOFILE, &want) < 0) {
    err = errnoText("setrlimit RLIMIT_NOFILE to " + std::to_string(need) + " (hard limit " +
                    std::to_string(rl.rlim_max) + ")");
    return false;
  }
  return true;
}

// A listening TCP socket on 127.0.0.1, its port chosen by the kernel and read back into port;
// -1 (err set) on failure.
int listenLoopback(int backlog, uint16_t& port, std::string& err) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 ||
      listen(fd, backlog) < 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&a), &alen) < 0) {
    err = errnoText("listen on 127.0.0.1:0");
    if (fd >= 0)
      ::close(fd);
    return -1;
  }
  port = ntohs(a.sin_port);
  return fd;
}

// Connects to 127.0.0.1:port, the blocking connect bounded by SO_SNDTIMEO; the socket is then
// TCP_NODELAY and non-blocking. -1 (err set) on failure; i numbers the connection in the
// messages (< 0: the process's only one).
int connectLoopback(uint16_t port, int i, std::string& err) {
  const std::string num = i < 0 ? "" : " " + std::to_string(i);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    err = errnoText("socket" + num);
    return -1;
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const timeval limit{kWaitTimeoutMs / 1000, 0};
  bool ok = true;
  if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit) < 0) {
    err = errnoText("setsockopt SO_SNDTIMEO");
    ok = false;
  } else if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
    err = errnoText("connect" + num + " to 127.0.0.1:" + std::to_string(port));
    ok = false;
  } else {
    ok = setNoDelay(fd, err) && setNonBlocking(fd, err);
  }
  if (!ok) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Adds fd to the epoll set ep, level-triggered for reading, with tag as its event data.
bool addReadable(int ep, int fd, uint32_t tag, const char* what, std::string& err) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u32 = tag;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
    err = errnoText(what);
    return false;
  }
  return true;
}

// A new epoll set with fd in it (see addReadable); -1 (err set) on failure.
int epollWith(int fd, uint32_t tag, const char* what, std::string& err) {
  const int ep = epoll_create1(0);
  if (ep < 0) {
    err = errnoText("epoll_create1");
    return -1;
  }
  if (!addReadable(ep, fd, tag, what, err)) {
    ::close(ep);
    return -1;
  }
  return ep;
}

// epoll_wait on ep until something is ready or the deadline (monotonicNs) passes: the number
// of events, 0 once the deadline has passed, -1 (err set) on failure.
int waitEvents(int ep, std::vector<epoll_event>& events, int64_t deadline, std::string& err) {
  for (;;) {
    const int64_t wait_ns = deadline - monotonicNs();
    if (wait_ns <= 0)
      return 0;
    const int k = epoll_wait(ep, events.data(), int(events.size()),
                             int(std::min<int64_t>(wait_ns / 1'000'000 + 1, INT32_MAX)));
    if (k > 0)
      return k;
    if (k < 0 && errno != EINTR) {
      err = errnoText("epoll_wait");
      return -1;
    }
  }
}

// One end of a connection that a round reads a whole message from (the receiver's side of a
// payload, the process sender's side of a reply).
struct Conn {
  int fd = -1;
  uint32_t got = 0;             // bytes of the current message received
  char head[kHeaderBytes] = {}; // its first bytes, as they arrive
};

// One recv() on c into buf, its result returned: what it brought is counted in c.got, and
// kept in c.head while the message's first kHeaderBytes are still arriving.
ssize_t recvSome(Conn& c, std::vector<char>& buf) {
  const ssize_t got = ::recv(c.fd, buf.data(), buf.size(), 0);
  if (got > 0) {
    if (c.got < kHeaderBytes)
      std::memcpy(c.head + c.got, buf.data(), std::min(kHeaderBytes - c.got, size_t(got)));
    c.got += uint32_t(got);
  }
  return got;
}

// Waits up to kWaitTimeoutMs until the listener or watch_fd (where the other side's failure
// shows) is readable, leaving both poll results in p; `conn` names what is awaited, connection
// i of n, in the timeout's message.
bool waitConnection(int listen_fd, int watch_fd, const char* conn, int i, int n, pollfd (&p)[2],
                    std::string& err) {
  p[0] = {listen_fd, POLLIN, 0};
  p[1] = {watch_fd, POLLIN, 0};
  for (;;) {
    const int k = poll(p, 2, kWaitTimeoutMs);
    if (k > 0)
      return true;
    if (k < 0 && errno == EINTR)
      continue;
    err = k == 0 ? "accept: " + std::string(conn) + " " + std::to_string(i) + " of " +
                       std::to_string(n) + " did not come within " +
                       std::to_string(kWaitTimeoutMs) + " ms"
                 : errnoText("poll the listener");
    return false;
  }
}

// Accepts one connection into c: TCP_NODELAY, non-blocking, in the epoll set ep (tagged with
// its index), level-triggered as mesh_streams.
bool acceptConn(int listen_fd, int ep, uint32_t index, Conn& c, std::string& err) {
  const int fd = accept(listen_fd, nullptr, nullptr);
  if (fd < 0) {
    err = errnoText("accept");
    return false;
  }
  c.fd = fd;
  return setNoDelay(fd, err) && setNonBlocking(fd, err) &&
         addReadable(ep, fd, index, "epoll_ctl", err);
}

nlohmann::json cpuMsJson(const CpuNs& cpu, double rounds) {
  return {{"user", double(cpu.user) / 1e6 / rounds}, {"system", double(cpu.system) / 1e6 / rounds}};
}

// The output keys both modes share; each adds the CPU of the connections' other ends (and the
// --processes mode its own settings).
nlohmann::json roundsJson(const Options& opt, int connections, const std::vector<int64_t>& lat_ns,
                          const std::vector<int64_t>& loop_ns, int64_t short_sends,
                          const CpuNs& sender_cpu) {
  return {{"connections", connections},
          {"bytes", opt.bytes},
          {"rounds", opt.rounds},
          {"gap_ms", opt.gap_ms},
          {"p50_ms", percentileMs(lat_ns, 50)},
          {"p99_ms", percentileMs(lat_ns, 99)},
          {"max_ms", percentileMs(lat_ns, 100)},
          {"send_loop_p50_ms", percentileMs(loop_ns, 50)},
          {"send_loop_p99_ms", percentileMs(loop_ns, 99)},
          {"senders", opt.senders},
          {"short_sends", short_sends},
          {"sender_cpu_ms", cpuMsJson(sender_cpu, opt.rounds)}};
}

// What the sender reports once the rounds are over, after its per-round send-loop times.
struct SenderSummary {
  CpuNs cpu;
  int64_t short_sends = 0;
};

// The forked child: connects N sockets to the receiver, then per round waits for the
// receiver's go byte, sleeps the gap and sends B bytes on every socket in one loop.
class Sender {
public:
  Sender(const Options& opt, uint16_t port, int go_fd, int report_fd)
      : opt_(opt), port_(port), go_fd_(go_fd), report_fd_(report_fd) {}

  int run() {
    std::string err;
    if (!connectAll(err) || !runRounds(err)) {
      if (!receiver_gone_) // else the receiver reports why it stopped
        std::fprintf(stderr, "trellis_loopback_floor: sender: %s\n", err.c_str());
      return 1;
    }
    return 0;
  }

private:
  bool connectAll(std::string& err) {
    fds_.reserve(size_t(opt_.connections));
    for (int i = 0; i < opt_.connections; ++i) {
      const int fd = connectLoopback(port_, i, err);
      if (fd < 0)
        return false;
      fds_.push_back(fd);
    }
    const char ready = 'r';
    return writeAll(report_fd_, &ready, 1, err, "write ready to the receiver");
  }

  // One thread's part of a round: connections k, k + T, ...
  struct Share {
    std::vector<std::pair<size_t, size_t>> partial; // (connection, bytes it took)
    std::string err;
  };
  void sendShare(size_t k, const std::vector<char>& payload, Share& share) {
    for (size_t i = k; i < fds_.size(); i += size_t(opt_.senders)) {
      const ssize_t w = ::send(fds_[i], payload.data(), payload.size(), MSG_NOSIGNAL);
      if (w == ssize_t(payload.size()))
        continue;
      if (w < 0 && errno != EAGAIN) {
        share.err = errnoText("send on connection " + std::to_string(i));
        return;
      }
      share.partial.push_back({i, w < 0 ? size_t(0) : size_t(w)});
    }
  }

  bool runRounds(std::string& err) {
    // The other sender threads: each round they wait at `start`, send their share and meet
    // at `done`; `stopping` set before a `start` ends them.
    const size_t threads = size_t(opt_.senders);
    std::vector<Share> shares(threads);
    std::barrier<> start{ptrdiff_t(threads)}, done{ptrdiff_t(threads)};
    std::atomic<bool> stopping{false};
    std::vector<char> payload(size_t(opt_.bytes), 'x');
    std::vector<std::thread> helpers;
    for (size_t k = 1; k < threads; ++k)
      helpers.emplace_back([&, k] {
        for (;;) {
          start.arrive_and_wait();
          if (stopping.load())
            return;
          sendShare(k, payload, shares[k]);
          done.arrive_and_wait();
        }
      });
    struct Joiner { // ends the helpers however the rounds end
      std::vector<std::thread>& helpers;
      std::barrier<>& start;
      std::atomic<bool>& stopping;
      ~Joiner() {
        if (helpers.empty())
          return;
        stopping.store(true);
        start.arrive_and_wait();
        for (auto& t : helpers)
          t.join();
      }
    } joiner{helpers, start, stopping};
    return sendRounds(payload, start, done, shares, err);
  }

  bool sendRounds(std::vector<char>& payload, std::barrier<>& start, std::barrier<>& done,
                  std::vector<Share>& shares, std::string& err) {
    std::vector<int64_t> loop_ns;
    loop_ns.reserve(size_t(opt_.rounds));
    CpuNs cpu0;
    for (int r = 0; r < opt_.rounds; ++r) {
      char go;
      // The receiver may take up to kRoundTimeoutNs over the previous round.
      if (!waitFd(go_fd_, POLLIN, kWaitTimeoutMs + int(kRoundTimeoutNs / 1'000'000), err,
                  "wait for the receiver's go"))
        return false;
      const ssize_t got = ::read(go_fd_, &go, 1);
      if (got <= 0) {
        receiver_gone_ = got == 0;
        err = errnoText("read the receiver's go");
        return false;
      }
      if (r == 0)
        cpu0 = cpuNow();
      sleepMs(opt_.gap_ms);
      const int64_t t0 = monotonicNs();
      const uint64_t round = uint64_t(r);
      std::memcpy(payload.data(), &t0, 8);
      std::memcpy(payload.data() + 8, &round, 8);
      start.arrive_and_wait();
      sendShare(0, payload, shares[0]);
      done.arrive_and_wait();
      loop_ns.push_back(monotonicNs() - t0);
      for (auto& share : shares) {
        if (!share.err.empty()) {
          err = share.err;
          return false;
        }
        partial_.insert(partial_.end(), share.partial.begin(), share.partial.end());
        share.partial.clear();
      }
      if (!finishPartial(payload, err))
        return false;
    }
    const CpuNs cpu1 = cpuNow();
    // The results wait for the receiver's end byte: the pipe must stay silent in a round.
    char end;
    if (!readAll(go_fd_, &end, 1, err, "wait for the receiver's end of the rounds"))
      return false;
    const SenderSummary sum{cpu1 - cpu0, short_sends_};
    return writeAll(report_fd_, loop_ns.data(), loop_ns.size() * sizeof(int64_t), err,
                    "write the send-loop times") &&
           writeAll(report_fd_, &sum, sizeof sum, err, "write the CPU summary");
  }

  // The payloads a full socket buffer did not take at once, sent as room appears.
  bool finishPartial(const std::vector<char>& payload, std::string& err) {
    short_sends_ += int64_t(partial_.size());
    for (auto [i, off] : partial_) {
      while (off < payload.size()) {
        if (!waitFd(fds_[i], POLLOUT, kWaitTimeoutMs, err, "wait for room to send"))
          return false;
        const ssize_t w = ::send(fds_[i], payload.data() + off, payload.size() - off, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
          err = errnoText("send on connection " + std::to_string(i));
          return false;
        }
        off += w > 0 ? size_t(w) : 0;
      }
    }
    partial_.clear();
    return true;
  }

  const Options opt_;
  const uint16_t port_;
  const int go_fd_;
  const int report_fd_;
  std::vector<int> fds_;
  std::vector<std::pair<size_t, size_t>> partial_; // (connection, bytes it took)
  int64_t short_sends_ = 0;
  bool receiver_gone_ = false; // the go pipe ended: the receiver stopped
};

// The parent: accepts the sender's N connections and times each round's arrival.
class Receiver {
public:
  Receiver(const Options& opt, int listen_fd, int go_fd, int report_fd)
      : opt_(opt), listen_fd_(listen_fd), go_fd_(go_fd), report_fd_(report_fd) {}

  bool run(nlohmann::json& out, std::string& err) {
    ep_ = epoll_create1(0);
    if (ep_ < 0) {
      err = errnoText("epoll_create1");
      return false;
    }
    if (!acceptAll(err))
      return false;
    char ready;
    if (!readAll(report_fd_, &ready, 1, err, "wait for the sender's connections"))
      return false;
    // The report pipe is silent during the rounds: readable there means the sender died.
    if (!addReadable(ep_, report_fd_, kControlTag, "epoll_ctl the sender's pipe", err))
      return false;

    std::vector<int64_t> lat_ns;
    lat_ns.reserve(size_t(opt_.rounds));
    const CpuNs cpu0 = cpuNow();
    for (int r = 0; r < opt_.rounds; ++r) {
      int64_t ns = 0;
      if (!runRound(uint64_t(r), ns, err))
        return false;
      lat_ns.push_back(ns);
    }
    const CpuNs cpu1 = cpuNow();
    std::vector<int64_t> loop_ns(size_t(opt_.rounds));
    SenderSummary sum;
    const char end = 'e';
    if (!writeAll(go_fd_, &end, 1, err, "write the end of the rounds to the sender") ||
        !readAll(report_fd_, loop_ns.data(), loop_ns.size() * sizeof(int64_t), err,
                 "read the sender's send-loop times") ||
        !readAll(report_fd_, &sum, sizeof sum, err, "read the sender's CPU summary"))
      return false;

    out = roundsJson(opt_, opt_.connections, lat_ns, loop_ns, sum.short_sends, sum.cpu);
    out["receiver_cpu_ms"] = cpuMsJson(cpu1 - cpu0, opt_.rounds);
    return true;
  }

private:
  bool acceptAll(std::string& err) {
    conns_.resize(size_t(opt_.connections));
    for (int i = 0; i < opt_.connections; ++i) {
      // The pipe too: a sender that failed to connect closes it rather than leave us waiting.
      pollfd p[2];
      if (!waitConnection(listen_fd_, report_fd_, "connection", i, opt_.connections, p, err))
        return false;
      if (!(p[0].revents & POLLIN)) {
        err = "the sender stopped after " + std::to_string(i) + " connections";
        return false;
      }
      if (!acceptConn(listen_fd_, ep_, uint32_t(i), conns_[size_t(i)], err))
        return false;
    }
    return true;
  }

  // Lets the sender start round r and waits until every connection has its B bytes; ns is
  // then t_last - t0.
  bool runRound(uint64_t r, int64_t& ns, std::string& err) {
    for (Conn& c : conns_)
      c.got = 0;
    size_t left = conns_.size();
    const char go = 'g';
    if (!writeAll(go_fd_, &go, 1, err, "write go to the sender"))
      return false;
    const int64_t deadline = monotonicNs() + int64_t(opt_.gap_ms) * 1'000'000 + kRoundTimeoutNs;
    std::vector<epoll_event> events(1024);
    std::vector<char> buf(kReadBytes);
    int64_t t0 = 0;
    bool have_t0 = false;
    while (left > 0) {
      const int k = waitEvents(ep_, events, deadline, err);
      if (k < 0)
        return false;
      if (k == 0) {
        err = "round " + std::to_string(r) + ": " + std::to_string(left) + " of " +
              std::to_string(conns_.size()) + " connections still lacked their " +
              std::to_string(opt_.bytes) + " bytes after " +
              std::to_string(kRoundTimeoutNs / 1'000'000'000) + " s";
        return false;
      }
      for (int e = 0; e < k; ++e) {
        const uint32_t i = events[e].data.u32;
        if (i == kControlTag) {
          err = "round " + std::to_string(r) + ": the sender's pipe became readable (it " +
                "exited or wrote out of turn)";
          return false;
        }
        Conn& c = conns_[i];
        const ssize_t got = recvSome(c, buf);
        if (got < 0) {
          if (errno == EAGAIN || errno == EINTR)
            continue;
          err = errnoText("recv on connection " + std::to_string(i));
          return false;
        }
        if (got == 0) {
          err = "connection " + std::to_string(i) + " closed by the sender";
          return false;
        }
        const int64_t now = monotonicNs();
        if (c.got > uint32_t(opt_.bytes)) {
          err = "round " + std::to_string(r) + ": connection " + std::to_string(i) + " got " +
                std::to_string(c.got) + " bytes, more than the " + std::to_string(opt_.bytes) +
                " sent";
          return false;
        }
        if (c.got < uint32_t(opt_.bytes))
          continue;
        int64_t sent_t0;
        uint64_t sent_round;
        std::memcpy(&sent_t0, c.head, 8);
        std::memcpy(&sent_round, c.head + 8, 8);
        if (sent_round != r || (have_t0 && sent_t0 != t0)) {
          err = "round " + std::to_string(r) + ": connection " + std::to_string(i) +
                " carried another round's payload (round " + std::to_string(sent_round) + ")";
          return false;
        }
        t0 = sent_t0;
        have_t0 = true;
        if (--left == 0)
          ns = now - t0;
      }
    }
    return true;
  }

  const Options opt_;
  const int listen_fd_;
  const int go_fd_;
  const int report_fd_;
  int ep_ = -1;
  std::vector<Conn> conns_;
};

// ---- --processes: P woken processes, one reply each --------------------------------------------

// Sends all n bytes on a non-blocking socket, each wait for room bounded by kWaitTimeoutMs.
bool sendAll(int fd, const char* p, size_t n, std::string& err, const char* what) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w >= 0) {
      p += w;
      n -= size_t(w);
      continue;
    }
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN) {
      err = errnoText(what);
      return false;
    }
    if (!waitFd(fd, POLLOUT, kWaitTimeoutMs, err, what))
      return false;
  }
  return true;
}

// One forked child: an idle proxy reduced to its socket. Connects to the sender, says it is
// ready, then per round blocks in epoll_wait until its B bytes are in and answers R bytes whose
// header echoes the payload's. At the sender's end of the rounds it sends its CPU over them
// (a CpuNs).
class IdleChild {
public:
  IdleChild(const Options& opt, uint16_t port) : opt_(opt), port_(port) {}

  int run() {
    std::string err;
    if (!serve(err)) {
      std::fprintf(stderr, "trellis_loopback_floor: child %d: %s\n", int(getpid()), err.c_str());
      return 1;
    }
    return 0;
  }

private:
  bool serve(std::string& err) {
    const int fd = connectLoopback(port_, -1, err);
    if (fd < 0)
      return false;
    const int ep = epollWith(fd, 0, "epoll_ctl", err);
    if (ep < 0)
      return false;
    const char ready = 'r';
    if (!sendAll(fd, &ready, 1, err, "send ready to the sender"))
      return false;
    const CpuNs cpu0 = cpuNow();

    std::vector<char> payload(size_t(opt_.bytes));
    std::vector<char> reply(size_t(opt_.reply_bytes), 'y');
    // Between two payloads: the gap, then at most a round of the sender waiting for others.
    const int idle_limit_ms = opt_.gap_ms + int(kRoundTimeoutNs / 1'000'000) + kWaitTimeoutMs;
    for (uint64_t r = 0;; ++r) {
      size_t got = 0;
      while (got < payload.size()) {
        epoll_event out;
        const int k = epoll_wait(ep, &out, 1, idle_limit_ms);
        if (k < 0) {
          if (errno == EINTR)
            continue;
          err = errnoText("epoll_wait");
          return false;
        }
        if (k == 0) {
          err = "round " + std::to_string(r) + ": nothing from the sender for " +
                std::to_string(idle_limit_ms) + " ms";
          return false;
        }
        const ssize_t n = ::recv(fd, payload.data() + got, payload.size() - got, 0);
        if (n < 0) {
          if (errno == EAGAIN || errno == EINTR)
            continue;
          err = errnoText("recv");
          return false;
        }
        if (n == 0) {
          if (got == 0 && r == uint64_t(opt_.rounds)) // the sender's end of the rounds
            return sendCpu(fd, cpu0, err);
          err = "round " + std::to_string(r) + ": the sender closed the connection with " +
                std::to_string(got) + " of " + std::to_string(opt_.bytes) + " bytes in";
          return false;
        }
        got += size_t(n);
      }
      uint64_t sent_round;
      std::memcpy(&sent_round, payload.data() + 8, 8);
      if (sent_round != r) {
        err = "expected round " + std::to_string(r) + ", got a payload of round " +
              std::to_string(sent_round);
        return false;
      }
      std::memcpy(reply.data(), payload.data(), kHeaderBytes);
      if (!sendAll(fd, reply.data(), reply.size(), err, "send the reply"))
        return false;
    }
  }

  bool sendCpu(int fd, const CpuNs& cpu0, std::string& err) {
    const CpuNs c = cpuNow() - cpu0;
    return sendAll(fd, reinterpret_cast<const char*>(&c), sizeof c, err, "send the CPU summary");
  }

  const Options opt_;
  const uint16_t port_;
};

// The parent in --processes mode: forks the P children, accepts their connections and runs the
// rounds on one thread. Its destructor kills (SIGKILL) and reaps any child still running.
class ProcessSender {
public:
  explicit ProcessSender(const Options& opt) : opt_(opt) {}
  ~ProcessSender() {
    for (size_t i = 0; i < pids_.size(); ++i) {
      if (!reaped_[i]) {
        kill(pids_[i], SIGKILL);
        waitpid(pids_[i], nullptr, 0);
      }
    }
  }
  ProcessSender(const ProcessSender&) = delete;
  ProcessSender& operator=(const ProcessSender&) = delete;

  bool run(nlohmann::json& out, std::string& err) {
    if (!listenAndFork(err) || !acceptAll(err))
      return false;
    // Ready: every child connected and set up its epoll; from here on it idles between rounds.
    if (!receiveAll(
            1, monotonicNs() + int64_t(kWaitTimeoutMs) * 1'000'000, "wait for the children's ready",
            false, [](size_t, int64_t, std::string&) { return true; }, err))
      return false;

    std::vector<int64_t> lat_ns, loop_ns;
    lat_ns.reserve(size_t(opt_.rounds));
    loop_ns.reserve(size_t(opt_.rounds));
    const CpuNs cpu0 = cpuNow();
    for (int r = 0; r < opt_.rounds; ++r) {
      int64_t lat = 0, loop = 0;
      if (!runRound(uint64_t(r), lat, loop, err))
        return false;
      lat_ns.push_back(lat);
      loop_ns.push_back(loop);
    }
    const CpuNs cpu1 = cpuNow();

    // The end: each child answers the end of its stream with its CPU, then exits (SIGCHLD is
    // expected from here on).
    if (epoll_ctl(ep_, EPOLL_CTL_DEL, sig_fd_, nullptr) < 0) {
      err = errnoText("epoll_ctl the signalfd");
      return false;
    }
    for (const Conn& c : conns_) {
      if (shutdown(c.fd, SHUT_WR) < 0) {
        err = errnoText("shutdown");
        return false;
      }
    }
    CpuNs children;
    if (!receiveAll(
            sizeof(CpuNs), monotonicNs() + int64_t(kWaitTimeoutMs) * 1'000'000,
            "read the children's CPU", true,
            [&](size_t i, int64_t, std::string&) {
              CpuNs c;
              std::memcpy(&c, conns_[i].head, sizeof c);
              children.user += c.user;
              children.system += c.system;
              return true;
            },
            err) ||
        !reapAll(err))
      return false;

    out = roundsJson(opt_, opt_.processes, lat_ns, loop_ns, short_sends_, cpu1 - cpu0);
    out["processes"] = opt_.processes;
    out["reply_bytes"] = opt_.reply_bytes;
    out["children_cpu_ms"] = cpuMsJson(children, opt_.rounds);
    return true;
  }

private:
  static_assert(sizeof(CpuNs) <= kHeaderBytes);

  // SIGCHLD is blocked and read from a signalfd made before the first fork, so no child's
  // exit goes unseen. Each child keeps no descriptor of the parent's but stdio.
  bool listenAndFork(std::string& err) {
    uint16_t port = 0;
    listen_fd_ = listenLoopback(std::min(opt_.processes, 4096), port, err);
    if (listen_fd_ < 0)
      return false;
    sigset_t chld, old;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &chld, &old) < 0) {
      err = errnoText("sigprocmask");
      return false;
    }
    sig_fd_ = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sig_fd_ < 0) {
      err = errnoText("signalfd");
      return false;
    }
    const pid_t parent = getpid();
    std::fflush(stdout);
    std::fflush(stderr);
    pids_.reserve(size_t(opt_.processes));
    for (int i = 0; i < opt_.processes; ++i) {
      const pid_t pid = fork();
      if (pid < 0) {
        err =
            errnoText("fork child " + std::to_string(i) + " of " + std::to_string(opt_.processes));
        return false;
      }
      if (pid == 0) {
        ::close(listen_fd_);
        ::close(sig_fd_);
        sigprocmask(SIG_SETMASK, &old, nullptr);
        // Dies with the sender; the check covers a sender gone before the prctl.
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
          _exit(1);
        _exit(IdleChild(opt_, port).run());
      }
      pids_.push_back(pid);
      reaped_.push_back(false);
    }
    ep_ = epollWith(sig_fd_, kControlTag, "epoll_ctl the signalfd", err);
    return ep_ >= 0;
  }

  bool acceptAll(std::string& err) {
    conns_.resize(size_t(opt_.processes));
    for (int i = 0; i < opt_.processes; ++i) {
      pollfd p[2];
      if (!waitConnection(listen_fd_, sig_fd_, "child connection", i, opt_.processes, p, err))
        return false;
      if (p[1].revents & POLLIN) {
        const std::string exits = childExits();
        if (!exits.empty()) {
          err = "after " + std::to_string(i) + " connections: " + exits;
          return false;
        }
      }
      if (!(p[0].revents & POLLIN)) {
        --i;
        continue;
      }
      if (!acceptConn(listen_fd_, ep_, uint32_t(i), conns_[size_t(i)], err))
        return false;
    }
    return true;
  }

  // Sends round r's payload to every child, then reads every reply; lat is the last reply's
  // arrival - t0, loop the send loop's time.
  bool runRound(uint64_t r, int64_t& lat, int64_t& loop, std::string& err) {
    sleepMs(opt_.gap_ms);
    std::vector<char>& payload = payload_;
    payload.resize(size_t(opt_.bytes), 'x');
    const int64_t t0 = monotonicNs();
    std::memcpy(payload.data(), &t0, 8);
    std::memcpy(payload.data() + 8, &r, 8);
    for (size_t i = 0; i < conns_.size(); ++i) {
      const ssize_t w = ::send(conns_[i].fd, payload.data(), payload.size(), MSG_NOSIGNAL);
      if (w == ssize_t(payload.size()))
        continue;
      if (w < 0 && errno != EAGAIN) {
        err = errnoText("round " + std::to_string(r) + ": send to child connection " +
                        std::to_string(i));
        return false;
      }
      partial_.push_back({i, w < 0 ? size_t(0) : size_t(w)});
    }
    loop = monotonicNs() - t0;
    // The rest of what a full socket did not take (never, for small payloads).
    short_sends_ += int64_t(partial_.size());
    for (auto [i, off] : partial_) {
      if (!sendAll(conns_[i].fd, payload.data() + off, payload.size() - off, err,
                   "send the rest of a payload"))
        return false;
    }
    partial_.clear();
    int64_t t_last = 0;
    const std::string phase = "round " + std::to_string(r);
    if (!receiveAll(
            size_t(opt_.reply_bytes), t0 + kRoundTimeoutNs, phase, false,
            [&](size_t i, int64_t now, std::string& e) {
              int64_t echo_t0;
              uint64_t echo_round;
              std::memcpy(&echo_t0, conns_[i].head, 8);
              std::memcpy(&echo_round, conns_[i].head + 8, 8);
              if (echo_round != r || echo_t0 != t0) {
                e = phase + ": child connection " + std::to_string(i) +
                    " replied to another payload (round " + std::to_string(echo_round) + ")";
                return false;
              }
              t_last = now;
              return true;
            },
            err))
      return false;
    lat = t_last - t0;
    return true;
  }

  // Reads until every connection has its `need` bytes (the first kHeaderBytes kept in `head`),
  // calling done(i, now, err) as connection i completes; `forget` drops a complete connection
  // from the epoll set (its child is about to close it). A readable signalfd (a child exited),
  // a connection's end, more than `need` bytes or the deadline passing is an error.
  template <typename Done>
  bool receiveAll(size_t need, int64_t deadline, const std::string& phase, bool forget, Done&& done,
                  std::string& err) {
    for (Conn& c : conns_)
      c.got = 0;
    size_t left = conns_.size();
    std::vector<epoll_event> events(std::min<size_t>(conns_.size() + 1, 1024));
    while (left > 0) {
      const int k = waitEvents(ep_, events, deadline, err);
      if (k < 0)
        return false;
      if (k == 0) {
        err = phase + ": " + std::to_string(left) + " of " + std::to_string(conns_.size()) +
              " children had not sent their " + std::to_string(need) + " bytes in time";
        return false;
      }
      for (int e = 0; e < k; ++e) {
        const uint32_t i = events[e].data.u32;
        if (i == kControlTag) {
          const std::string exits = childExits();
          if (exits.empty())
            continue;
          err = phase + ": " + exits;
          return false;
        }
        Conn& c = conns_[i];
        const ssize_t got = recvSome(c, buf_);
        if (got < 0) {
          if (errno == EAGAIN || errno == EINTR)
            continue;
          err = errnoText(phase + ": recv on child connection " + std::to_string(i));
          return false;
        }
        if (got == 0) {
          err = phase + ": child connection " + std::to_string(i) + " closed by its child after " +
                std::to_string(c.got) + " of " + std::to_string(need) + " bytes" +
                (forget ? "" : whyClosed());
          return false;
        }
        const int64_t now = monotonicNs();
        if (c.got > need) {
          err = phase + ": child connection " + std::to_string(i) + " sent " +
                std::to_string(c.got) + " bytes, expected " + std::to_string(need);
          return false;
        }
        if (c.got < need)
          continue;
        if (!done(size_t(i), now, err))
          return false;
        if (forget && epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr) < 0) {
          err = errnoText("epoll_ctl");
          return false;
        }
        --left;
      }
    }
    return true;
  }

  // Reaps the children that exited and says who and how; empty if none did (SIGCHLD also
  // comes for a child stopped or continued, which is no error by itself: a stopped child
  // shows as a round that does not finish).
  std::string childExits() {
    signalfd_siginfo si;
    while (::read(sig_fd_, &si, sizeof si) == ssize_t(sizeof si)) {
    }
    std::string text;
    int status = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      markReaped(pid);
      text += (text.empty() ? "" : "; ") + std::string("child pid ") + std::to_string(pid) +
              (WIFEXITED(status) ? " exited with status " + std::to_string(WEXITSTATUS(status))
                                 : " was killed by signal " + std::to_string(WTERMSIG(status)));
    }
    return text;
  }

  // For a connection that ended: which child exited, if its SIGCHLD comes within a second.
  std::string whyClosed() {
    pollfd p{sig_fd_, POLLIN, 0};
    const int64_t deadline = monotonicNs() + 1'000'000'000;
    while (monotonicNs() < deadline) {
      if (poll(&p, 1, 100) > 0) {
        const std::string text = childExits();
        if (!text.empty())
          return " (" + text + ")";
      }
    }
    return "";
  }

  // After the children's CPU summaries: every child exits, with status 0, within the bound.
  bool reapAll(std::string& err) {
    const int64_t deadline = monotonicNs() + int64_t(kWaitTimeoutMs) * 1'000'000;
    size_t left = size_t(std::count(reaped_.begin(), reaped_.end(), false));
    while (left > 0) {
      int status = 0;
      const pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid < 0 && errno != EINTR) {
        err = errnoText("waitpid");
        return false;
      }
      if (pid > 0) {
        markReaped(pid);
        --left;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
          err = "child pid " + std::to_string(pid) + " failed at the end (status " +
                std::to_string(status) + ")";
          return false;
        }
        continue;
      }
      if (monotonicNs() >= deadline) {
        err = std::to_string(left) + " children did not exit within " +
              std::to_string(kWaitTimeoutMs) + " ms of the rounds' end (killed)";
        return false;
      }
      const timespec tick{0, 1'000'000};
      nanosleep(&tick, nullptr);
    }
    return true;
  }

  void markReaped(pid_t pid) {
    const auto it = std::find(pids_.begin(), pids_.end(), pid);
    if (it != pids_.end())
      reaped_[size_t(it - pids_.begin())] = true;
  }

  const Options opt_;
  int listen_fd_ = -1;
  int sig_fd_ = -1;
  int ep_ = -1;
  std::vector<pid_t> pids_;
  std::vector<bool> reaped_; // by pids_ index
  std::vector<Conn> conns_;
  std::vector<std::pair<size_t, size_t>> partial_; // (connection, bytes it took)
  std::vector<char> payload_;
  std::vector<char> buf_ = std::vector<char>(kReadBytes);
  int64_t short_sends_ = 0;
};

int runProcesses(const Options& opt) {
  signal(SIGPIPE, SIG_IGN);
  std::string err;
  nlohmann::json out;
  bool ok = raiseFdLimit(opt.processes, err);
  if (ok) {
    ProcessSender sender(opt);
    ok = sender.run(out, err);
  }
  if (!ok) {
    std::fprintf(stderr, "trellis_loopback_floor: %s\n", err.c_str());
    return 1;
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

bool parseInt(std::string_view flag, const char* text, int lo, int hi, int& out) {
  const std::string_view s(text);
  int v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || v < lo || v > hi) {
    std::fprintf(stderr, "trellis_loopback_floor: %.*s %s: expected an integer in [%d, %d]\n",
                 int(flag.size()), flag.data(), text, lo, hi);
    return false;
  }
  out = v;
  return true;
}

int usage() {
  std::fprintf(stderr, "usage: trellis_loopback_floor [--connections 1000] [--bytes 300] "
                       "[--rounds 200] [--gap-ms 20] [--senders 1]\n"
                       "       trellis_loopback_floor --processes P [--reply-bytes 150] "
                       "[--bytes 300] [--rounds 200] [--gap-ms 20]\n");
  return 1;
}

int run(const Options& opt) {
  if (opt.processes > 0)
    return runProcesses(opt);
  signal(SIGPIPE, SIG_IGN);
  std::string err;
  if (!raiseFdLimit(opt.connections, err)) {
    std::fprintf(stderr, "trellis_loopback_floor: %s\n", err.c_str());
    return 1;
  }
  uint16_t port = 0;
  const int lfd = listenLoopback(std::min(opt.connections, 4096), port, err);
  if (lfd < 0) {
    std::fprintf(stderr, "trellis_loopback_floor: %s\n", err.c_str());
    return 1;
  }
  int go[2], report[2]; // receiver -> sender, sender -> receiver
  if (pipe(go) < 0 || pipe(report) < 0) {
    std::fprintf(stderr, "trellis_loopback_floor: pipe: %s\n", std::strerror(errno));
    return 1;
  }
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid < 0) {
    std::fprintf(stderr, "trellis_loopback_floor: fork: %s\n", std::strerror(errno));
    return 1;
  }
  if (pid == 0) {
    ::close(lfd);
    ::close(go[1]);
    ::close(report[0]);
    _exit(Sender(opt, port, go[0], report[1]).run());
  }
  ::close(go[0]);
  ::close(report[1]);

  nlohmann::json out;
  const bool ok = Receiver(opt, lfd, go[1], report[0]).run(out, err);
  ::close(go[1]); // a sender still waiting for its go sees the end of the pipe and exits
  // Reap the sender, bounded: it should be gone once the pipes are closed.
  int status = 0;
  pid_t w = 0;
  const int64_t deadline = monotonicNs() + int64_t(kWaitTimeoutMs) * 1'000'000;
  while ((w = waitpid(pid, &status, WNOHANG)) == 0 && monotonicNs() < deadline) {
    const timespec tick{0, 10'000'000};
    nanosleep(&tick, nullptr);
  }
  if (w == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    if (ok)
      err = "the sender did not exit after the rounds (killed)";
  }
  if (!ok || w == 0) {
    std::fprintf(stderr, "trellis_loopback_floor: %s\n", err.c_str());
    return 1;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "trellis_loopback_floor: the sender failed (status %d)\n", status);
    return 1;
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

} // namespace
} // namespace trellis::bench

int main(int argc, char** argv) {
  trellis::bench::Options opt;
  using trellis::bench::parseInt;
  bool have_connections = false, have_reply = false;
  for (int i = 1; i < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (i + 1 >= argc)
      return trellis::bench::usage();
    bool ok;
    if (flag == "--connections") {
      ok = parseInt(flag, argv[i + 1], 1, trellis::bench::kMaxConnections, opt.connections);
      have_connections = true;
    } else if (flag == "--processes") {
      ok = parseInt(flag, argv[i + 1], 1, trellis::bench::kMaxProcesses, opt.processes);
    } else if (flag == "--reply-bytes") {
      ok = parseInt(flag, argv[i + 1], trellis::bench::kMinReplyBytes,
                    trellis::bench::kMaxReplyBytes, opt.reply_bytes);
      have_reply = true;
    } else if (flag == "--bytes") {
      ok = parseInt(flag, argv[i + 1], trellis::bench::kMinBytes, trellis::bench::kMaxBytes,
                    opt.bytes);
    } else if (flag == "--rounds") {
      ok = parseInt(flag, argv[i + 1], 1, trellis::bench::kMaxRounds, opt.rounds);
    } else if (flag == "--senders") {
      ok = parseInt(flag, argv[i + 1], 1, trellis::bench::kMaxSenders, opt.senders);
    } else if (flag == "--gap-ms") {
      ok = parseInt(flag, argv[i + 1], 0, trellis::bench::kMaxGapMs, opt.gap_ms);
    } else {
      return trellis::bench::usage();
    }
    if (!ok)
      return 1;
  }
  if (opt.processes > 0 && have_connections) {
    std::fprintf(stderr, "trellis_loopback_floor: --connections and --processes are two "
                         "modes (one connection per process with --processes): give one\n");
    return 1;
  }
  if (opt.processes > 0 && opt.senders != 1) {
    std::fprintf(stderr, "trellis_loopback_floor: --senders applies only without "
                         "--processes\n");
    return 1;
  }
  if (opt.processes == 0 && have_reply) {
    std::fprintf(stderr, "trellis_loopback_floor: --reply-bytes applies only with "
                         "--processes\n");
    return 1;
  }
  return trellis::bench::run(opt);
}
