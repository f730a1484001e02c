// examples/echo: a small HTTP/1.1 origin for tests and demos. It answers with its own service
// name and instance id, and can be made slow or failing on purpose (flags at start, or the
// /admin/ endpoints at run time) so that the mesh's failure handling can be exercised.
//
//   GET  /healthz              200 "ok" (503 after POST /admin/fail, until /admin/recover)
//   ANY  /echo                 the request body back (chunked if the request was chunked)
//   GET  /bytes/N              N bytes of body (Content-Length)
//   GET  /chunked/N            N bytes of body, chunked
//   GET  /status/NNN           that status code
//   ANY  anything else         JSON: service, instance, method, path, headers (a repeated
//                              one's values joined with ", ")
//   ?delay=250ms&status=NNN    per-request delay and status on any path
//   POST /admin/delay?d=2s     delay every answer; /admin/error-rate?r=0.5[&status=503]
#include <atomic>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>

#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <nlohmann/json.hpp>

#include "base/units.h"

using asio::awaitable;
using asio::ip::tcp;
using asio::use_awaitable;

namespace {

constexpr size_t kMaxHeaderBytes = 64 * 1024;
constexpr size_t kMaxBodyBytes = 64 * 1024 * 1024;

struct Settings {
  std::string name = "echo";
  std::string instance;
  std::atomic<int64_t> delay_ns{0};
  std::atomic<double> error_rate{0};
  std::atomic<int> error_status{503};
  std::atomic<bool> healthy{true};
  std::atomic<uint64_t> requests{0};
};

Settings g;

struct Request {
  std::string method, target, path, query, version;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool chunked = false;
  bool keep_alive = true;
};

std::string lower(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string queryParam(const std::string& query, const std::string& key) {
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    std::string kv = query.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
    size_t eq = kv.find('=');
    if (kv.substr(0, eq) == key)
      return eq == std::string::npos ? "" : kv.substr(eq + 1);
    if (amp == std::string::npos)
      break;
    pos = amp + 1;
  }
  return "";
}

// Reads one request; returns false on EOF or a request this simple server will not take.
awaitable<bool> readRequest(tcp::socket& s, std::string& buf, Request& req) {
  size_t hdr_end;
  for (;;) {
    hdr_end = buf.find("\r\n\r\n");
    if (hdr_end != std::string::npos)
      break;
    if (buf.size() > kMaxHeaderBytes)
      co_return false;
    char tmp[16384];
    size_t n = co_await s.async_read_some(asio::buffer(tmp), use_awaitable);
    buf.append(tmp, n);
  }
  std::string head = buf.substr(0, hdr_end);
  buf.erase(0, hdr_end + 4);
  size_t eol = head.find("\r\n");
  std::string line = head.substr(0, eol);
  size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string::npos || sp2 == sp1)
    co_return false;
  req.method = line.substr(0, sp1);
  req.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  req.version = line.substr(sp2 + 1);
  size_t q = req.target.find('?');
  req.path = req.target.substr(0, q);
  req.query = q == std::string::npos ? "" : req.target.substr(q + 1);
  req.keep_alive = req.version == "HTTP/1.1";
  size_t content_length = 0;
  size_t pos = eol == std::string::npos ? head.size() : eol + 2;
  while (pos < head.size()) {
    size_t e = head.find("\r\n", pos);
    if (e == std::string::npos)
      e = head.size();
    std::string h = head.substr(pos, e - pos);
    size_t colon = h.find(':');
    if (colon != std::string::npos) {
      std::string k = lower(h.substr(0, colon));
      std::string v = h.substr(colon + 1);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
        v.erase(0, 1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
        v.pop_back();
      if (k == "content-length")
        content_length = std::strtoull(v.c_str(), nullptr, 10);
      else if (k == "transfer-encoding" && lower(v).find("chunked") != std::string::npos)
        req.chunked = true;
      else if (k == "connection")
        req.keep_alive = lower(v) == "close" ? false : (lower(v) == "keep-alive" || req.keep_alive);
      else if (k == "expect" && lower(v) == "100-continue")
        co_await asio::async_write(s, asio::buffer(std::string("HTTP/1.1 100 Continue\r\n\r\n")),
                                   use_awaitable);
      req.headers.emplace_back(k, v);
    }
    pos = e + 2;
  }
  auto fill = [&](size_t want) -> awaitable<void> {
    while (buf.size() < want) {
      char tmp[65536];
      size_t n = co_await s.async_read_some(asio::buffer(tmp), use_awaitable);
      buf.append(tmp, n);
    }
  };
  if (req.chunked) {
    for (;;) {
      size_t e;
      while ((e = buf.find("\r\n")) == std::string::npos)
        co_await fill(buf.size() + 1);
      size_t size = std::strtoull(buf.substr(0, e).c_str(), nullptr, 16);
      buf.erase(0, e + 2);
      if (size == 0) {
        // trailers until an empty line
        while ((e = buf.find("\r\n")) != 0) {
          if (e == std::string::npos) {
            co_await fill(buf.size() + 1);
            continue;
          }
          buf.erase(0, e + 2);
        }
        buf.erase(0, 2);
        break;
      }
      if (req.body.size() + size > kMaxBodyBytes)
        co_return false;
      co_await fill(size + 2);
      req.body.append(buf, 0, size);
      buf.erase(0, size + 2);
    }
  } else if (content_length > 0) {
    if (content_length > kMaxBodyBytes)
      co_return false;
    co_await fill(content_length);
    req.body = buf.substr(0, content_length);
    buf.erase(0, content_length);
  }
  co_return true;
}

const char* reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 201: return "Created";
  case 204: return "No Content";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 429: return "Too Many Requests";
  case 500: return "Internal Server Error";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return "Status";
  }
}

