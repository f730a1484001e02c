#include <chrono>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/dispatcher.h"
#include "base/time.h"
#include "control/mesh/server.h"
#include "registry/registry.h"
#include "registry/store/memory_store.h"

namespace trellis::control::mesh {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using registry::CheckStatus;

// A response writer that records what the server writes. `stuck` makes it look like a client
// that stopped reading (bytes stay buffered).
class FakeWriter : public http::ResponseWriter {
public:
  explicit FakeWriter(Dispatcher& d) : d_(d) {}

  bool send(uint16_t status, const http::HeaderMap&, std::string_view body) override {
    if (!open_ || started_ || done_)
      return false;
    status_ = status;
    body_ = std::string(body);
    done_ = true;
    return true;
  }
  bool startStream(uint16_t status, const http::HeaderMap&) override {
    if (!open_ || started_ || done_)
      return false;
    status_ = status;
    started_ = true;
    return true;
  }
  bool write(std::string_view data) override {
    if (!open_ || !started_ || done_)
      return false;
    ++writes_;
    max_write_ = std::max(max_write_, data.size());
    body_ += data;
    if (stuck)
      buffered_ += data.size();
    return true;
  }
  bool finish() override {
    if (!open_ || !started_ || done_)
      return false;
    done_ = true;
    return true;
  }
  bool isOpen() const override { return open_; }
  void onClosed(std::function<void()> cb) override { on_closed_ = std::move(cb); }
  size_t bufferedBytes() const override { return buffered_; }
  Dispatcher& dispatcher() override { return d_; }
  void onRequestBody(std::function<void(std::string_view, bool)> cb) override {
    on_body_ = std::move(cb);
  }
  // The client sends a piece of a streamed request body (end: the body ends).
  void clientSends(std::string_view piece, bool end = false) {
    if (on_body_)
      on_body_(piece, end);
  }

  void clientCloses() {
    open_ = false;
    if (!done_ && on_closed_)
      on_closed_();
  }
  // The lines received so far, parsed; consumes them.
  std::vector<json> messages() {
    std::vector<json> out;
    size_t nl;
    while ((nl = body_.find('\n', consumed_)) != std::string::npos) {
      out.push_back(json::parse(body_.substr(consumed_, nl - consumed_)));
      consumed_ = nl + 1;
    }
    return out;
  }

  bool stuck = false;
  size_t buffered_ = 0;
  uint16_t status_ = 0;
  std::string body_;
  size_t consumed_ = 0;
  bool started_ = false;
  bool done_ = false;
  bool open_ = true;
  size_t writes_ = 0;
  size_t max_write_ = 0;

private:
  Dispatcher& d_;
  std::function<void()> on_closed_;
  std::function<void(std::string_view, bool)> on_body_;
};

registry::RegisterRequest instance(const std::string& svc, const std::string& id, uint16_t port) {
  registry::RegisterRequest r;
  r.node.name = "n1";
  r.node.address = "10.0.0.1";
  registry::Service s;
  s.name = svc;
  s.id = id;
  s.port = port;
  r.service = s;
  registry::Check c;
  c.id = "check:" + id;
  c.name = c.id;
  c.service_id = id;
  c.status = CheckStatus::kPassing;
  r.checks.push_back(c);
  return r;
}

// A TrafficPolicy giving service orders 4 retries, as PUT /v1/mesh/resources takes it.
constexpr const char* kOrdersPolicy = R"(apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: orders}
spec:
  targetRef: {kind: Service, name: orders}
  retries: {attempts: 4}
)";

class MeshServerTest : public ::testing::Test {
protected:
  MeshServerTest() {
    EXPECT_TRUE(registry_.start().ok());
    submit(instance("orders", "orders-1", 9001));
  }

  MeshSettings settings() {
    MeshSettings s;
    s.heartbeat = 10s;
    s.coalesce = 2ms;
    return s;
  }
  json ordersCatchUpAfterTwoRemovals(size_t tombstones);
  void startServer(MeshSettings s) {
    server_ = std::make_unique<MeshServer>(loop_, registry_, metrics_, s);
    server_->start();
  }
  void submit(registry::WriteRequest r) {
    bool done = false;
    registry_.submit(std::move(r), [&](Result<registry::WriteResult> res) {
      EXPECT_TRUE(res.ok()) << res.error().message();
      done = true;
    });
    settle();
    ASSERT_TRUE(done);
  }
  // Runs everything ready now (registry commits, posted pumps), never waiting for time.
  void settle() {
    for (int i = 0; i < 100 && loop_.runReady() > 0; ++i) {
    }
  }
  void advance(Duration d) {
    time_.advance(d);
    settle();
  }
  std::shared_ptr<FakeWriter> request(http::Method m, const std::string& path,
                                      http::QueryParams q = {}, std::string body = "",
                                      bool body_streamed = false) {
    http::ServerRequest req;
    req.body_streamed = body_streamed;
    req.method = m;
    req.method_name = m == http::Method::kGet    ? "GET"
                      : m == http::Method::kPost ? "POST"
                      : m == http::Method::kPut  ? "PUT"
                                                 : "DELETE";
    req.path = "/v1/mesh/" + path;
    req.query_params = std::move(q);
    req.body = std::move(body);
    auto w = std::make_shared<FakeWriter>(loop_);
    server_->handle(req, w, path);
    settle();
    awaitResourceParses();
    return w;
  }
  // Hands a PUT /v1/mesh/resources to the server and returns at once: its parse runs off the
  // loop (awaitResourceParses() waits for it).
  std::shared_ptr<FakeWriter> startPut(std::string body) {
    http::ServerRequest req;
    req.method = http::Method::kPut;
    req.method_name = "PUT";
    req.path = "/v1/mesh/resources";
    req.body = std::move(body);
    auto w = std::make_shared<FakeWriter>(loop_);
    server_->handle(req, w, "resources");
    return w;
  }
  // A resource body is parsed on a thread of its own: runs the loop until its answer is back
  // (polled against a deadline, not slept for).
  void awaitResourceParses() {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (server_->resourceParses() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
      settle();
    }
    ASSERT_EQ(server_->resourceParses(), 0u) << "a resource body's parse never came back";
  }
  std::shared_ptr<FakeWriter> stream(const std::string& node) {
    return request(http::Method::kGet, "stream", {{"node", node}, {"service", "orders"}});
  }
  std::string ackBody(const std::string& node, const std::string& stream, uint64_t version,
                      bool accepted) {
    return json{{"node", node}, {"stream", stream}, {"version", version}, {"accepted", accepted}}
        .dump();
  }

