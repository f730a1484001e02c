// trellis_mesh_streams: N simulated proxies on the mesh protocol (docs/protocol.md), for
// bench/propagation. One thread, epoll, non-blocking sockets: each stream sends
// GET /v1/mesh/stream, decodes the chunked body and splits it into NDJSON lines. It never
// acks (a simulated stream measures the server's push, not a proxy's apply).
//
// A delta is (nearly always) the same line on every stream, so only the first stream to
// start a version keeps its text; it is parsed once, and every stream records only the
// version and the CLOCK_MONOTONIC time at which each line's last byte arrived on it. A watched
// change is in the first version whose parsed delta shows it (V); it reached a stream with
// that stream's first line of a version >= V: a stream still busy with an earlier message
// gets one catch-up delta to a later version instead (docs/protocol.md "Deltas"). (Should two
// different texts share a version, a catch-up from another base, only one is parsed: V can
// then come out later than the truth, never earlier.)
//
// Driver protocol, one line each way:
//   stdin  `watch ID SERVICE ADDRESS add|remove`  the next delta whose `services.SERVICE`
//          endpoints contain ADDRESS (add) or lack it, or whose `removed` names SERVICE
//          (remove), satisfies watch ID. Send it before making the change.
//          -> `watching ID`
//   stdin  `stats` -> `stats open=N snapshots=N deltas=N heartbeats=N pending=N bytes=N`
//          (deltas: lines received, all streams; bytes: message bytes received, all streams)
//   stdin  `quit`
//   stdout `ready N`                  every stream has received its snapshot
//   stdout `done ID VERSION FIRST_NS MEDIAN_NS LAST_NS STREAMS`  watch ID was first carried
//          by VERSION, and every one of the STREAMS open streams has it; the times are
//          CLOCK_MONOTONIC ns of its arrival on the first, median and last stream.
//   stdout `closed NODE REASON`       a stream ended (it is not reopened)
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace trellis::bench {
namespace {

int64_t monotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

constexpr size_t kReadBytes = 256 * 1024;
// A line's first bytes tell its type and version: `{"type":"delta","version":42,...`.
constexpr size_t kHeadBytes = 96;
constexpr std::string_view kDeltaHead = "{\"type\":\"delta\",\"version\":";

struct Watch {
  std::string id;
  std::string service;
  std::string address;
  bool add = true;
};

// A watch whose change has been seen: first carried by `version`.
struct Resolved {
  std::string id;
  uint64_t version;
  Watch watch;
};

enum class BodyState { kHeaders, kChunkSize, kChunkData, kChunkEnd, kDone };

struct Stream {
  int fd = -1;
  std::string node;
  bool connected = false;
  std::string out; // request bytes not yet sent
  BodyState state = BodyState::kHeaders;
  std::string hbuf; // response headers / chunk size line
  size_t chunk_left = 0;
  // The current line: its head (until the type and version are known), then either kept
  // whole (this stream parses this version) or skipped to its newline.
  std::string head;
  bool head_known = false;
  bool keep = false;
  std::string line;
  uint64_t line_version = 0; // 0: not a delta
  bool got_snapshot = false;
  bool counted = false;      // in open_
  uint64_t last_version = 0; // in lasts_ once the snapshot is in
  // (version, arrival ns) of each line since the watches were set.
  std::vector<std::pair<uint64_t, int64_t>> history;
  uint64_t lines = 0;
};

class Client {
public:
  Client(std::string host, uint16_t port, int n, std::string prefix, int batch)
      : host_(std::move(host)), port_(port), n_(n), prefix_(std::move(prefix)), batch_(batch) {}

  int run() {
    ep_ = epoll_create1(0);
    if (ep_ < 0)
      return fail("epoll_create1");
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = UINT64_MAX;
    epoll_ctl(ep_, EPOLL_CTL_ADD, 0, &ev);
    streams_.resize(n_);
    openMore();
    std::vector<epoll_event> events(1024);
    buf_.resize(kReadBytes);
    while (!quit_) {
      const int k = epoll_wait(ep_, events.data(), int(events.size()), 1000);
      if (k < 0 && errno != EINTR)
        return fail("epoll_wait");
      for (int i = 0; i < k; ++i) {
        if (events[i].data.u64 == UINT64_MAX) {
          readStdin();
          continue;
        }
        onEvent(streams_[events[i].data.u64], events[i].events);
      }
      std::fflush(stdout);
    }
    return 0;
  }

private:
  static int fail(const char* what) {
    std::fprintf(stderr, "trellis_mesh_streams: %s: %s\n", what, std::strerror(errno));
    return 1;
  }

  // Streams are opened `batch_` at a time, each batch once the previous has its snapshots:
  // a thousand 1 MiB snapshots at once would only measure the loopback.
  void openMore() {
    int started = 0;
    while (next_open_ < n_ && started < batch_) {
      open(next_open_++);
      ++started;
    }
  }

  void open(int i) {
    Stream& s = streams_[i];
    s.node = prefix_ + "-" + std::to_string(i);
    s.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(s.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port_);
    inet_pton(AF_INET, host_.c_str(), &a.sin_addr);
    s.out = "GET /v1/mesh/stream?node=" + s.node +
            "&kind=sidecar&service=bench HTTP/1.1\r\nHost: " + host_ + "\r\n\r\n";
    if (connect(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 && errno != EINPROGRESS) {
      close(s, std::string("connect: ") + std::strerror(errno));
      return;
    }
    ++open_;
    s.counted = true;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u64 = uint64_t(i);
    epoll_ctl(ep_, EPOLL_CTL_ADD, s.fd, &ev);
  }

  void close(Stream& s, const std::string& why) {
    if (s.fd >= 0) {
      ::close(s.fd);
      s.fd = -1;
    }
    if (s.counted) {
      s.counted = false;
      --open_;
    }
    std::printf("closed %s %s\n", s.node.c_str(), why.c_str());
    s.state = BodyState::kDone;
    if (!s.got_snapshot) {
      noteSnapshot(s); // do not wait for it forever
    } else {
      lasts_.erase(lasts_.find(s.last_version));
      checkDone(); // changes only this stream still lacked
    }
  }

  void onEvent(Stream& s, uint32_t events) {
    if (s.fd < 0)
      return;
    if (events & EPOLLOUT) {
      while (!s.out.empty()) {
        const ssize_t w = ::send(s.fd, s.out.data(), s.out.size(), MSG_NOSIGNAL);
        if (w < 0) {
          if (errno == EAGAIN)
            return;
          return close(s, std::string("send: ") + std::strerror(errno));
        }
        s.out.erase(0, size_t(w));
      }
      s.connected = true;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = uint64_t(&s - streams_.data());
      epoll_ctl(ep_, EPOLL_CTL_MOD, s.fd, &ev);
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
      return;
    for (;;) {
      const ssize_t r = ::recv(s.fd, buf_.data(), buf_.size(), 0);
      if (r < 0) {
        if (errno == EAGAIN)
          return;
        return close(s, std::string("recv: ") + std::strerror(errno));
      }
      if (r == 0)
        return close(s, "end of stream");
      const int64_t now = monotonicNs();
      if (!onBytes(s, std::string_view(buf_.data(), size_t(r)), now))
        return;
      if (size_t(r) < buf_.size())
        return;
    }
  }

  // Chunked transfer decoding; body bytes go to onBody.
  bool onBytes(Stream& s, std::string_view in, int64_t now) {
    while (!in.empty()) {
      switch (s.state) {
      case BodyState::kHeaders: {
        s.hbuf.append(in);
        in = {};
        const size_t end = s.hbuf.find("\r\n\r\n");
        if (end == std::string::npos) {
          if (s.hbuf.size() > 16384) {
            close(s, "response headers too long");
            return false;
          }
          break;
        }
        const std::string headers = s.hbuf.substr(0, end);
        const std::string rest = s.hbuf.substr(end + 4);
        s.hbuf.clear();
        if (headers.compare(0, 12, "HTTP/1.1 200") != 0) {
          close(s, "status: " + headers.substr(0, headers.find('\r')));
          return false;
        }
        std::string lower = headers;
        std::transform(lower.begin(), lower.end(), lower.begin(),
                       [](unsigned char c) { return char(std::tolower(c)); });
        if (lower.find("transfer-encoding: chunked") == std::string::npos) {
          close(s, "the stream is not chunked");
          return false;
        }
        s.state = BodyState::kChunkSize;
        if (!rest.empty())
          return onBytes(s, rest, now);
        break;
      }
      case BodyState::kChunkSize: {
        const size_t nl = in.find('\n');
        s.hbuf.append(in.substr(0, nl));
        if (nl == std::string_view::npos) {
          in = {};
          break;
        }
        in.remove_prefix(nl + 1);
        size_t size = 0;
        const auto r = std::from_chars(s.hbuf.data(), s.hbuf.data() + s.hbuf.size(), size, 16);
        s.hbuf.clear();
        if (r.ec != std::errc()) {
          close(s, "bad chunk size");
          return false;
        }
        if (size == 0) {
          close(s, "last chunk");
          return false;
        }
        s.chunk_left = size;
        s.state = BodyState::kChunkData;
        break;
      }
      case BodyState::kChunkData: {
        const size_t n = std::min(s.chunk_left, in.size());
        onBody(s, in.substr(0, n), now);
        in.remove_prefix(n);
        s.chunk_left -= n;
        if (s.chunk_left == 0)
          s.state = BodyState::kChunkEnd;
        break;
      }
      case BodyState::kChunkEnd: {
        const size_t nl = in.find('\n');
        if (nl == std::string_view::npos) {
          in = {};
          break;
        }
        in.remove_prefix(nl + 1);
        s.state = BodyState::kChunkSize;
        break;
      }
      case BodyState::kDone:
        return false;
      }
    }
    return true;
  }

  void onBody(Stream& s, std::string_view in, int64_t now) {
    body_bytes_ += in.size();
    while (!in.empty()) {
      const size_t nl = in.find('\n');
      const std::string_view part = in.substr(0, nl);
      if (!s.head_known) {
        const size_t want = kHeadBytes - s.head.size();
        s.head.append(part.substr(0, want));
        if (s.head.size() >= kHeadBytes || nl != std::string_view::npos) {
          classify(s); // a kept line starts with the head
          if (s.keep && part.size() > want)
            s.line.append(part.substr(want));
        }
      } else if (s.keep) {
        s.line.append(part);
      }
      if (nl == std::string_view::npos)
        return;
      endLine(s, now);
      in.remove_prefix(nl + 1);
    }
  }

  // Decides, from the line's head, whether this stream keeps the line's text.
  void classify(Stream& s) {
    s.head_known = true;
    s.line_version = 0;
    if (s.head.compare(0, kDeltaHead.size(), kDeltaHead) == 0) {
      uint64_t v = 0;
      const char* b = s.head.data() + kDeltaHead.size();
      if (std::from_chars(b, s.head.data() + s.head.size(), v).ec == std::errc())
        s.line_version = v;
    }
    s.keep = false;
    if (s.line_version != 0 && owned_.insert(s.line_version).second) {
      s.keep = true;
      s.line = s.head;
    }
  }

  void endLine(Stream& s, int64_t now) {
    if (!s.head_known)
      classify(s);
    ++s.lines;
    if (!s.got_snapshot) {
      if (s.head.compare(0, 19, "{\"type\":\"snapshot\",") != 0) {
        close(s, "first message is not a snapshot");
        return;
      }
      constexpr std::string_view kKey = "\"version\":";
      const size_t at = s.head.find(kKey);
      if (at != std::string::npos) {
        const char* b = s.head.data() + at + kKey.size();
        std::from_chars(b, s.head.data() + s.head.size(), s.last_version);
      }
      noteSnapshot(s);
      lasts_.insert(s.last_version);
    } else if (s.line_version != 0) {
      ++deltas_;
      if (s.keep) {
        parseDelta(s.line_version, s.line);
        s.line.clear();
        s.line.shrink_to_fit();
      }
      if (!pending_.empty() || !resolved_.empty())
        s.history.emplace_back(s.line_version, now);
      if (s.line_version > s.last_version) {
        lasts_.erase(lasts_.find(s.last_version));
        s.last_version = s.line_version;
        lasts_.insert(s.last_version);
      }
      checkDone();
    } else if (s.head.compare(0, 20, "{\"type\":\"heartbeat\",") == 0) {
      ++heartbeats_;
    } else if (s.head.compare(0, 19, "{\"type\":\"snapshot\",") == 0) {
      close(s, "a second snapshot on one stream");
      return;
    }
    s.head.clear();
    s.head_known = false;
    s.keep = false;
  }

  void noteSnapshot(Stream& s) {
    s.got_snapshot = true;
    ++snapshots_;
    if (snapshots_ == next_open_) {
      if (next_open_ < n_)
        openMore();
      else
        std::printf("ready %d\n", open_);
    }
  }

  static bool satisfies(const Watch& w, const nlohmann::json& j,
                        const std::set<std::string>& removed) {
    if (removed.count(w.service))
      return !w.add;
    const auto services = j.find("services");
    if (services == j.end() || !services->is_object())
      return false;
    auto e = services->find(w.service);
    if (e == services->end() || !e->is_object())
      return false;
    // An endpoint-level change (docs/protocol.md "Endpoint changes"): the address is in
    // endpoints_added (add) or endpoints_removed (remove).
    if (!e->contains("endpoints")) {
      const char* key = w.add ? "endpoints_added" : "endpoints_removed";
      auto list = e->find(key);
      if (list == e->end() || !list->is_array())
        return false;
      for (const auto& ep : *list)
        if ((ep.is_string() ? ep.get<std::string>() : ep.value("address", "")) == w.address)
          return true;
      return false;
    }
    bool present = false;
    for (const auto& ep : (*e)["endpoints"])
      if ((ep.is_string() ? ep.get<std::string>() : ep.value("address", "")) == w.address) {
        present = true;
        break;
      }
    return present == w.add;
  }

  void parseDelta(uint64_t version, const std::string& text) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded()) {
      std::printf("error version %llu: not JSON\n", static_cast<unsigned long long>(version));
      return;
    }
    std::set<std::string> removed;
    if (auto r = j.find("removed"); r != j.end() && r->is_array())
      for (const auto& n : *r)
        if (n.is_string())
          removed.insert(n.get<std::string>());
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (satisfies(*it, j, removed)) {
        resolved_.push_back({it->id, version, *it});
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& r : resolved_) // an earlier version parsed late
      if (version < r.version && satisfies(r.watch, j, removed))
        r.version = version;
  }

  // Reports the watches whose version every open stream has.
  void checkDone() {
    if (resolved_.empty() || lasts_.empty())
      return;
    const uint64_t min = *lasts_.begin();
    while (!owned_.empty() && *owned_.begin() < min)
      owned_.erase(owned_.begin());
    for (auto it = resolved_.begin(); it != resolved_.end();) {
      if (it->version > min) {
        ++it;
        continue;
      }
      std::vector<int64_t> t;
      for (const Stream& s : streams_) {
        if (!s.counted || !s.got_snapshot)
          continue;
        auto h = std::lower_bound(s.history.begin(), s.history.end(),
                                  std::pair<uint64_t, int64_t>{it->version, INT64_MIN});
        if (h != s.history.end())
          t.push_back(h->second);
      }
      std::sort(t.begin(), t.end());
      if (!t.empty())
        std::printf("done %s %llu %lld %lld %lld %zu\n", it->id.c_str(),
                    static_cast<unsigned long long>(it->version),
                    static_cast<long long>(t.front()), static_cast<long long>(t[t.size() / 2]),
                    static_cast<long long>(t.back()), t.size());
      else // every stream connected after the change: nothing to time
        std::printf("done %s %llu 0 0 0 0\n", it->id.c_str(),
                    static_cast<unsigned long long>(it->version));
      it = resolved_.erase(it);
    }
    if (resolved_.empty() && pending_.empty())
      for (Stream& s : streams_)
        s.history.clear();
  }

  void readStdin() {
    char b[65536];
    for (;;) {
      const ssize_t r = ::read(0, b, sizeof b);
      if (r == 0) {
        quit_ = true;
        return;
      }
      if (r < 0)
        return;
      stdin_.append(b, size_t(r));
      size_t nl;
      while ((nl = stdin_.find('\n')) != std::string::npos) {
        command(stdin_.substr(0, nl));
        stdin_.erase(0, nl + 1);
      }
    }
  }

  void command(const std::string& text) {
    std::istringstream in(text);
    std::string cmd;
    in >> cmd;
    if (cmd == "watch") {
      Watch w;
      std::string how;
      in >> w.id >> w.service >> w.address >> how;
      if (w.address.empty() || (how != "add" && how != "remove")) {
        std::printf("error bad watch: %s\n", text.c_str());
        return;
      }
      w.add = how == "add";
      if (pending_.empty() && resolved_.empty())
        for (Stream& st : streams_) // lines before the first watch cannot carry its change
          st.history.clear();
      std::printf("watching %s\n", w.id.c_str());
      pending_.push_back(std::move(w));
    } else if (cmd == "stats") {
      std::printf("stats open=%d snapshots=%d deltas=%llu heartbeats=%llu pending=%zu bytes=%llu\n",
                  open_, snapshots_, static_cast<unsigned long long>(deltas_),
                  static_cast<unsigned long long>(heartbeats_), pending_.size() + resolved_.size(),
                  static_cast<unsigned long long>(body_bytes_));
    } else if (cmd == "quit") {
      quit_ = true;
    } else if (!cmd.empty()) {
      std::printf("error unknown command: %s\n", text.c_str());
    }
  }

  std::string host_;
  uint16_t port_;
  int n_;
  std::string prefix_;
  int batch_;
  int ep_ = -1;
  std::vector<Stream> streams_;
  int next_open_ = 0;
  int open_ = 0;
  int snapshots_ = 0;
  uint64_t deltas_ = 0;
  uint64_t heartbeats_ = 0;
  uint64_t body_bytes_ = 0; // message bytes received, all streams
  std::vector<char> buf_;
  std::string stdin_;
  std::vector<Watch> pending_;      // change not seen yet
  std::vector<Resolved> resolved_;  // seen, not yet on every stream
  std::set<uint64_t> owned_;        // versions some stream keeps the text of
  std::multiset<uint64_t> lasts_;   // each open stream's latest version
  bool quit_ = false;
};

} // namespace
} // namespace trellis::bench

int main(int argc, char** argv) {
  std::string server;
  int n = 1;
  int batch = 50;
  std::string prefix = "sim";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view a = argv[i];
    if (a == "--server")
      server = argv[i + 1];
    else if (a == "--streams")
      n = std::atoi(argv[i + 1]);
    else if (a == "--batch")
      batch = std::atoi(argv[i + 1]);
    else if (a == "--node-prefix")
      prefix = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  const size_t colon = server.rfind(':');
  if (colon == std::string::npos || n < 1 || batch < 1) {
    std::fprintf(stderr, "usage: trellis_mesh_streams --server IP:PORT --streams N "
                         "[--batch 50] [--node-prefix sim]\n");
    return 2;
  }
  const int port = std::atoi(server.c_str() + colon + 1);
  if (port <= 0 || port > 65535) {
    std::fprintf(stderr, "--server %s: bad port\n", server.c_str());
    return 2;
  }
  setvbuf(stdout, nullptr, _IOFBF, 1 << 16);
  trellis::bench::Client c(server.substr(0, colon), uint16_t(port), n, prefix, batch);
  return c.run();
}
