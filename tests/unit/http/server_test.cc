#include "http/server.h"

#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include <asio/read.hpp>

#include "http/client.h"
#include "http/test_util.h"

namespace trellis::http {
namespace {

using testing::drain;
using testing::loopback;
using testing::pumpUntil;
using testing::RawConn;
using namespace std::chrono_literals;

// A server on a real-time dispatcher driven by the test thread, plus a client on the same
// loop.
class ServerTest : public ::testing::Test {
protected:
  void startServer(ServerSettings settings = {}) {
    server_ = std::make_unique<Server>(d_, settings, [this](ServerRequest& r, auto w) {
      ++handled_;
      handler_(r, std::move(w));
    });
    ASSERT_TRUE(server_->listen(loopback()).ok());
    ASSERT_NE(server_->boundAddress().port, 0);
  }

  // Issues a request and pumps until it is answered.
  Result<ClientResponse> roundTrip(ClientRequest req, RequestOptions opts = {}) {
    std::optional<Result<ClientResponse>> out;
    client_.request(server_->boundAddress(), std::move(req), opts,
                    [&](Result<ClientResponse> r) { out.emplace(std::move(r)); });
    EXPECT_TRUE(pumpUntil(d_, [&] { return out.has_value(); }));
    if (!out)
      return Error(ErrorCode::kInternal, "no answer");
    return std::move(*out);
  }