std::string head(int status, const std::string& ctype, bool keep_alive) {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + reason(status) + "\r\n";
  h += "content-type: " + ctype + "\r\n";
  h += "x-echo-service: " + g.name + "\r\nx-echo-instance: " + g.instance + "\r\n";
  if (!keep_alive)
    h += "connection: close\r\n";
  return h;
}

awaitable<void> respond(tcp::socket& s, const Request& req) {
  std::mt19937_64& rng = *[] {
    thread_local std::mt19937_64 r{std::random_device{}()};
    return &r;
  }();
  int64_t delay = g.delay_ns.load();
  if (auto d = queryParam(req.query, "delay"); !d.empty()) {
    if (auto parsed = trellis::parseDuration(d); parsed.ok())
      delay = parsed->count();
  }
  if (delay > 0) {
    asio::steady_timer t(s.get_executor(), std::chrono::nanoseconds(delay));
    co_await t.async_wait(use_awaitable);
  }
  const std::string& p = req.path;
  bool admin = p.rfind("/admin/", 0) == 0;
  int status = 200;
  if (auto st = queryParam(req.query, "status"); !st.empty() && !admin)
    status = std::atoi(st.c_str());
  if (status < 100 || status > 599)
    status = 400;
  std::string ctype = "application/json";
  std::string body;
  bool chunked = false;
  if (!admin && p != "/healthz" && g.error_rate.load() > 0 &&
      std::uniform_real_distribution<double>(0, 1)(rng) < g.error_rate.load())
    status = g.error_status.load();

  if (p == "/healthz") {
    status = g.healthy ? 200 : 503;
    ctype = "text/plain";
    body = g.healthy ? "ok\n" : "unhealthy\n";
  } else if (p == "/admin/fail" || p == "/admin/recover") {
    g.healthy = p == "/admin/recover";
    ctype = "text/plain";
    body = "ok\n";
  } else if (p == "/admin/delay") {
    auto d = trellis::parseDuration(queryParam(req.query, "d"));
    status = d.ok() ? 200 : 400;
    if (d.ok())
      g.delay_ns = d->count();
    ctype = "text/plain";
    body = d.ok() ? "ok\n" : d.error().message() + "\n";
  } else if (p == "/admin/error-rate") {
    g.error_rate = std::atof(queryParam(req.query, "r").c_str());
    if (auto st = queryParam(req.query, "status"); !st.empty())
      g.error_status = std::atoi(st.c_str());
    ctype = "text/plain";
    body = "ok\n";
  } else if (p == "/echo") {
    body = req.body;
    chunked = req.chunked;
    ctype = "application/octet-stream";
    for (auto& [k, v] : req.headers)
      if (k == "content-type")
        ctype = v;
  } else if (p.rfind("/bytes/", 0) == 0 || p.rfind("/chunked/", 0) == 0) {
    chunked = p[1] == 'c';
    size_t n = std::strtoull(p.c_str() + (chunked ? 9 : 7), nullptr, 10);
    n = std::min(n, kMaxBodyBytes);
    body.assign(n, 'x');
    ctype = "application/octet-stream";
  } else if (p.rfind("/status/", 0) == 0) {
    status = std::atoi(p.c_str() + 8);
    if (status < 100 || status > 599)
      status = 400;
  }
  if (body.empty() && ctype == "application/json") {
    nlohmann::json j;
    j["service"] = g.name;
    j["instance"] = g.instance;
    j["method"] = req.method;
    j["path"] = req.path;
    j["query"] = req.query;
    j["body_bytes"] = req.body.size();
    nlohmann::json hs = nlohmann::json::object();
    for (auto& [k, v] : req.headers) {
      // A repeated field joins its values with ", " (RFC 9110 section 5.3).
      if (hs.contains(k))
        hs[k] = hs[k].get<std::string>() + ", " + v;
      else
        hs[k] = v;
    }
    j["headers"] = hs;
    body = j.dump() + "\n";
  }
  std::string out = head(status, ctype, req.keep_alive);
  if (req.method == "HEAD") {
    out += "content-length: " + std::to_string(body.size()) + "\r\n\r\n";
    co_await asio::async_write(s, asio::buffer(out), use_awaitable);
  } else if (!chunked) {
    out += "content-length: " + std::to_string(body.size()) + "\r\n\r\n";
    std::array<asio::const_buffer, 2> bufs{asio::buffer(out), asio::buffer(body)};
    co_await asio::async_write(s, bufs, use_awaitable);
  } else {
    out += "transfer-encoding: chunked\r\n\r\n";
    co_await asio::async_write(s, asio::buffer(out), use_awaitable);
    constexpr size_t kChunk = 16 * 1024;
    for (size_t off = 0; off < body.size(); off += kChunk) {
      size_t n = std::min(kChunk, body.size() - off);
      char sz[32];
      int len = std::snprintf(sz, sizeof sz, "%zx\r\n", n);
      std::array<asio::const_buffer, 3> bufs{asio::buffer(sz, static_cast<size_t>(len)),
                                             asio::buffer(body.data() + off, n),
                                             asio::buffer("\r\n", 2)};
      co_await asio::async_write(s, bufs, use_awaitable);
    }
    co_await asio::async_write(s, asio::buffer(std::string("0\r\n\r\n")), use_awaitable);
  }
}

