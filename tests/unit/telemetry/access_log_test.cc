#include "telemetry/access_log.h"

#include <cstdio>
#include <fstream>
#include <future>
#include <sstream>

#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "telemetry/text.h"

namespace trellis::telemetry {
namespace {

using namespace std::chrono_literals;

SystemTime at(int64_t epoch_ms) { return SystemTime(std::chrono::milliseconds(epoch_ms)); }

AccessLogEntry sampleEntry() {
  AccessLogEntry e;
  e.start_time = at(1'700'000'000'123);
  e.method = "GET";
  e.authority = "api.example.com";
  e.path = "/v1/items?id=7";
  e.code = 200;
  e.bytes_received = 12;
  e.bytes_sent = 3456;
  e.duration = 12'345'678ns;
  e.upstream = "10.0.0.7:8080";
  e.request_id = "7f1c3c1e-2a4b-4c7d-9e0f-0123456789ab";
  e.response_flags = 0;
  e.listener = "outbound_http";
  e.route = "items";
  e.cluster = "items-v1";
  return e;
}

std::vector<std::string> readLines(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(f, line))
    lines.push_back(line);
  return lines;
}

std::string tempPath(const std::string& name) {
  return testing::TempDir() + "/trellis-access-" + std::to_string(::getpid()) + "-" + name;
}

TEST(AccessLogFormatTest, AllFieldsAsJson) {
  std::string out;
  formatAccessLogJson(sampleEntry(), out);
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(out.find('\n'), out.size() - 1);
  nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_EQ(j["time"], "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(j["method"], "GET");
  EXPECT_EQ(j["authority"], "api.example.com");
  EXPECT_EQ(j["path"], "/v1/items?id=7");
  EXPECT_EQ(j["code"], 200);
  EXPECT_EQ(j["bytes_received"], 12);
  EXPECT_EQ(j["bytes_sent"], 3456);
  EXPECT_DOUBLE_EQ(j["duration_ms"].get<double>(), 12.345);
  EXPECT_EQ(j["upstream"], "10.0.0.7:8080");
  EXPECT_EQ(j["request_id"], "7f1c3c1e-2a4b-4c7d-9e0f-0123456789ab");
  EXPECT_EQ(j["response_flags"], "-");
  EXPECT_EQ(j["listener"], "outbound_http");
  EXPECT_EQ(j["route"], "items");
  EXPECT_EQ(j["cluster"], "items-v1");
  EXPECT_EQ(j.size(), 14u);
}

TEST(AccessLogFormatTest, EmptyFieldsAreNullAndFlagsAreCodes) {
  AccessLogEntry e;
  e.start_time = at(0);
  e.method = "POST";
  e.code = 0;
  e.response_flags = kNoRoute | kDownstreamDisconnect;
  std::string out;
  formatAccessLogJson(e, out);
  nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_EQ(j["time"], "1970-01-01T00:00:00.000Z");
  EXPECT_TRUE(j["authority"].is_null());
  EXPECT_TRUE(j["upstream"].is_null());
  EXPECT_TRUE(j["route"].is_null());
  EXPECT_TRUE(j["cluster"].is_null());
  EXPECT_EQ(j["code"], 0);
  EXPECT_DOUBLE_EQ(j["duration_ms"].get<double>(), 0);
  EXPECT_EQ(j["response_flags"], "NR,DC");
}

TEST(AccessLogFormatTest, ResponseFlagCodes) {
  EXPECT_EQ(formatResponseFlags(0), "-");
  EXPECT_EQ(formatResponseFlags(kNoRoute), "NR");
  EXPECT_EQ(formatResponseFlags(kUpstreamConnectionFailure), "UF");
  EXPECT_EQ(formatResponseFlags(kUpstreamOverflow), "UO");
  EXPECT_EQ(formatResponseFlags(kUpstreamRequestTimeout), "UT");
  EXPECT_EQ(formatResponseFlags(kUpstreamRetryLimitExceeded), "URX");
  EXPECT_EQ(formatResponseFlags(kNoHealthyUpstream), "UH");
  EXPECT_EQ(formatResponseFlags(kDownstreamDisconnect), "DC");
  EXPECT_EQ(formatResponseFlags(kRateLimited), "RL");
  EXPECT_EQ(formatResponseFlags(kFaultInjected), "FI");
  EXPECT_EQ(formatResponseFlags(kUpstreamConnectionFailure | kUpstreamRetryLimitExceeded),
            "UF,URX");
  EXPECT_EQ(formatResponseFlags(1u << 31), "-"); // unknown bits are not invented codes
}

TEST(AccessLogFormatTest, Rfc3339Dates) {
  const std::pair<int64_t, std::string> cases[] = {
      {0, "1970-01-01T00:00:00.000Z"},
      {951'782'400'000, "2000-02-29T00:00:00.000Z"},
      {946'684'799'999, "1999-12-31T23:59:59.999Z"},
      {1'709'164'800'001, "2024-02-29T00:00:00.001Z"},
      {4'102'444'800'000, "2100-01-01T00:00:00.000Z"},
      {-1, "1969-12-31T23:59:59.999Z"},
  };
  for (const auto& [ms, want] : cases) {
    std::string out;
    appendRfc3339Millis(at(ms), out);
    EXPECT_EQ(out, want) << ms;
  }
  // Sub-millisecond parts are truncated, not rounded.
  std::string out;
  appendRfc3339Millis(at(5) + std::chrono::microseconds(999), out);
  EXPECT_EQ(out, "1970-01-01T00:00:00.005Z");
}

TEST(AccessLogFormatTest, HostileFieldsStayValidJson) {
  const std::vector<std::string> hostile = {
      "\"quoted\" and \\backslash\\",
      "new\nline\r\ncarriage",
      std::string("nul\0byte", 8),
      "\x01\x02\x1b[31mansi\x7f",
      "bad utf8 \xff\xfe \xc3 \xed\xa0\x80 end",
      "\xe2\x80\xa8 line separator, \xf0\x9f\x98\x80 emoji",
      "}\"],\"code\":999,\"x\":[\"",
  };
  for (const std::string& h : hostile) {
    AccessLogEntry e = sampleEntry();
    e.method = h;
    e.authority = h;
    e.path = h;
    e.request_id = h;
    e.listener = h;
    std::string out;
    formatAccessLogJson(e, out);
    ASSERT_EQ(out.find('\n'), out.size() - 1) << "one line per entry";
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(out)) << out;
    std::string expected;
    appendValidUtf8(h, expected);
    EXPECT_EQ(j["method"], expected);
    EXPECT_EQ(j["authority"], expected);
    EXPECT_EQ(j["path"], expected);
    EXPECT_EQ(j["request_id"], expected);
    EXPECT_EQ(j["listener"], expected);
    EXPECT_EQ(j["code"], 200) << "an injected field must not override the real one";
  }
}

TEST(AccessLogFormatTest, LongFieldsAreCut) {
  AccessLogEntry e = sampleEntry();
  std::string long_path = "/" + std::string(100, 'a') + "\xc3\xa9";
  e.path = long_path;
  std::string out;
  formatAccessLogJson(e, out, 101); // "/" + 100 'a' = 101 bytes; é would straddle
  nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_EQ(j["path"], "/" + std::string(100, 'a'));
}

TEST(AccessLogOptionsTest, LimitsAreValidated) {
  AccessLogOptions o;
  EXPECT_TRUE(validateAccessLogOptions(o).ok());
  o.max_pending_bytes = o.flush_bytes - 1;
  Status st = validateAccessLogOptions(o);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("max_pending_bytes"), std::string::npos);
  o = AccessLogOptions{};
  o.flush_interval = Duration::zero();
  EXPECT_FALSE(validateAccessLogOptions(o).ok());
  o = AccessLogOptions{};
  o.path = "";
  EXPECT_FALSE(validateAccessLogOptions(o).ok());
  o = AccessLogOptions{};
  o.path = "/nonexistent-dir-for-trellis/x.log";
  auto log = AccessLog::open(o, 1);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.error().code(), ErrorCode::kIo);
  EXPECT_NE(log.error().message().find("/nonexistent-dir-for-trellis/x.log"), std::string::npos);
}

TEST(AccessLogTest, WorkersOnTheirOwnThreadsWriteEveryLine) {
  const std::string path = tempPath("threads.log");
  std::remove(path.c_str());
  AccessLogOptions o;
  o.path = path;
  o.flush_bytes = 1024; // many hand-offs
  constexpr size_t kWorkers = 3;
  constexpr int kLines = 2000;
  auto log = AccessLog::open(o, kWorkers);
  ASSERT_TRUE(log.ok()) << log.error().message();
  std::vector<std::thread> threads;
  for (size_t w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      AccessLogWorker& worker = (*log)->worker(w);
      AccessLogEntry e = sampleEntry();
      for (int i = 0; i < kLines; ++i) {
        std::string rid = fmt::format("w{}-{}", w, i);
        e.request_id = rid;
        worker.log(e);
      }
      worker.flush();
    });
  }
  for (auto& t : threads)
    t.join();
  (*log)->stop();
  EXPECT_EQ((*log)->writtenLines(), kWorkers * kLines);
  EXPECT_EQ((*log)->droppedLines(), 0u);
  EXPECT_EQ((*log)->pendingBytes(), 0u);

  std::vector<std::string> lines = readLines(path);
  ASSERT_EQ(lines.size(), kWorkers * kLines);
  std::set<std::string> ids;
  for (const std::string& l : lines)
    ids.insert(nlohmann::json::parse(l)["request_id"].get<std::string>());
  EXPECT_EQ(ids.size(), kWorkers * kLines);
  std::remove(path.c_str());
}