  SimulatedTimeSource time_;
  Dispatcher loop_{"mesh-test", time_};
  registry::MemoryStore store_;
  registry::Registry registry_{loop_, store_};
  telemetry::Registry metrics_{telemetry::RegistryOptions{}};
  std::unique_ptr<MeshServer> server_;
};

TEST_F(MeshServerTest, StreamStartsWithSnapshotThenCoalescedDelta) {
  startServer(settings());
  auto w = stream("sidecar-1");
  EXPECT_EQ(w->status_, 200);
  auto msgs = w->messages();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0]["type"], "snapshot");
  EXPECT_EQ(msgs[0]["version"], registry_.catalog().index());
  EXPECT_EQ(msgs[0]["stream"].get<std::string>().size(), 16u);
  EXPECT_EQ(msgs[0]["services"]["orders"]["endpoints"][0],
            "10.0.0.1:9001"); // weight 1: the address
  json state = msgs[0]["services"];

  // The first change after a quiet period goes out at once, without waiting.
  submit(instance("orders", "orders-2", 9002));
  msgs = w->messages();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0]["services"]["orders"], json::parse(R"({"endpoints_added":["10.0.0.1:9002"]})"));
  for (const json& ep : msgs[0]["services"]["orders"]["endpoints_added"])
    state["orders"]["endpoints"].push_back(ep);
  // Two more within the coalescing window of that delta: one delta at the window's end
  // (2ms after the first), not before.
  advance(1ms);
  submit(instance("users", "users-1", 7001));
  advance(500us);
  submit(instance("orders", "orders-3", 9003));
  EXPECT_TRUE(w->messages().empty());
  advance(400us);
  EXPECT_TRUE(w->messages().empty());
  advance(100us);
  msgs = w->messages();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0]["type"], "delta");
  EXPECT_EQ(msgs[0]["version"], registry_.catalog().index());
  // orders existed: only its new endpoint (shorter than the list of three); users is new:
  // complete.
  EXPECT_EQ(msgs[0]["services"]["orders"], json::parse(R"({"endpoints_added":["10.0.0.1:9003"]})"));
  EXPECT_TRUE(msgs[0]["services"]["users"].contains("cluster"));
  EXPECT_EQ(msgs[0]["services"]["users"]["endpoints"].size(), 1u);
  // Applied to the snapshot (endpoints by address), the delta gives the server's state.
  state["users"] = msgs[0]["services"]["users"];
  for (const json& ep : msgs[0]["services"]["orders"]["endpoints_added"])
    state["orders"]["endpoints"].push_back(ep);
  json snap = json::parse(request(http::Method::kGet, "snapshot")->body_);
  EXPECT_EQ(state, snap["services"]);
  EXPECT_EQ(server_->stats().deltas_sent, 2u);
  advance(10ms);
  EXPECT_TRUE(w->messages().empty());
  // Quiet for longer than the window: the next change goes at once again.
  submit(instance("orders", "orders-4", 9004));
  EXPECT_EQ(w->messages().size(), 1u);
}

TEST_F(MeshServerTest, HeartbeatOnlyWhenIdle) {
  startServer(settings());
  auto w = stream("sidecar-1");
  w->messages();
  advance(9s);
  submit(instance("orders", "orders-2", 9002));
  advance(2ms);
  EXPECT_EQ(w->messages().size(), 1u); // the delta
  advance(1s);                         // 10s tick: something was sent 1s ago
  EXPECT_TRUE(w->messages().empty());
  advance(10s);
  auto msgs = w->messages();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0], json::parse(fmt::format(R"({{"type":"heartbeat","version":{}}})",
                                             registry_.catalog().index())));
}

// Acks are cumulative: a late ack of an older version (it travelled on another connection)
// is counted but does not take the stream's acked version back.
TEST_F(MeshServerTest, LateOlderAckDoesNotTakeTheStreamBack) {
  startServer(settings());
  auto w = stream("sidecar-1");
  auto snap = w->messages().at(0);
  const std::string id = snap["stream"];
  const uint64_t v1 = snap["version"];
  submit(instance("orders", "orders-2", 9002));
  advance(2ms);
  const uint64_t v2 = w->messages().at(0)["version"];
  ASSERT_GT(v2, v1);
  EXPECT_EQ(request(http::Method::kPost, "ack", {}, ackBody("sidecar-1", id, v2, true))->status_,
            200);
  EXPECT_EQ(request(http::Method::kPost, "ack", {}, ackBody("sidecar-1", id, v1, false))->status_,
            200);
  json list = json::parse(request(http::Method::kGet, "proxies")->body_);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["acked_version"], v2);
  EXPECT_EQ(list[0]["accepted"], true);
  EXPECT_FALSE(list[0].contains("last_error"));
  EXPECT_EQ(server_->stats().acks_accepted, 1u);
  EXPECT_EQ(server_->stats().acks_rejected, 1u);
}