  RealTimeSource time_;
  Dispatcher d_{"test", time_};
  Client client_{d_};
  std::unique_ptr<Server> server_;
  int handled_ = 0;
  std::function<void(ServerRequest&, std::shared_ptr<ResponseWriter>)> handler_ =
      [](ServerRequest& r, std::shared_ptr<ResponseWriter> w) {
        HeaderMap h{{"Content-Type", "text/plain"}};
        w->send(200, h, r.method_name + " " + r.path + " " + r.body);
      };
};

TEST_F(ServerTest, RoundTripWithRequestDetails) {
  ServerRequest seen;
  handler_ = [&](ServerRequest& r, std::shared_ptr<ResponseWriter> w) {
    seen = r;
    HeaderMap h{{"X-Echo", std::string(r.header("x-in").value_or("none"))}};
    w->send(201, h, "body:" + r.body);
  };
  startServer();
  ClientRequest req;
  req.method = "PUT";
  req.target = "/v1/kv/a%2Fb?recurse&index=42&x=a+b%26c";
  req.headers.add("X-In", "hello");
  req.body = "payload";
  auto rsp = roundTrip(req);
  ASSERT_TRUE(rsp.ok()) << rsp.error().message();
  EXPECT_EQ(rsp->status, 201);
  EXPECT_EQ(rsp->reason, "Created");
  EXPECT_EQ(rsp->body, "body:payload");
  EXPECT_EQ(rsp->headers.get("X-Echo").value_or(""), "hello");
  EXPECT_EQ(rsp->headers.get("Content-Length").value_or(""), "12");

  EXPECT_EQ(seen.method, Method::kPut);
  EXPECT_EQ(seen.method_name, "PUT");
  EXPECT_EQ(seen.path, "/v1/kv/a/b");
  EXPECT_EQ(seen.raw_query, "recurse&index=42&x=a+b%26c");
  EXPECT_TRUE(seen.hasQuery("recurse"));
  EXPECT_EQ(seen.query("recurse").value_or("?"), "");
  EXPECT_EQ(seen.query("index").value_or(""), "42");
  EXPECT_EQ(seen.query("x").value_or(""), "a b&c");
  EXPECT_FALSE(seen.hasQuery("missing"));
  EXPECT_EQ(seen.body, "payload");
  EXPECT_EQ(seen.peer.ip, loopback().ip);
  EXPECT_NE(seen.peer.port, 0);
  EXPECT_EQ(server_->stats().requests, 1u);
}

TEST_F(ServerTest, AsyncDelayedResponse) {
  std::shared_ptr<ResponseWriter> held;
  handler_ = [&](ServerRequest&, std::shared_ptr<ResponseWriter> w) { held = std::move(w); };
  startServer();
  std::optional<Result<ClientResponse>> out;
  ClientRequest req;
  req.target = "/v1/catalog/services?index=7&wait=5m";
  client_.request(server_->boundAddress(), req, {},
                  [&](Result<ClientResponse> r) { out.emplace(std::move(r)); });
  ASSERT_TRUE(pumpUntil(d_, [&] { return held != nullptr; }));
  drain(d_);
  EXPECT_FALSE(out.has_value()); // held: no answer yet
  EXPECT_TRUE(held->isOpen());
  EXPECT_TRUE(held->send(200, {}, "changed"));
  EXPECT_FALSE(held->send(200, {}, "twice")); // one response per request
  ASSERT_TRUE(pumpUntil(d_, [&] { return out.has_value(); }));
  ASSERT_TRUE(out->ok());
  EXPECT_EQ((*out)->body, "changed");
}

TEST_F(ServerTest, WriterLearnsWhenClientGoesAway) {
  std::shared_ptr<ResponseWriter> held;
  bool closed = false;
  handler_ = [&](ServerRequest&, std::shared_ptr<ResponseWriter> w) {
    w->onClosed([&closed] { closed = true; });
    held = std::move(w);
  };
  startServer();
  RawConn c(d_, server_->boundAddress());
  c.send("GET /watch HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return held != nullptr; }));
  EXPECT_TRUE(held->isOpen());
  c.close();
  ASSERT_TRUE(pumpUntil(d_, [&] { return closed; }));
  EXPECT_FALSE(held->isOpen());
  EXPECT_FALSE(held->send(200, {}, "late"));
  EXPECT_EQ(server_->connectionCount(), 0u);
  // Registering after the fact runs the callback at once.
  bool late = false;
  held->onClosed([&] { late = true; });
  EXPECT_TRUE(late);
}

TEST_F(ServerTest, StreamingResponseReadByStreamingClient) {
  std::shared_ptr<ResponseWriter> stream;
  handler_ = [&](ServerRequest&, std::shared_ptr<ResponseWriter> w) {
    HeaderMap h{{"Content-Type", "application/json"}};
    EXPECT_TRUE(w->startStream(200, h));
    stream = std::move(w);
  };
  startServer();
  std::optional<ClientResponseHead> head;
  std::vector<std::string> pieces;
  std::optional<Status> done;
  Client::StreamCallbacks cbs;
  cbs.on_head = [&](const ClientResponseHead& h) { head = h; };
  cbs.on_body = [&](std::string_view p) { pieces.emplace_back(p); };
  cbs.on_done = [&](Status s) { done = s; };
  RequestOptions opts;
  opts.timeout = Duration::zero();
  ClientRequest req;
  req.target = "/v1/trellis/watch";
  client_.stream(server_->boundAddress(), req, opts, cbs);
  ASSERT_TRUE(pumpUntil(d_, [&] { return head.has_value(); }));
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->headers.get("Transfer-Encoding").value_or(""), "chunked");
  // Each piece reaches the client while the response is still open.
  for (std::string ev : {"{\"event\":1}\n", "{\"event\":2}\n", "{\"event\":3}\n"}) {
    EXPECT_TRUE(stream->write(ev));
    ASSERT_TRUE(pumpUntil(d_, [&] { return !pieces.empty() && pieces.back() == ev; }));
    EXPECT_FALSE(done.has_value());
  }
  EXPECT_TRUE(stream->finish());
  ASSERT_TRUE(pumpUntil(d_, [&] { return done.has_value(); }));
  EXPECT_TRUE(done->ok());
  EXPECT_EQ(pieces.size(), 3u);
}

// A write the kernel can take goes out before the writer returns: nothing stays buffered
// for a loop turn (the mesh hands a stream its next piece only once the last is gone), and
// the client has every byte without the server's loop running again.
TEST_F(ServerTest, StreamWriteLeavesNothingBufferedWhenTheSocketTakesIt) {
  std::shared_ptr<ResponseWriter> stream;
  handler_ = [&](ServerRequest&, std::shared_ptr<ResponseWriter> w) {
    w->startStream(200, {});
    stream = std::move(w);
  };
  startServer();
  asio::ip::tcp::socket sock(d_.io());
  sock.connect(server_->boundAddress().tcp());
  asio::write(sock, asio::buffer(std::string("GET / HTTP/1.1\r\nHost: a\r\n\r\n")));
  ASSERT_TRUE(pumpUntil(d_, [&] { return stream != nullptr; }));
  ASSERT_EQ(stream->bufferedBytes(), 0u);
  std::string expected;
  for (int i = 0; i < 3; ++i) {
    const std::string piece(6000 + i, static_cast<char>('a' + i));
    ASSERT_TRUE(stream->write(piece));
    EXPECT_EQ(stream->bufferedBytes(), 0u) << i;
    expected += fmt::format("{:x}\r\n{}\r\n", piece.size(), piece);
  }
  // The head, then the three chunks, all in the client's socket already.
  std::string got;
  char buf[65536];
  while (got.find(expected) == std::string::npos) {
    asio::error_code ec;
    const size_t n = sock.read_some(asio::buffer(buf), ec);
    ASSERT_FALSE(ec) << ec.message() << " after " << got.size() << " bytes";
    got.append(buf, n);
  }
  EXPECT_TRUE(got.starts_with("HTTP/1.1 200"));
}

TEST_F(ServerTest, StreamCancelledByClientClosesWriter) {
  std::shared_ptr<ResponseWriter> stream;
  bool closed = false;
  handler_ = [&](ServerRequest&, std::shared_ptr<ResponseWriter> w) {
    w->startStream(200, {});
    w->onClosed([&] { closed = true; });
    stream = std::move(w);
  };
  startServer();
  bool head = false, called_done = false;
  Client::StreamCallbacks cbs;
  cbs.on_head = [&](const ClientResponseHead&) { head = true; };
  cbs.on_done = [&](Status) { called_done = true; };
  RequestOptions opts;
  opts.timeout = Duration::zero();
  RequestHandle h = client_.stream(server_->boundAddress(), {}, opts, cbs);
  ASSERT_TRUE(pumpUntil(d_, [&] { return head; }));
  EXPECT_TRUE(h.active());
  h.cancel();
  EXPECT_FALSE(h.active());
  ASSERT_TRUE(pumpUntil(d_, [&] { return closed; }));
  EXPECT_FALSE(stream->write("more"));
  drain(d_);
  EXPECT_FALSE(called_done); // cancelled requests do not call back
}

// A request the settings pick is handed over at its head; its chunked body comes piece by
// piece while the response streams the other way, past max_request_body_bytes. The client
// side is an open body (RequestOptions::open_body), written after the head is answered.
TEST_F(ServerTest, StreamedRequestBodyBesideAStreamingResponse) {
  ServerSettings s;
  s.max_request_body_bytes = 16;
  s.streams_request_body = [](const ServerRequest& r) { return r.path == "/up"; };
  std::shared_ptr<ResponseWriter> stream;
  std::string got;
  bool ended = false;
  handler_ = [&](ServerRequest& r, std::shared_ptr<ResponseWriter> w) {
    if (r.path != "/up") {
      EXPECT_FALSE(r.body_streamed);
      w->send(200, {}, r.body);
      return;
    }
    EXPECT_TRUE(r.body_streamed);
    EXPECT_TRUE(r.body.empty());
    w->onRequestBody([&](std::string_view piece, bool end) {
      got.append(piece);
      ended = ended || end;
    });
    EXPECT_TRUE(w->startStream(200, {}));
    stream = std::move(w);
  };
  startServer(s);
  std::optional<ClientResponseHead> head;
  std::string pieces;
  Client::StreamCallbacks cbs;
  cbs.on_head = [&](const ClientResponseHead& h) { head = h; };
  cbs.on_body = [&](std::string_view p) { pieces.append(p); };
  RequestOptions opts;
  opts.timeout = Duration::zero();
  opts.open_body = true;
  ClientRequest req;
  req.method = "POST";
  req.target = "/up";
  req.body = "first;"; // the first chunk goes with the head
  RequestHandle h = client_.stream(server_->boundAddress(), req, opts, cbs);
  EXPECT_TRUE(h.write("queued;")); // while connecting: sent after the head
  ASSERT_TRUE(pumpUntil(d_, [&] { return head.has_value() && got == "first;queued;"; })) << got;
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(handled_, 1);
  std::string expect = got;
  for (int i = 0; i < 20; ++i) { // 20 lines: more than max_request_body_bytes in all
    const std::string line = fmt::format("ack {}\n", i);
    EXPECT_TRUE(h.write(line));
    expect += line;
    EXPECT_TRUE(stream->write("event\n"));
  }
  ASSERT_TRUE(pumpUntil(d_, [&] { return got == expect && pieces.size() == 20 * 6; })) << got;
  EXPECT_EQ(server_->stats().body_too_large, 0u);
  EXPECT_FALSE(ended);
  EXPECT_TRUE(h.write("")); // nothing: an empty chunk would end the body
  drain(d_);
  EXPECT_FALSE(ended);

  // A request the settings do not pick is buffered and limited as before.
  auto r = roundTrip({"POST", "/other", {}, "short"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, "short");

  // The client going away closes the writer, and the body callback is let go.
  bool closed = false;
  stream->onClosed([&] { closed = true; });
  h.cancel();
  EXPECT_FALSE(h.write("late"));
  ASSERT_TRUE(pumpUntil(d_, [&] { return closed; }));
  EXPECT_FALSE(stream->isOpen());
}

// The end of a streamed body reaches the handler; a malformed chunk after the response
// started closes the connection (no error answer fits any more).
TEST_F(ServerTest, StreamedRequestBodyEndsOrBreaks) {
  ServerSettings s;
  s.streams_request_body = [](const ServerRequest&) { return true; };
  std::vector<std::shared_ptr<ResponseWriter>> writers;
  std::string got;
  int ends = 0;
  handler_ = [&](ServerRequest&, std::shared_ptr<ResponseWriter> w) {
    w->onRequestBody([&](std::string_view piece, bool end) {
      got.append(piece);
      ends += end ? 1 : 0;
    });
    w->startStream(200, {});
    writers.push_back(std::move(w));
  };
  startServer(s);
  RawConn c(d_, server_->boundAddress());
  c.send("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return got == "hello"; }));
  c.send("0\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return ends == 1; }));
  EXPECT_TRUE(writers.back()->isOpen()); // the response goes on
  EXPECT_TRUE(writers.back()->finish());
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.count("0\r\n\r\n") == 1; }));

  RawConn c2(d_, server_->boundAddress()); // (both live to the end: a RawConn's read
                                           // handler must not outlive it)
  c2.send("POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return got == "hellook"; }));
  c2.send("zz\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c2.eof(); }));
  EXPECT_FALSE(writers.back()->isOpen());
  EXPECT_EQ(ends, 1);
}

TEST_F(ServerTest, BodyOverLimitGets413) {
  ServerSettings s;
  s.max_request_body_bytes = 16;
  startServer(s);
  ClientRequest req;
  req.method = "POST";
  req.body = std::string(100, 'x');
  auto rsp = roundTrip(req);
  ASSERT_TRUE(rsp.ok()) << rsp.error().message();
  EXPECT_EQ(rsp->status, 413);
  EXPECT_EQ(rsp->headers.get("Connection").value_or(""), "close");
  EXPECT_EQ(handled_, 0);
  EXPECT_EQ(server_->stats().body_too_large, 1u);
  // At the limit is fine.
  req.body = std::string(16, 'x');
  rsp = roundTrip(req);
  ASSERT_TRUE(rsp.ok());
  EXPECT_EQ(rsp->status, 200);
}

TEST_F(ServerTest, ChunkedBodyOverLimitGets413) {
  ServerSettings s;
  s.max_request_body_bytes = 8;
  startServer(s);
  RawConn c(d_, server_->boundAddress());
  c.send("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
         "5\r\nworld\r\n0\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.eof(); }));
  EXPECT_EQ(c.received().rfind("HTTP/1.1 413 Content Too Large\r\n", 0), 0u) << c.received();
  EXPECT_EQ(handled_, 0);
}

TEST_F(ServerTest, GarbageGets400AndClose) {
  startServer();
  RawConn c(d_, server_->boundAddress());
  c.send("HELLO THERE\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.eof(); }));
  EXPECT_EQ(c.received().rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << c.received();
  EXPECT_NE(c.received().find("Connection: close"), std::string::npos);
  EXPECT_EQ(handled_, 0);
  size_t total = 0;
  for (auto n : server_->stats().parse_errors)
    total += n;
  EXPECT_EQ(total, 1u);
}

TEST_F(ServerTest, SmugglingAttemptGets400) {
  startServer();
  RawConn c(d_, server_->boundAddress());
  c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
         "0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.eof(); }));
  EXPECT_EQ(c.received().rfind("HTTP/1.1 400 ", 0), 0u);
  EXPECT_EQ(c.count("HTTP/1.1"), 1u); // the smuggled request was never answered
  EXPECT_EQ(server_->stats()
                .parse_errors[static_cast<size_t>(ParseError::kContentLengthWithTransferEncoding)],
            1u);
  EXPECT_EQ(handled_, 0);
}

TEST_F(ServerTest, OversizedHeadersGet431) {
  ServerSettings s;
  s.parser.max_header_bytes = 1024;
  startServer(s);
  RawConn c(d_, server_->boundAddress());
  c.send("GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(2000, 'b') + "\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.eof(); }));
  EXPECT_EQ(c.received().rfind("HTTP/1.1 431 ", 0), 0u) << c.received();
}

TEST_F(ServerTest, KeepAliveReusesConnection) {
  startServer();
  RawConn c(d_, server_->boundAddress());
  c.send("GET /one HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.count("GET /one") == 1; }));
  c.send("POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.count("POST /two abc") == 1; }));
  EXPECT_FALSE(c.eof());
  EXPECT_EQ(server_->stats().connections_accepted, 1u);
  EXPECT_EQ(server_->connectionCount(), 1u);
  EXPECT_EQ(c.count("Connection: close"), 0u);
  // HTTP/1.0 keep-alive is honoured and announced.
  c.send("GET /three HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.count("GET /three") == 1; }));
  EXPECT_NE(c.received().find("Connection: keep-alive"), std::string::npos);
  // Connection: close ends it after the answer.
  c.send("GET /four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.eof(); }));
  EXPECT_EQ(c.count("GET /four"), 1u);
  EXPECT_EQ(c.count("Connection: close"), 1u);
}

TEST_F(ServerTest, PipelinedRequestsAnsweredInOrder) {
  std::vector<std::shared_ptr<ResponseWriter>> writers;
  std::vector<std::string> paths;
  handler_ = [&](ServerRequest& r, std::shared_ptr<ResponseWriter> w) {
    paths.push_back(r.path);
    writers.push_back(std::move(w));
  };
  startServer();
  RawConn c(d_, server_->boundAddress());
  c.send("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
         "GET /3 HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return writers.size() == 3; }));
  EXPECT_EQ(paths, (std::vector<std::string>{"/1", "/2", "/3"}));
  // Answer out of order: nothing may go out before /1's answer.
  writers[2]->send(200, {}, "three");
  writers[1]->send(200, {}, "two");
  drain(d_);
  EXPECT_TRUE(c.received().empty());
  writers[0]->send(200, {}, "one");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.count("HTTP/1.1 200") == 3; }));
  const std::string& r = c.received();
  EXPECT_LT(r.find("one"), r.find("two"));
  EXPECT_LT(r.find("two"), r.find("three"));
}

TEST_F(ServerTest, PipelineDepthIsBounded) {
  ServerSettings s;
  s.max_pipelined_requests = 2;
  std::vector<std::shared_ptr<ResponseWriter>> writers;
  handler_ = [&](ServerRequest&, std::shared_ptr<ResponseWriter> w) {
    writers.push_back(std::move(w));
  };
  startServer(s);
  RawConn c(d_, server_->boundAddress());
  std::string many;
  for (int i = 0; i < 5; ++i)
    many += "GET /" + std::to_string(i) + " HTTP/1.1\r\nHost: a\r\n\r\n";
  c.send(many);
  ASSERT_TRUE(pumpUntil(d_, [&] { return writers.size() == 2; }));
  drain(d_);
  EXPECT_EQ(writers.size(), 2u); // the rest wait until responses go out
  writers[0]->send(200, {}, "a");
  ASSERT_TRUE(pumpUntil(d_, [&] { return writers.size() == 3; }));
  for (size_t i = 1; i < 5; ++i) {
    ASSERT_TRUE(pumpUntil(d_, [&] { return writers.size() > i; }));
    writers[i]->send(200, {}, "x");
  }
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.count("HTTP/1.1 200") == 5; }));
}

TEST_F(ServerTest, HeadResponseHasNoBody) {
  handler_ = [](ServerRequest&, std::shared_ptr<ResponseWriter> w) {
    w->send(200, {}, "0123456789");
  };
  startServer();
  RawConn c(d_, server_->boundAddress());
  c.send("HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.count("0123456789") == 1; }));
  EXPECT_EQ(c.count("Content-Length: 10"), 2u);
  // The HEAD answer is immediately followed by the GET answer: no body in between.
  EXPECT_NE(c.received().find("Content-Length: 10\r\n\r\nHTTP/1.1 200"), std::string::npos);
}

TEST_F(ServerTest, ExpectContinue) {
  startServer();
  RawConn c(d_, server_->boundAddress());
  c.send("PUT /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.count("HTTP/1.1 100 Continue\r\n\r\n") == 1; }));
  EXPECT_EQ(handled_, 0);
  c.send("data");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.count("PUT /up data") == 1; }));
}

TEST_F(ServerTest, Http10StreamIsCloseDelimited) {
  handler_ = [](ServerRequest&, std::shared_ptr<ResponseWriter> w) {
    w->startStream(200, {});
    w->write("part1,");
    w->write("part2");
    w->finish();
  };
  startServer();
  RawConn c(d_, server_->boundAddress());
  c.send("GET / HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.eof(); }));
  EXPECT_EQ(c.count("Transfer-Encoding"), 0u);
  EXPECT_NE(c.received().find("\r\n\r\npart1,part2"), std::string::npos) << c.received();
}

TEST_F(ServerTest, InvalidHandlerHeadersBecome500) {
  handler_ = [](ServerRequest&, std::shared_ptr<ResponseWriter> w) {
    HeaderMap h{{"X-Bad", "a\r\nInjected: yes"}};
    w->send(200, h, "body");
  };
  startServer();
  auto rsp = roundTrip({});
  ASSERT_TRUE(rsp.ok());
  EXPECT_EQ(rsp->status, 500);
  EXPECT_FALSE(rsp->headers.contains("Injected"));
}

TEST_F(ServerTest, MaxConnectionsRejectsWith503) {
  ServerSettings s;
  s.max_connections = 1;
  startServer(s);
  RawConn a(d_, server_->boundAddress());
  ASSERT_TRUE(pumpUntil(d_, [&] { return server_->connectionCount() == 1; }));
  RawConn b(d_, server_->boundAddress());
  ASSERT_TRUE(pumpUntil(d_, [&] { return b.eof(); }));
  EXPECT_EQ(b.received().rfind("HTTP/1.1 503 ", 0), 0u);
  EXPECT_EQ(server_->stats().connections_rejected, 1u);
  // The first connection still works.
  a.send("GET /ok HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return a.count("GET /ok") == 1; }));
}

TEST_F(ServerTest, SlowClientIsCutOff) {
  ServerSettings s;
  s.max_response_buffer_bytes = 256 * 1024;
  std::shared_ptr<ResponseWriter> stream;
  handler_ = [&](ServerRequest&, std::shared_ptr<ResponseWriter> w) {
    w->startStream(200, {});
    stream = std::move(w);
  };
  startServer(s);
  // A client that sends a request and never reads: its socket buffers fill up.
  asio::ip::tcp::socket sock(d_.io());
  sock.connect(server_->boundAddress().tcp());
  asio::write(sock, asio::buffer(std::string("GET / HTTP/1.1\r\nHost: a\r\n\r\n")));
  ASSERT_TRUE(pumpUntil(d_, [&] { return stream != nullptr; }));
  const std::string piece(16 * 1024, 'w');
  bool cut = false;
  for (int i = 0; i < 64 * 1024 && !cut; ++i) { // at most 1 GiB, far past any socket buffer
    if (!stream->write(piece))
      cut = true;
    d_.runReady();
  }
  EXPECT_TRUE(cut);
  EXPECT_FALSE(stream->isOpen());
  EXPECT_EQ(server_->stats().slow_client_closes, 1u);
}

TEST_F(ServerTest, StopClosesEverything) {
  std::shared_ptr<ResponseWriter> held;
  bool closed = false;
  handler_ = [&](ServerRequest&, std::shared_ptr<ResponseWriter> w) {
    w->onClosed([&] { closed = true; });
    held = std::move(w);
  };
  startServer();
  RawConn c(d_, server_->boundAddress());
  c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return held != nullptr; }));
  server_->stop();
  EXPECT_TRUE(closed);
  EXPECT_FALSE(held->isOpen());
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.eof(); }));
  server_.reset();
  drain(d_);
}