awaitable<void> session(tcp::socket s) {
  s.set_option(tcp::no_delay(true));
  std::string buf;
  try {
    for (;;) {
      Request req;
      if (!co_await readRequest(s, buf, req))
        break;
      g.requests++;
      co_await respond(s, req);
      if (!req.keep_alive)
        break;
    }
  } catch (const std::exception&) {
    // peer went away
  }
  std::error_code ec;
  s.shutdown(tcp::socket::shutdown_send, ec);
  s.close(ec);
}

awaitable<void> acceptLoop(tcp::acceptor& acc) {
  for (;;) {
    tcp::socket s = co_await acc.async_accept(use_awaitable);
    asio::co_spawn(acc.get_executor(), session(std::move(s)), asio::detached);
  }
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"echo: a tiny HTTP/1.1 origin for Trellis tests and demos", "echo"};
  std::string listen = "127.0.0.1:0", port_file, delay = "0", instance;
  double error_rate = 0;
  int error_status = 503;
  app.add_option("--listen", listen, "host:port to listen on (port 0 picks a free port)");
  app.add_option("--name", g.name, "service name reported in every answer");
  app.add_option("--instance-id", instance, "instance id reported (default name-port)");
  app.add_option("--delay", delay, "delay before every answer, e.g. 250ms");
  app.add_option("--error-rate", error_rate, "fraction of answers replaced by an error status")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--error-status", error_status, "status used for injected errors");
  app.add_option("--port-file", port_file, "write the bound port to this file once listening");
  CLI11_PARSE(app, argc, argv);

  auto d = trellis::parseDuration(delay);
  if (!d.ok()) {
    std::fprintf(stderr, "echo: --delay: %s\n", d.error().message().c_str());
    return 2;
  }
  g.delay_ns = d->count();
  g.error_rate = error_rate;
  g.error_status = error_status;

  size_t colon = listen.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "echo: --listen: expected host:port, got \"%s\"\n", listen.c_str());
    return 2;
  }
  asio::io_context io(1);
  std::error_code ec;
  auto addr = asio::ip::make_address(listen.substr(0, colon), ec);
  if (ec) {
    std::fprintf(stderr, "echo: --listen: bad address \"%s\"\n", listen.c_str());
    return 2;
  }
  tcp::acceptor acc(io);
  tcp::endpoint ep(addr, static_cast<unsigned short>(std::atoi(listen.c_str() + colon + 1)));
  acc.open(ep.protocol());
  acc.set_option(tcp::acceptor::reuse_address(true));
  acc.bind(ep, ec);
  if (ec) {
    std::fprintf(stderr, "echo: cannot listen on %s: %s\n", listen.c_str(), ec.message().c_str());
    return 1;
  }
  acc.listen(1024);
  unsigned port = acc.local_endpoint().port();
  g.instance = instance.empty() ? g.name + "-" + std::to_string(port) : instance;
  if (!port_file.empty()) {
    std::string tmp = port_file + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), port_file.c_str());
  }
  std::printf("echo %s listening on %s:%u\n", g.instance.c_str(),
              acc.local_endpoint().address().to_string().c_str(), port);
  std::fflush(stdout);

  asio::signal_set sigs(io, SIGINT, SIGTERM);
  sigs.async_wait([&](auto, int) { io.stop(); });
  std::signal(SIGPIPE, SIG_IGN);
  asio::co_spawn(io, acceptLoop(acc), asio::detached);
  io.run();
  return 0;
}