TEST_F(MeshServerTest, AcksAreCheckedAndCounted) {
  startServer(settings());
  auto w = stream("sidecar-1");
  auto snap = w->messages().at(0);
  const std::string id = snap["stream"];
  const uint64_t v = snap["version"];

  auto ok = request(http::Method::kPost, "ack", {}, ackBody("sidecar-1", id, v, true));
  EXPECT_EQ(ok->status_, 200) << ok->body_;
  json rej = json::parse(ackBody("sidecar-1", id, v, false));
  rej["error"] = "clusters[0].endpoints[0].address: bad";
  auto r = request(http::Method::kPost, "ack", {}, rej.dump());
  EXPECT_EQ(r->status_, 200);
  EXPECT_EQ(server_->stats().acks_accepted, 1u);
  EXPECT_EQ(server_->stats().acks_rejected, 1u);

  auto proxies = request(http::Method::kGet, "proxies");
  json list = json::parse(proxies->body_);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["node"], "sidecar-1");
  EXPECT_EQ(list[0]["acked_version"], v);
  EXPECT_EQ(list[0]["accepted"], false);
  EXPECT_EQ(list[0]["rejected"], 1);
  EXPECT_EQ(list[0]["last_error"], "clusters[0].endpoints[0].address: bad");

  struct Case {
    std::string body;
    uint16_t status;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {"{", 400, "not valid JSON"},
           {"[]", 400, "expected a JSON object"},
           {R"({"stream":"x","version":1,"accepted":true})", 400, "node: required"},
           {R"({"node":1,"stream":"x","version":1,"accepted":true})", 400,
            "node: expected a string"},
           {json{{"node", "sidecar-1"}, {"stream", id}, {"version", -1}, {"accepted", true}}.dump(),
            400, "version: expected an unsigned integer"},
           {json{{"node", "sidecar-1"}, {"stream", id}, {"version", v}, {"accepted", "yes"}}.dump(),
            400, "accepted: expected true or false"},
           {json{{"node", "sidecar-1"},
                 {"stream", id},
                 {"version", v},
                 {"accepted", true},
                 {"applied_at_us", -5}}
                .dump(),
            400, "applied_at_us: expected unix time in microseconds, got -5"},
           {json{{"node", "sidecar-1"},
                 {"stream", id},
                 {"version", v},
                 {"accepted", true},
                 {"applied_at_us", "now"}}
                .dump(),
            400, "applied_at_us: expected unix time in microseconds, got \"now\""},
           {ackBody("sidecar-1", id, v + 1, true), 400, "was not sent on this stream"},
           {ackBody("sidecar-1", "0000000000000000", v, true), 404, "no stream"},
           {ackBody("other", id, v, true), 404, "no stream"},
       }) {
    auto res = request(http::Method::kPost, "ack", {}, c.body);
    EXPECT_EQ(res->status_, c.status) << c.body << " -> " << res->body_;
    EXPECT_NE(res->body_.find(c.says), std::string::npos) << res->body_;
  }
  EXPECT_EQ(server_->stats().acks_accepted, 1u);
}

// A stream opened with POST takes its acks as lines of its request body, in any pieces; a
// bad line is counted and ignored, an over-long one closes the stream.
TEST_F(MeshServerTest, AcksInTheStreamBodyAreRecordedLineByLine) {
  MeshSettings ms = settings();
  ms.max_ack_line_bytes = 64;
  startServer(ms);
  auto whole = request(http::Method::kPost, "stream", {{"node", "sidecar-1"}});
  EXPECT_EQ(whole->status_, 400); // a complete body: no acks could follow
  EXPECT_NE(whole->body_.find("chunked request body"), std::string::npos) << whole->body_;
  auto w = request(http::Method::kPost, "stream", {{"node", "sidecar-1"}, {"service", "orders"}},
                   "", true);
  ASSERT_EQ(w->status_, 200);
  const uint64_t v = w->messages().at(0)["version"];
  auto proxy = [&] {
    json list = json::parse(request(http::Method::kGet, "proxies")->body_);
    EXPECT_EQ(list.size(), 1u);
    return list.empty() ? json() : list[0];
  };
  EXPECT_TRUE(proxy()["acked_version"].is_null());

  const std::string line = json{{"version", v}, {"accepted", true}}.dump() + "\n";
  w->clientSends(line.substr(0, 5)); // a line split across pieces counts once it is whole
  EXPECT_EQ(server_->stats().acks_accepted, 0u);
  w->clientSends(line.substr(5) + "\r\n"); // an empty line is nothing
  EXPECT_EQ(server_->stats().acks_accepted, 1u);
  EXPECT_EQ(proxy()["acked_version"], v);
  EXPECT_EQ(proxy()["accepted"], true);

  w->clientSends(json{{"version", v}, {"accepted", false}, {"error", "bad route"}}.dump() + "\n");
  EXPECT_EQ(server_->stats().acks_rejected, 1u);
  EXPECT_EQ(proxy()["last_error"], "bad route");

  for (const std::string& bad : {std::string("{\n"), std::string("[]\n"),
                                 json{{"version", v + 1}, {"accepted", true}}.dump() + "\n",
                                 json{{"version", v}, {"accepted", 1}}.dump() + "\n"})
    w->clientSends(bad);
  EXPECT_EQ(server_->stats().ack_errors, 4u);
  EXPECT_EQ(server_->stats().acks_accepted, 1u);
  EXPECT_EQ(server_->streamCount(), 1u);
  EXPECT_TRUE(w->open_);

  // The proxy's own form of an accepted ack is read without a JSON tree and judged alike;
  // near misses go the general way.
  w->clientSends(fmt::format("{{\"version\":{},\"accepted\":true}}\n", v));
  EXPECT_EQ(server_->stats().acks_accepted, 2u);
  w->clientSends(fmt::format("{{\"version\":{},\"accepted\":true}}\n", v + 1)); // not sent
  w->clientSends("{\"version\":01,\"accepted\":true}\n");                       // not JSON
  w->clientSends("{\"version\":18446744073709551616,\"accepted\":true}\n");     // too large
  EXPECT_EQ(server_->stats().ack_errors, 7u);
  EXPECT_EQ(server_->stats().acks_accepted, 2u);

  // The body's end with a last line lacking its newline: still an ack.
  w->clientSends(json{{"version", v}, {"accepted", true}}.dump(), true);
  EXPECT_EQ(server_->stats().acks_accepted, 3u);
  EXPECT_EQ(proxy()["accepted"], true);

  // Past max_ack_line_bytes the stream ends (counted); the proxy reconnects.
  w->clientSends(std::string(65, ' '));
  EXPECT_EQ(server_->stats().ack_errors, 8u);
  EXPECT_EQ(server_->streamCount(), 0u);
  EXPECT_TRUE(w->done_);
}