TEST(ServerListen, ErrorNamesTheAddress) {
  RealTimeSource ts;
  Dispatcher d("t", ts);
  Server a(d, {}, [](ServerRequest&, std::shared_ptr<ResponseWriter>) {});
  ASSERT_TRUE(a.listen(loopback()).ok());
  Server b(d, {}, [](ServerRequest&, std::shared_ptr<ResponseWriter>) {});
  Status st = b.listen(a.boundAddress());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find(a.boundAddress().toString()), std::string::npos);
}

// ---------------------------------------------------------------------------------------
// Timeouts on simulated time.

class ServerTimeoutTest : public ::testing::Test {
protected:
  void SetUp() override {
    settings_.header_read_timeout = 10s;
    settings_.idle_timeout = 60s;
    server_ = std::make_unique<Server>(
        d_, settings_,
        [](ServerRequest&, std::shared_ptr<ResponseWriter> w) { w->send(200, {}, "ok"); });
    ASSERT_TRUE(server_->listen(loopback()).ok());
  }
  // Moves simulated time and lets the loop fire what became due.
  void advance(Duration by) {
    time_.advance(by);
    drain(d_);
  }

  SimulatedTimeSource time_;
  Dispatcher d_{"sim", time_};
  ServerSettings settings_;
  std::unique_ptr<Server> server_;
};