// An output whose first write blocks until the test releases it, so the writer falls behind
// deterministically.
class BlockingOutput : public AccessLogOutput {
public:
  Status write(std::string_view data) override {
    if (!entered_set_) {
      entered_set_ = true;
      entered_.set_value();
      release_.get_future().wait();
    }
    std::lock_guard lock(mu_);
    written_.append(data);
    return okStatus();
  }
  Status reopen() override { return okStatus(); }

  std::future<void> entered() { return entered_.get_future(); }
  void release() { release_.set_value(); }
  std::string written() {
    std::lock_guard lock(mu_);
    return written_;
  }

private:
  bool entered_set_ = false;
  std::promise<void> entered_;
  std::promise<void> release_;
  std::mutex mu_;
  std::string written_;
};

TEST(AccessLogTest, DropsAndCountsLinesWhenTheWriterFallsBehind) {
  std::string one_line;
  formatAccessLogJson(sampleEntry(), one_line);
  const size_t line_bytes = one_line.size();

  Registry registry; // outlives the log's metric registrations
  AccessLogOptions o;
  o.flush_bytes = 1;                     // every line is handed off alone
  o.max_pending_bytes = 3 * line_bytes;  // room for three lines in flight
  auto output = std::make_unique<BlockingOutput>();
  BlockingOutput* out = output.get();
  std::future<void> entered = out->entered();
  AccessLog log(o, 1, std::move(output));
  ASSERT_TRUE(log.registerMetrics(registry).ok());

  AccessLogWorker& w = log.worker(0);
  w.log(sampleEntry());
  entered.wait(); // the writer holds line 1 inside write(); it still counts as pending
  for (int i = 0; i < 9; ++i)
    w.log(sampleEntry());
  // Lines 2 and 3 fit beside line 1; the other 7 were dropped without blocking the worker.
  EXPECT_EQ(log.droppedLines(), 7u);
  EXPECT_EQ(log.pendingBytes(), 3 * line_bytes);
  EXPECT_EQ(w.bufferedBytes(), 0u);

  out->release();
  log.stop();
  EXPECT_EQ(log.writtenLines(), 3u);
  EXPECT_EQ(log.droppedLines(), 7u);
  EXPECT_EQ(out->written(), one_line + one_line + one_line);

  // After stop, lines are dropped (and counted) rather than queued forever.
  w.log(sampleEntry());
  w.flush();
  EXPECT_EQ(log.droppedLines(), 8u);

  const std::string text = registry.renderPrometheus();
  EXPECT_NE(text.find("trellis_access_log_lines_dropped_total 8\n"), std::string::npos) << text;
  EXPECT_NE(text.find("trellis_access_log_lines_written_total 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("trellis_access_log_write_errors_total 0\n"), std::string::npos) << text;
}

TEST(AccessLogTest, TimerFlushesOnTheSimulatedClock) {
  SimulatedTimeSource time;
  Dispatcher dispatcher("worker-0", time);
  AccessLogOptions o;
  o.flush_interval = 500ms;
  auto output = std::make_unique<BlockingOutput>();
  BlockingOutput* out = output.get();
  std::future<void> entered = out->entered();
  out->release(); // never block
  AccessLog log(o, 1, std::move(output));
  AccessLogWorker& w = log.worker(0);
  w.startTimer(dispatcher);

  w.log(sampleEntry());
  dispatcher.runReady();
  EXPECT_GT(w.bufferedBytes(), 0u) << "below flush_bytes and before the interval: kept";
  time.advance(499ms);
  dispatcher.runReady();
  EXPECT_GT(w.bufferedBytes(), 0u);
  time.advance(1ms);
  dispatcher.runReady();
  EXPECT_EQ(w.bufferedBytes(), 0u);
  entered.wait(); // the writer got the chunk

  // The timer re-arms itself.
  w.log(sampleEntry());
  time.advance(500ms);
  dispatcher.runReady();
  EXPECT_EQ(w.bufferedBytes(), 0u);
  w.stopTimer();
  log.stop();
  EXPECT_EQ(log.writtenLines(), 2u);
}

TEST(AccessLogTest, ReopenFollowsLogRotation) {
  const std::string path = tempPath("rotate.log");
  const std::string rotated = path + ".1";
  std::remove(path.c_str());
  std::remove(rotated.c_str());
  AccessLogOptions o;
  o.path = path;
  auto log = AccessLog::open(o, 1);
  ASSERT_TRUE(log.ok());
  AccessLogEntry e = sampleEntry();
  e.request_id = "before";
  (*log)->worker(0).log(e);
  (*log)->worker(0).flush();
  ASSERT_EQ(std::rename(path.c_str(), rotated.c_str()), 0);
  (*log)->reopen();
  e.request_id = "after";
  (*log)->worker(0).log(e);
  (*log)->stop();

  std::vector<std::string> fresh = readLines(path);
  std::vector<std::string> old = readLines(rotated);
  ASSERT_FALSE(fresh.empty());
  EXPECT_EQ(nlohmann::json::parse(fresh.back())["request_id"], "after");
  // "before" was written exactly once, to whichever file was open when the writer got it.
  EXPECT_EQ(fresh.size() + old.size(), 2u);
  std::remove(path.c_str());
  std::remove(rotated.c_str());
}

} // namespace
} // namespace trellis::telemetry