// ?kind= and ?behind=V pick streams; with &wait=D the answer is held until no stream is
// behind V (an ack or a close ends it) or D passes, whichever is first.
TEST_F(MeshServerTest, ProxiesBehindAVersionAndWaitingForThem) {
  startServer(settings());
  auto a = stream("sidecar-1");
  auto g = request(http::Method::kGet, "stream", {{"node", "gw-1"}, {"kind", "gateway"},
                                                  {"gateway", "edge"}});
  const json snap = a->messages().at(0);
  const std::string a_id = snap["stream"];
  const uint64_t v = snap["version"];
  const std::string g_id = g->messages().at(0)["stream"];
  auto nodes = [&](http::QueryParams q) {
    auto r = request(http::Method::kGet, "proxies", std::move(q));
    EXPECT_EQ(r->status_, 200) << r->body_;
    std::vector<std::string> out;
    if (r->status_ == 200)
      for (const json& p : json::parse(r->body_))
        out.push_back(p["node"]);
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(nodes({{"kind", "gateway"}}), V{"gw-1"});
  EXPECT_EQ(nodes({{"kind", "sidecar"}}), V{"sidecar-1"});
  const std::string vs = std::to_string(v);
  EXPECT_EQ(nodes({{"behind", vs}}), (V{"gw-1", "sidecar-1"})); // none acked yet
  ASSERT_EQ(request(http::Method::kPost, "ack", {}, ackBody("sidecar-1", a_id, v, true))->status_,
            200);
  EXPECT_EQ(nodes({{"behind", vs}}), V{"gw-1"});
  EXPECT_EQ(nodes({{"behind", std::to_string(v + 1)}}), (V{"gw-1", "sidecar-1"}));

  // Held until the gateway acks v: then answered, with nobody behind.
  auto held = request(http::Method::kGet, "proxies",
                      {{"kind", "gateway"}, {"behind", vs}, {"wait", "5s"}});
  EXPECT_EQ(held->status_, 0);
  advance(4s);
  EXPECT_EQ(held->status_, 0);
  // A rejection is still behind.
  ASSERT_EQ(request(http::Method::kPost, "ack", {}, ackBody("gw-1", g_id, v, false))->status_, 200);
  EXPECT_EQ(held->status_, 0);
  ASSERT_EQ(request(http::Method::kPost, "ack", {}, ackBody("gw-1", g_id, v, true))->status_, 200);
  EXPECT_EQ(held->status_, 200);
  EXPECT_EQ(json::parse(held->body_), json::array());

  // Nobody behind: answered at once. Somebody behind past the wait: answered with them.
  auto now = request(http::Method::kGet, "proxies", {{"behind", vs}, {"wait", "5s"}});
  EXPECT_EQ(now->status_, 200);
  auto late = request(http::Method::kGet, "proxies", {{"behind", std::to_string(v + 1)},
                                                      {"wait", "5s"}, {"kind", "sidecar"}});
  EXPECT_EQ(late->status_, 0);
  advance(5s);
  ASSERT_EQ(late->status_, 200);
  EXPECT_EQ(json::parse(late->body_).at(0)["node"], "sidecar-1");

  // A stream that closes is behind no more.
  auto gone = request(http::Method::kGet, "proxies",
                      {{"behind", std::to_string(v + 1)}, {"wait", "1m"}, {"kind", "sidecar"}});
  EXPECT_EQ(gone->status_, 0);
  a->clientCloses();
  settle();
  EXPECT_EQ(gone->status_, 200);
  EXPECT_EQ(json::parse(gone->body_), json::array());

  for (const auto& [q, says] : std::vector<std::pair<http::QueryParams, std::string>>{
           {{{"kind", "mesh"}}, "kind: \"mesh\" is not sidecar or gateway"},
           {{{"behind", "-1"}}, "behind: \"-1\" is not a version"},
           {{{"behind", "7x"}}, "behind: \"7x\" is not a version"},
           {{{"behind", "1"}, {"wait", "soon"}}, "wait: \"soon\" is not a duration"},
           {{{"wait", "1s"}}, "wait: only with behind"},
           {{{"behnd", "1"}}, "unknown parameter \"behnd\""},
       }) {
    auto r = request(http::Method::kGet, "proxies", q);
    EXPECT_EQ(r->status_, 400);
    EXPECT_NE(r->body_.find(says), std::string::npos) << r->body_;
  }
}

TEST_F(MeshServerTest, ProxiesShowAckTimesAndRecentHistory) {
  MeshSettings s = settings();
  s.ack_history = 3;
  startServer(s);
  auto w = stream("sidecar-1");
  auto snap = w->messages().at(0);
  const std::string id = snap["stream"];
  std::vector<uint64_t> versions = {snap["version"].get<uint64_t>()};
  for (int i = 0; i < 3; ++i) {
    submit(instance("orders", fmt::format("orders-{}", i + 2), uint16_t(9002 + i)));
    advance(2ms);
    auto msgs = w->messages();
    ASSERT_EQ(msgs.size(), 1u);
    versions.push_back(msgs[0]["version"].get<uint64_t>());
  }
  const auto unixUs = [&] {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               time_.systemTime().time_since_epoch())
        .count();
  };
  // Each ack but the second says when the proxy applied it (3 ms before it arrives here).
  std::vector<int64_t> at, applied;
  for (size_t i = 0; i < versions.size(); ++i) {
    at.push_back(unixUs());
    applied.push_back(i == 1 ? 0 : at.back() - 3000);
    json body = json::parse(ackBody("sidecar-1", id, versions[i], i != 2)); // 3rd: rejection
    if (applied.back() != 0)
      body["applied_at_us"] = applied.back();
    auto r = request(http::Method::kPost, "ack", {}, body.dump());
    ASSERT_EQ(r->status_, 200) << r->body_;
    advance(5ms);
  }

  json plain = json::parse(request(http::Method::kGet, "proxies")->body_);
  ASSERT_EQ(plain.size(), 1u);
  EXPECT_EQ(plain[0]["acked_version"], versions.back());
  EXPECT_EQ(plain[0]["acked_at_us"], at.back());
  EXPECT_EQ(plain[0]["applied_at_us"], applied.back());
  EXPECT_FALSE(plain[0].contains("acks"));

  // Four acks, a history of three: the oldest is gone, the rest oldest first.
  json full = json::parse(request(http::Method::kGet, "proxies", {{"history", "true"}})->body_);
  const json& acks = full[0]["acks"];
  ASSERT_EQ(acks.size(), 3u) << acks;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(acks[i]["version"], versions[i + 1]);
    EXPECT_EQ(acks[i]["at_us"], at[i + 1]);
    EXPECT_EQ(acks[i]["accepted"], i + 1 != 2);
    if (applied[i + 1] != 0)
      EXPECT_EQ(acks[i]["applied_at_us"], applied[i + 1]);
    else
      EXPECT_FALSE(acks[i].contains("applied_at_us")) << acks[i];
  }

  auto bad = request(http::Method::kGet, "proxies", {{"history", "yes"}});
  EXPECT_EQ(bad->status_, 400);
  EXPECT_NE(bad->body_.find("history: \"yes\" is not true or false"), std::string::npos);
  bad = request(http::Method::kGet, "proxies", {{"node", "x"}});
  EXPECT_EQ(bad->status_, 400);
  EXPECT_NE(bad->body_.find("unknown parameter \"node\""), std::string::npos);

  // No ack yet: neither time nor history.
  auto w2 = stream("sidecar-2");
  full = json::parse(request(http::Method::kGet, "proxies", {{"history", "true"}})->body_);
  ASSERT_EQ(full.size(), 2u);
  EXPECT_TRUE(full[1]["acked_version"].is_null());
  EXPECT_FALSE(full[1].contains("acked_at_us"));
  EXPECT_EQ(full[1]["acks"], json::array());
}