TEST_F(ServerTimeoutTest, SlowHeadersGet408) {
  RawConn c(d_, server_->boundAddress());
  const std::string partial = "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ";
  c.send(partial);
  ASSERT_TRUE(pumpUntil(d_, [&] { return server_->stats().bytes_received == partial.size(); }));
  advance(9s);
  EXPECT_TRUE(c.received().empty());
  // Trickling bytes does not extend the header deadline.
  c.send("aaaa");
  ASSERT_TRUE(pumpUntil(d_, [&] { return server_->stats().bytes_received > partial.size(); }));
  advance(2s);
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.eof(); }));
  EXPECT_EQ(c.received().rfind("HTTP/1.1 408 Request Timeout\r\n", 0), 0u) << c.received();
  EXPECT_EQ(server_->stats().header_timeouts, 1u);
}

TEST_F(ServerTimeoutTest, IdleKeepAliveConnectionIsClosed) {
  RawConn c(d_, server_->boundAddress());
  c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.count("ok") == 1; }));
  advance(59s);
  EXPECT_FALSE(c.eof());
  EXPECT_EQ(server_->connectionCount(), 1u);
  advance(2s);
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.eof(); }));
  EXPECT_EQ(server_->stats().idle_timeouts, 1u);
  EXPECT_EQ(server_->connectionCount(), 0u);
}

