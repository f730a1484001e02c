#include "control/prober.h"

#include <asio/ip/tcp.hpp>
#include <fmt/format.h>

#include "net/address.h"

namespace trellis::control {

namespace {

using registry::ProbeResult;

// A probe whose completion is cancelled by clearing a shared flag.
struct ProbeState {
  bool cancelled = false;
};

class HttpProbe : public registry::ProbeHandle {
public:
  HttpProbe(http::RequestHandle h, std::shared_ptr<ProbeState> st)
      : handle_(std::move(h)), st_(std::move(st)) {}
  ~HttpProbe() override {
    st_->cancelled = true;
    handle_.cancel();
  }

private:
  http::RequestHandle handle_;
  std::shared_ptr<ProbeState> st_;
};

struct TcpState : ProbeState {
  explicit TcpState(asio::io_context& io) : socket(io) {}
  asio::ip::tcp::socket socket;
};

class TcpProbe : public registry::ProbeHandle {
public:
  explicit TcpProbe(std::shared_ptr<TcpState> st) : st_(std::move(st)) {}
  ~TcpProbe() override {
    st_->cancelled = true;
    asio::error_code ec;
    st_->socket.close(ec);
  }

private:
  std::shared_ptr<TcpState> st_;
};

class NoopProbe : public registry::ProbeHandle {
public:
  explicit NoopProbe(std::shared_ptr<ProbeState> st) : st_(std::move(st)) {}
  ~NoopProbe() override { st_->cancelled = true; }

private:
  std::shared_ptr<ProbeState> st_;
};

struct ParsedUrl {
  net::SocketAddress address;
  std::string host; // for the Host header
  std::string target;
};

Result<ParsedUrl> parseHttpUrl(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  if (url.substr(0, kScheme.size()) != kScheme)
    return makeError(ErrorCode::kInvalidArgument,
                     "only http:// check URLs are supported, got \"{}\"", url);
  std::string_view rest = url.substr(kScheme.size());
  size_t slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  std::string target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (!target.empty() && target[0] == '?')
    target = "/" + target;
  std::string hostport(authority);
  bool has_port = false;
  if (!hostport.empty() && hostport[0] == '[')
    has_port = hostport.find("]:") != std::string::npos;
  else
    has_port = hostport.find(':') != std::string::npos;
  if (!has_port)
    hostport += ":80";
  auto addr = net::parseSocketAddress(hostport);
  if (!addr)
    return addr.error();
  return ParsedUrl{*addr, std::string(authority), std::move(target)};
}

} // namespace

CheckProberImpl::CheckProberImpl(Dispatcher& loop) : loop_(loop), client_(loop) {}
CheckProberImpl::~CheckProberImpl() = default;

std::unique_ptr<registry::ProbeHandle> CheckProberImpl::probe(const registry::ProbeTarget& target,
                                                              registry::ProbeCallback done) {
  if (target.type == registry::CheckType::kTcp)
    return probeTcp(target, std::move(done));
  return probeHttp(target, std::move(done));
}

std::unique_ptr<registry::ProbeHandle> CheckProberImpl::failLater(std::string output,
                                                                  registry::ProbeCallback done) {
  auto st = std::make_shared<ProbeState>();
  loop_.post([st, done = std::move(done), output = std::move(output)] {
    if (st->cancelled)
      return;
    ProbeResult r;
    r.outcome = ProbeResult::Outcome::kFailed;
    r.output = output;
    done(std::move(r));
  });
  return std::make_unique<NoopProbe>(st);
}

std::unique_ptr<registry::ProbeHandle>
CheckProberImpl::probeHttp(const registry::ProbeTarget& target, registry::ProbeCallback done) {
  auto url = parseHttpUrl(target.url);
  if (!url)
    return failLater(url.error().message(), std::move(done));
  http::ClientRequest req;
  req.method = target.method.empty() ? "GET" : target.method;
  req.target = url->target;
  req.headers.add("Host", url->host);
  req.headers.add("User-Agent", "Trellis Health Check");
  for (const auto& [name, values] : target.header)
    for (const auto& v : values)
      req.headers.add(name, v);
  http::RequestOptions opts;
  if (target.timeout.count() > 0) {
    opts.timeout = target.timeout;
    opts.connect_timeout = std::min<Duration>(opts.connect_timeout, target.timeout);
  }
  opts.max_response_body_bytes = 1024 * 1024;
  auto st = std::make_shared<ProbeState>();
  auto handle = client_.request(
      url->address, std::move(req), opts,
      [st, done = std::move(done)](Result<http::ClientResponse> rsp) {
        if (st->cancelled)
          return;
        ProbeResult r;
        if (rsp) {
          r.outcome = ProbeResult::Outcome::kHttpResponse;
          r.http_status = rsp->status;
          r.output = rsp->body.substr(0, kMaxOutputBytes);
        } else {
          r.outcome = ProbeResult::Outcome::kFailed;
          r.output = rsp.error().message();
        }
        done(std::move(r));
      });
  return std::make_unique<HttpProbe>(std::move(handle), st);
}

std::unique_ptr<registry::ProbeHandle>
CheckProberImpl::probeTcp(const registry::ProbeTarget& target, registry::ProbeCallback done) {
  auto addr = net::parseSocketAddress(target.address);
  if (!addr)
    return failLater(addr.error().message(), std::move(done));
  auto st = std::make_shared<TcpState>(loop_.io());
  st->socket.async_connect(addr->tcp(), [st, done = std::move(done),
                                         text = target.address](const asio::error_code& ec) {
    if (st->cancelled)
      return;
    ProbeResult r;
    if (!ec) {
      r.outcome = ProbeResult::Outcome::kConnected;
      r.output = fmt::format("TCP connect {}: Success", text);
    } else {
      r.outcome = ProbeResult::Outcome::kFailed;
      r.output = fmt::format("dial tcp {}: {}", text, ec.message());
    }
    asio::error_code ignored;
    st->socket.close(ignored);
    done(std::move(r));
  });
  return std::make_unique<TcpProbe>(st);
}

} // namespace trellis::control