TEST_F(MeshServerTest, BadStreamParametersGetPrecise400s) {
  startServer(settings());
  struct Case {
    http::QueryParams q;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {{}, "node: required"},
           {{{"node", ""}}, "node: \"\" is not"},
           {{{"node", "a b"}}, "node: \"a b\" is not"},
           {{{"node", std::string(129, 'a')}}, "is not 1..128"},
           {{{"node", "n"}, {"kind", "mesh"}}, "kind: \"mesh\" is not sidecar or gateway"},
           {{{"node", "n"}, {"kind", "gateway"}}, "gateway: required"},
           {{{"node", "n"}, {"kind", "gateway"}, {"gateway", "a/b"}}, "gateway: \"a/b\""},
           {{{"node", "n"}, {"servce", "x"}}, "unknown parameter \"servce\""},
       }) {
    auto w = request(http::Method::kGet, "stream", c.q);
    EXPECT_EQ(w->status_, 400);
    EXPECT_NE(w->body_.find(c.says), std::string::npos) << w->body_;
  }
  EXPECT_EQ(server_->streamCount(), 0u);
  auto m = request(http::Method::kPut, "stream", {{"node", "n"}});
  EXPECT_EQ(m->status_, 405);
  auto u = request(http::Method::kGet, "nope");
  EXPECT_EQ(u->status_, 404);
}