TEST_F(ServerTimeoutTest, ClientThatStopsReadingIsClosed) {
  // 32 MiB cannot fit in loopback socket buffers, so the write stays pending.
  server_ = std::make_unique<Server>(d_, settings_,
                                     [](ServerRequest&, std::shared_ptr<ResponseWriter> w) {
                                       w->send(200, {}, std::string(32 << 20, 'x'));
                                     });
  ASSERT_TRUE(server_->listen(loopback()).ok());
  asio::ip::tcp::socket sock(d_.io());
  sock.connect(server_->boundAddress().tcp());
  asio::write(sock, asio::buffer(std::string("GET /big HTTP/1.1\r\nHost: a\r\n\r\n")));
  ASSERT_TRUE(pumpUntil(d_, [&] { return server_->stats().requests == 1; }));
  drain(d_);
  advance(59s);
  EXPECT_EQ(server_->connectionCount(), 1u);
  advance(2s);
  ASSERT_TRUE(pumpUntil(d_, [&] { return server_->connectionCount() == 0; }));
  EXPECT_EQ(server_->stats().slow_client_closes, 1u);
}

TEST_F(ServerTimeoutTest, StreamedRequestBodyIsNotTimedOut) {
  settings_.streams_request_body = [](const ServerRequest&) { return true; };
  std::shared_ptr<ResponseWriter> held;
  std::string got;
  server_ = std::make_unique<Server>(
      d_, settings_, [&](ServerRequest&, std::shared_ptr<ResponseWriter> w) {
        w->onRequestBody([&](std::string_view p, bool) { got.append(p); });
        w->startStream(200, {});
        held = std::move(w);
      });
  ASSERT_TRUE(server_->listen(loopback()).ok());
  RawConn c(d_, server_->boundAddress());
  c.send("POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return held != nullptr; }));
  advance(10min); // a proxy with nothing to ack is silent for as long as the mesh is quiet
  EXPECT_TRUE(held->isOpen());
  c.send("3\r\nack\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return got == "ack"; }));
  EXPECT_EQ(server_->stats().idle_timeouts, 0u);
}

TEST_F(ServerTimeoutTest, HeldRequestIsNotTimedOut) {
  std::shared_ptr<ResponseWriter> held;
  server_ = std::make_unique<Server>(
      d_, settings_,
      [&](ServerRequest&, std::shared_ptr<ResponseWriter> w) { held = std::move(w); });
  ASSERT_TRUE(server_->listen(loopback()).ok());
  RawConn c(d_, server_->boundAddress());
  c.send("GET /v1/kv/x?index=3&wait=10m HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_TRUE(pumpUntil(d_, [&] { return held != nullptr; }));
  advance(10min); // a blocking query may take minutes
  EXPECT_TRUE(held->isOpen());
  held->send(200, {}, "done");
  ASSERT_TRUE(pumpUntil(d_, [&] { return c.count("done") == 1; }));
}

// ---------------------------------------------------------------------------------------
// The server's loop on its own thread, answered from another thread through post().

TEST(ServerThreaded, AnswerPostedFromAnotherThread) {
  RealTimeSource ts;
  Dispatcher d("srv", ts);
  std::shared_ptr<ResponseWriter> held;
  std::atomic<bool> got{false};
  auto server = std::make_unique<Server>(d, ServerSettings{},
                                         [&](ServerRequest&, std::shared_ptr<ResponseWriter> w) {
                                           held = std::move(w);
                                           got = true;
                                         });
  ASSERT_TRUE(server->listen(loopback()).ok());
  std::thread loop([&] { d.run(); });

  asio::io_context io;
  asio::ip::tcp::socket sock(io);
  sock.connect(server->boundAddress().tcp());
  asio::write(sock, asio::buffer(std::string("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")));
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!got && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  ASSERT_TRUE(got);
  std::thread worker([&] {
    // Work done elsewhere; the answer goes back to the writer's own thread.
    d.post([w = held] { w->send(200, HeaderMap{{"Connection", "close"}}, "from-worker"); });
  });
  worker.join();
  std::string reply;
  asio::error_code ec;
  asio::read(sock, asio::dynamic_buffer(reply), ec); // until the server closes
  EXPECT_EQ(ec, asio::error::eof);
  EXPECT_NE(reply.find("from-worker"), std::string::npos) << reply;

  d.post([&] {
    held.reset();
    server.reset();
  });
  d.post([&] { d.exit(); });
  loop.join();
}

} // namespace
} // namespace trellis::http