TEST_F(MeshServerTest, SameNodeReplacesItsStreamAndClosedStreamsGo) {
  startServer(settings());
  auto a = stream("sidecar-1");
  auto b = stream("sidecar-1");
  EXPECT_TRUE(a->done_); // the first stream was ended
  EXPECT_FALSE(b->done_);
  EXPECT_EQ(server_->streamCount(), 1u);
  EXPECT_EQ(server_->stats().streams_replaced, 1u);
  auto c = stream("sidecar-2");
  EXPECT_EQ(server_->streamCount(), 2u);
  c->clientCloses();
  EXPECT_EQ(server_->streamCount(), 1u);
  // A change reaches only the live stream.
  b->messages();
  submit(instance("orders", "orders-2", 9002));
  advance(2ms);
  EXPECT_EQ(b->messages().size(), 1u);
  EXPECT_EQ(c->messages().size(), 1u); // only its snapshot
}

TEST_F(MeshServerTest, WritesAreChunkedAndWaitForTheConnection) {
  MeshSettings s = settings();
  s.write_chunk_bytes = 64;
  startServer(s);
  for (int i = 0; i < 20; ++i)
    submit(instance("svc" + std::to_string(i), "i" + std::to_string(i), uint16_t(3000 + i)));
  advance(2ms);
  auto w = stream("sidecar-1");
  EXPECT_LE(w->max_write_, 64u);
  EXPECT_GT(w->writes_, 10u);
  auto msgs = w->messages();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0]["services"].size(), 21u);

  // A client that does not read: only one chunk is handed over until it does.
  w->stuck = true;
  const size_t writes = w->writes_;
  submit(instance("orders", "orders-2", 9002));
  advance(2ms);
  advance(5ms);
  EXPECT_EQ(w->writes_, writes + 1);
  w->stuck = false;
  w->buffered_ = 0;
  advance(1ms);
  advance(1ms);
  msgs = w->messages();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0]["type"], "delta");
}

TEST_F(MeshServerTest, BusyStreamGetsOneCatchUpDeltaInsteadOfEvery) {
  MeshSettings s = settings();
  s.write_chunk_bytes = 16;
  startServer(s);
  auto w = stream("sidecar-1");
  json state = w->messages().at(0);
  w->stuck = true;
  // The first delta is queued (one chunk handed over); the next 29 are not queued at all.
  for (int i = 0; i < 30; ++i) {
    submit(instance("svc" + std::to_string(i), "i" + std::to_string(i), uint16_t(3000 + i)));
    advance(2ms);
  }
  EXPECT_EQ(server_->stats().deltas_sent, 1u);
  json list = json::parse(request(http::Method::kGet, "proxies")->body_);
  EXPECT_LT(list[0]["queued_bytes"].get<size_t>(), 2000u) << list;
  const uint64_t first = list[0]["sent_version"];

  w->stuck = false;
  w->buffered_ = 0;
  for (int i = 0; i < 200; ++i)
    advance(1ms);
  auto msgs = w->messages();
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0]["version"], first);
  EXPECT_EQ(msgs[0]["services"].size(), 1u);
  EXPECT_EQ(msgs[1]["type"], "delta");
  EXPECT_EQ(msgs[1]["version"], registry_.catalog().index());
  EXPECT_EQ(msgs[1]["services"].size(), 29u);
  EXPECT_EQ(server_->stats().catchups_sent, 1u);
  // Applied in order, they give the current snapshot.
  for (const json& d : msgs) {
    for (auto& [name, fields] : d["services"].items())
      for (auto& [k, v] : fields.items())
        state["services"][name][k] = v;
    state["version"] = d["version"];
  }
  json snap = json::parse(request(http::Method::kGet, "snapshot")->body_);
  EXPECT_EQ(state["services"], snap["services"]);
  EXPECT_EQ(state["version"], snap["version"]);
  list = json::parse(request(http::Method::kGet, "proxies")->body_);
  EXPECT_EQ(list[0]["sent_version"], snap["version"]);
}

// Pacing (MeshSettings::max_ack_wait): once a stream's client acks, the next delta waits for
// the ack of the last one sent; what changed meanwhile follows as one catch-up delta. A
// client that never acks (curl) gets every delta; one that stops acking gets the catch-up
// after max_ack_wait.
TEST_F(MeshServerTest, AckingStreamIsPacedByItsAcks) {
  MeshSettings ms = settings();
  ms.max_ack_wait = 500ms;
  startServer(ms);
  auto p = request(http::Method::kPost, "stream", {{"node", "sidecar-1"}, {"service", "orders"}},
                   "", true);
  auto curl = stream("curl-1");
  json state = p->messages().at(0);
  curl->messages();
  auto acks = [&](uint64_t v) {
    p->clientSends(fmt::format("{{\"version\":{},\"accepted\":true}}\n", v));
    settle();
  };
  auto change = [&](int i) {
    submit(instance("svc" + std::to_string(i), "i" + std::to_string(i), uint16_t(3000 + i)));
    advance(2ms);
  };
  auto apply = [&](const json& d) {
    for (auto& [name, fields] : d["services"].items())
      for (auto& [k, v] : fields.items())
        state["services"][name][k] = v;
    state["version"] = d["version"];
  };
  // Before its first ack the stream is not paced.
  change(0);
  change(1);
  auto msgs = p->messages();
  ASSERT_EQ(msgs.size(), 2u);
  apply(msgs[0]);
  apply(msgs[1]);
  EXPECT_EQ(server_->stats().deltas_held, 0u);

  // Acked: the next delta goes at once; the two after it wait for its ack.
  acks(msgs[1]["version"]);
  change(2);
  msgs = p->messages();
  ASSERT_EQ(msgs.size(), 1u);
  const uint64_t sent = msgs[0]["version"];
  apply(msgs[0]);
  change(3);
  change(4);
  EXPECT_TRUE(p->messages().empty());
  EXPECT_EQ(server_->stats().deltas_held, 2u);
  EXPECT_EQ(curl->messages().size(), 5u); // never acks: every delta
  acks(sent - 1);                         // an older version: still waiting
  EXPECT_TRUE(p->messages().empty());
  acks(sent);
  msgs = p->messages();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0]["services"].size(), 2u); // svc3 and svc4 in one catch-up
  EXPECT_EQ(msgs[0]["version"], registry_.catalog().index());
  apply(msgs[0]);
  EXPECT_EQ(server_->stats().catchups_sent, 1u);

  // No ack for max_ack_wait: the held change goes anyway.
  change(5);
  EXPECT_TRUE(p->messages().empty());
  advance(400ms);
  EXPECT_TRUE(p->messages().empty());
  advance(100ms);
  msgs = p->messages();
  ASSERT_EQ(msgs.size(), 1u);
  apply(msgs[0]);
  // A rejection is an answer too.
  change(6);
  p->clientSends(json{{"version", state["version"]}, {"accepted", false}, {"error", "no"}}.dump() +
                 "\n");
  settle();
  msgs = p->messages();
  ASSERT_EQ(msgs.size(), 1u);
  apply(msgs[0]);

  // What the paced stream got, applied in order, is the current state.
  json snap = json::parse(request(http::Method::kGet, "snapshot")->body_);
  EXPECT_EQ(state["services"], snap["services"]);
  EXPECT_EQ(state["version"], snap["version"]);

  // Pacing off: every delta at once.
  server_.reset();
  ms.max_ack_wait = Duration::zero();
  startServer(ms);
  auto q = request(http::Method::kPost, "stream", {{"node", "sidecar-2"}, {"service", "orders"}},
                   "", true);
  const uint64_t v = q->messages().at(0)["version"];
  q->clientSends(fmt::format("{{\"version\":{},\"accepted\":true}}\n", v));
  change(7);
  change(8);
  EXPECT_EQ(q->messages().size(), 2u);
  EXPECT_EQ(server_->stats().deltas_held, 0u);
}

TEST_F(MeshServerTest, LaggingStreamIsClosed) {
  MeshSettings s = settings();
  s.write_chunk_bytes = 16;
  s.max_stream_backlog_bytes = 2000;
  startServer(s);
  auto w = stream("sidecar-1");
  w->stuck = true;
  for (int i = 0; i < 30; ++i) {
    submit(instance("svc" + std::to_string(i), "i" + std::to_string(i), uint16_t(3000 + i)));
    advance(2ms);
  }
  EXPECT_FALSE(w->done_); // only the first delta is queued, under the limit
  // Once it has taken that one, the catch-up delta (29 services) is over the limit.
  w->stuck = false;
  w->buffered_ = 0;
  for (int i = 0; i < 400 && !w->done_; ++i)
    advance(1ms);
  EXPECT_TRUE(w->done_);
  EXPECT_EQ(server_->streamCount(), 0u);
  EXPECT_EQ(server_->stats().streams_lagging, 1u);
  // It reconnects and starts again from a snapshot.
  auto again = stream("sidecar-1");
  auto msgs = again->messages();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0]["type"], "snapshot");
  EXPECT_EQ(msgs[0]["version"], registry_.catalog().index());
}

// --mesh-endpoint-tombstones bounds the removed addresses a service remembers: a catch-up
// from before the ones it forgot carries the service's complete list instead.
json MeshServerTest::ordersCatchUpAfterTwoRemovals(size_t tombstones) {
  MeshSettings s = settings();
  s.endpoint_tombstones = tombstones;
  startServer(s);
  for (int i = 2; i <= 6; ++i)
    submit(instance("orders", fmt::format("orders-{}", i), uint16_t(9000 + i)));
  advance(2ms);
  const uint64_t base = server_->compiler().version();
  for (int i = 2; i <= 3; ++i) // two removals since `base`; four instances remain
    submit(registry::DeregisterRequest{"n1", fmt::format("orders-{}", i), ""});
  advance(2ms);
  auto delta = server_->compiler().deltaSince(base);
  EXPECT_TRUE(delta);
  return delta ? json::parse(*delta)["services"]["orders"] : json();
}

// With no stream connected, changes are compiled as they come all the same (each one costs
// only its instances' endpoints), so what is read is current and a new stream starts from it.
TEST_F(MeshServerTest, ChangesWithNoStreamAreCompiledAsTheyCome) {
  startServer(settings());
  const uint64_t v0 = server_->compiler().version();
  submit(instance("orders", "orders-2", 9002));
  advance(2ms);
  EXPECT_GT(server_->compiler().version(), v0);
  EXPECT_FALSE(server_->compiler().dirty());
  json snap = json::parse(request(http::Method::kGet, "snapshot")->body_);
  EXPECT_GT(snap["version"].get<uint64_t>(), v0);
  EXPECT_NE(snap["services"]["orders"]["endpoints"].dump().find("10.0.0.1:9002"), std::string::npos)
      << snap["services"]["orders"];
  // A stream opened after more changes starts from a snapshot that has them.
  submit(instance("orders", "orders-3", 9003));
  advance(2ms);
  auto w = stream("sidecar-1");
  auto msgs = w->messages();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_NE(msgs[0]["services"]["orders"]["endpoints"].dump().find("10.0.0.1:9003"),
            std::string::npos);
  // With a stream, a change is compiled and sent at once, as before.
  submit(instance("orders", "orders-4", 9004));
  advance(2ms);
  msgs = w->messages();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0]["type"], "delta");
}

TEST_F(MeshServerTest, EndpointTombstonesWithinTheBoundNameTheRemovals) {
  const json orders = ordersCatchUpAfterTwoRemovals(8);
  EXPECT_EQ(orders, json::parse(R"({"endpoints_removed":["10.0.0.1:9002","10.0.0.1:9003"]})"));
}

TEST_F(MeshServerTest, EndpointTombstonesPastTheBoundSendTheFullList) {
  const json orders = ordersCatchUpAfterTwoRemovals(1);
  EXPECT_FALSE(orders.contains("endpoints_removed")) << orders.dump();
  EXPECT_EQ(orders["endpoints"], json::parse(R"(["10.0.0.1:9001","10.0.0.1:9004",
                                                  "10.0.0.1:9005","10.0.0.1:9006"])"));
}

// A server stopped while a body is being parsed drops its result: nothing is stored and the
// writer is never answered (its connection closes with the server).
TEST_F(MeshServerTest, ResourceParseInFlightAtStopIsDropped) {
  startServer(settings());
  auto put = startPut(kOrdersPolicy);
  EXPECT_EQ(server_->resourceParses(), 1u);
  server_->stop(); // joins the parse thread: its result is queued on the loop, or never made
  EXPECT_EQ(server_->resourceParses(), 0u);
  settle();
  EXPECT_EQ(put->status_, 0);
  EXPECT_FALSE(registry_.catalog().kvGet("trellis/resources/TrafficPolicy/default/orders").value);
}

TEST_F(MeshServerTest, ResourcesPutGetDelete) {
  startServer(settings());
  auto w = stream("sidecar-1");
  w->messages();
  const std::string yaml = kOrdersPolicy;
  // The body is parsed off the loop: the handler returns at once, the loop answers others
  // meanwhile, and the answer comes once the parse is back.
  auto put = startPut(yaml);
  EXPECT_EQ(server_->resourceParses(), 1u);
  EXPECT_EQ(put->status_, 0) << "answered before its parse came back to the loop";
  EXPECT_EQ(request(http::Method::kGet, "snapshot")->status_, 200);
  awaitResourceParses();
  ASSERT_EQ(put->status_, 200) << put->body_;
  EXPECT_TRUE(registry_.catalog().kvGet("trellis/resources/TrafficPolicy/default/orders").value);
  json res = json::parse(put->body_);
  EXPECT_EQ(res["applied"][0]["result"], "created");
  advance(2ms);
  auto msgs = w->messages();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0]["services"]["orders"]["routes"][0]["retries"]["attempts"], 4);

  auto again = request(http::Method::kPut, "resources", {}, yaml);
  EXPECT_EQ(json::parse(again->body_)["applied"][0]["result"], "unchanged");

  auto one = request(http::Method::kGet, "resources/TrafficPolicy/orders");
  ASSERT_EQ(one->status_, 200);
  EXPECT_EQ(json::parse(one->body_)["spec"]["retries"]["attempts"], 4);
  auto list = request(http::Method::kGet, "resources/trafficpolicies");
  EXPECT_EQ(json::parse(list->body_).size(), 1u);
  auto none = request(http::Method::kGet, "resources/HTTPRoute");
  EXPECT_EQ(json::parse(none->body_).size(), 0u);
  auto other_ns = request(http::Method::kGet, "resources", {{"namespace", "shop"}});
  EXPECT_EQ(json::parse(other_ns->body_).size(), 0u);

  // All or nothing: the second document is invalid, so neither is stored.
  auto bad = request(http::Method::kPut, "resources", {},
                     yaml + "---\n" + R"(apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: users}
spec:
  targetRef: {kind: Service, name: users}
  retries: {attempts: 99}
)");
  EXPECT_EQ(bad->status_, 400);
  EXPECT_NE(bad->body_.find("document 2"), std::string::npos) << bad->body_;
  EXPECT_NE(bad->body_.find("spec.retries.attempts"), std::string::npos) << bad->body_;
  EXPECT_EQ(request(http::Method::kGet, "resources/TrafficPolicy/users")->status_, 404);

  EXPECT_EQ(request(http::Method::kGet, "resources/Gateway")->status_, 400);
  EXPECT_EQ(request(http::Method::kGet, "resources/Service/Bad_Name")->status_, 400);
  EXPECT_EQ(request(http::Method::kPut, "resources", {}, "")->status_, 400);

  auto del = request(http::Method::kDelete, "resources/TrafficPolicy/orders");
  EXPECT_EQ(del->status_, 200) << del->body_;
  advance(2ms);
  msgs = w->messages();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0]["services"]["orders"]["routes"][0]["retries"]["attempts"], 1);
  EXPECT_EQ(request(http::Method::kDelete, "resources/TrafficPolicy/orders")->status_, 404);
}

} // namespace
} // namespace trellis::control::mesh
