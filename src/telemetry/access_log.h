#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/dispatcher.h"
#include "base/result.h"
#include "base/time.h"
#include "telemetry/metrics.h"

// Access log: one JSON object per request, one per line.
//
// How lines travel (and why the worker never blocks):
// - Each worker owns an AccessLogWorker with a private buffer. log() formats the line into it;
//   no lock, no syscall.
// - The buffer is handed to the writer when it reaches `flush_bytes`, and by a timer on the
//   worker's dispatcher every `flush_interval`. A hand-off takes one short mutex (shared with
//   the writer thread, which holds it only to pop a chunk, never across I/O) per chunk, never
//   per line.
// - One background thread writes chunks to the file (or stdout) with write(2).
// - Memory is bounded: a worker's buffer never exceeds flush_bytes plus one line, and bytes
//   handed off but not yet written never exceed `max_pending_bytes`. A hand-off that would
//   pass that bound is dropped whole and its lines counted in droppedLines().
namespace trellis::telemetry {

// Why a request ended the way it did; an entry carries a bit set of these.
enum ResponseFlag : uint32_t {
  kNoRoute = 1u << 0,                   // NR: no route matched
  kUpstreamConnectionFailure = 1u << 1, // UF
  kUpstreamOverflow = 1u << 2,          // UO: circuit breaker / pool overflow
  kUpstreamRequestTimeout = 1u << 3,    // UT
  kUpstreamRetryLimitExceeded = 1u << 4, // URX
  kNoHealthyUpstream = 1u << 5,         // UH
  kDownstreamDisconnect = 1u << 6,      // DC: client went away before the response ended
  kRateLimited = 1u << 7,               // RL
  kFaultInjected = 1u << 8,             // FI
};

// "-" for none, else the short codes joined by commas in the order of the enum ("UF,URX").
std::string formatResponseFlags(uint32_t flags);
void appendResponseFlags(uint32_t flags, std::string& out);

// One request as the proxy saw it. String views must stay valid for the log() call only.
struct AccessLogEntry {
  SystemTime start_time;      // when the request's first byte arrived
  std::string_view method;
  std::string_view authority; // :authority or Host
  std::string_view path;
  uint32_t code = 0;          // response status; 0 when no response was sent
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
  Duration duration{0};
  std::string_view upstream;  // "ip:port" of the chosen endpoint; empty when none
  std::string_view request_id;
  uint32_t response_flags = 0;
  std::string_view listener;
  std::string_view route;
  std::string_view cluster;
};

// Appends `e` as one JSON line (ending in '\n') with the fields time (RFC 3339 UTC with
// milliseconds), method, authority, path, code, bytes_received, bytes_sent, duration_ms
// (three decimals), upstream, request_id, response_flags, listener, route, cluster.
// Empty strings are written as null. String fields longer than `max_field_bytes` are cut at a
// UTF-8 boundary; invalid UTF-8 becomes U+FFFD, so the line is always valid JSON.
void formatAccessLogJson(const AccessLogEntry& e, std::string& out,
                         size_t max_field_bytes = 4096);

// Appends `t` as RFC 3339 UTC with milliseconds: 2024-05-01T12:34:56.789Z.
void appendRfc3339Millis(SystemTime t, std::string& out);

struct AccessLogOptions {
  // "-" (or "/dev/stdout") for standard output, else a file opened for appending.
  std::string path = "-";
  // A worker hands its buffer to the writer once it holds this many bytes.
  size_t flush_bytes = 64 * 1024;
  // ...and at least this often, when a dispatcher drives it (AccessLogWorker::startTimer).
  Duration flush_interval = std::chrono::seconds(1);
  // Bound on bytes handed off and not yet written, over all workers. Past it lines drop.
  size_t max_pending_bytes = 8 * 1024 * 1024;
  // Each string field is cut to this many bytes.
  size_t max_field_bytes = 4096;
};

// Checks the options' limits; errors name the setting.
Status validateAccessLogOptions(const AccessLogOptions& options);

// Where the writer thread puts bytes. An interface so tests can hold the writer still.
class AccessLogOutput {
public:
  virtual ~AccessLogOutput() = default;
  // Writes all of `data`; called only on the writer thread.
  virtual Status write(std::string_view data) = 0;
  // Reopens the destination (after log rotation). Called only on the writer thread.
  virtual Status reopen() = 0;
};

// Opens `path` ("-" or "/dev/stdout" = fd 1) for appending.
Result<std::unique_ptr<AccessLogOutput>> openAccessLogOutput(const std::string& path);

class AccessLog;

// One worker's side of the access log. Use only on the thread that owns the worker.
class AccessLogWorker {
public:
  // Formats `e` into the buffer; hands the buffer off when it reaches flush_bytes.
  void log(const AccessLogEntry& e);
  // Hands the buffer to the writer now (a no-op when empty).
  void flush();
  // Flushes every flush_interval from a timer on `dispatcher`; call on its thread. The timer
  // lives until stopTimer() or the worker's destruction, which must happen on that thread.
  void startTimer(Dispatcher& dispatcher);
  void stopTimer();

  size_t bufferedBytes() const { return buffer_.size(); }

private:
  friend class AccessLog;
  explicit AccessLogWorker(AccessLog& log) : log_(log) {}

  AccessLog& log_;
  std::string buffer_;
  uint64_t buffered_lines_ = 0;
  std::unique_ptr<Timer> timer_;
};

// The access log of one process: per-worker buffers, one writer thread.
class AccessLog {
public:
  // Opens the output named by options.path and starts the writer thread.
  static Result<std::unique_ptr<AccessLog>> open(const AccessLogOptions& options, size_t workers);
  // As open(), writing to `output` instead. `options` must pass validateAccessLogOptions.
  AccessLog(const AccessLogOptions& options, size_t workers,
            std::unique_ptr<AccessLogOutput> output);
  // Writes what was handed off, then stops the writer. Lines still in worker buffers are
  // lost unless their workers flushed (or stop() was called) first.
  ~AccessLog();

  // Worker `i`'s side (i < workers).
  AccessLogWorker& worker(size_t i) { return *workers_[i]; }
  size_t workerCount() const { return workers_.size(); }

  // Flushes every worker buffer and waits until everything handed off is written. Call only
  // when no worker thread is logging (after the workers stopped); idempotent.
  void stop();
  // Asks the writer to reopen its output before its next write (on SIGHUP, for logrotate).
  // Thread-safe.
  void reopen();

  // Thread-safe counters.
  uint64_t writtenLines() const { return written_lines_.load(std::memory_order_relaxed); }
  uint64_t droppedLines() const { return dropped_lines_.load(std::memory_order_relaxed); }
  uint64_t writeErrors() const { return write_errors_.load(std::memory_order_relaxed); }
  size_t pendingBytes() const;

  // Exposes the counters above as trellis_access_log_{lines_written,lines_dropped,
  // write_errors}_total. The registrations live as long as this object, so `registry` must
  // outlive it.
  Status registerMetrics(Registry& registry);

private:
  friend class AccessLogWorker;
  struct Chunk {
    std::string data;
    uint64_t lines = 0;
  };

  // Takes `buffer` (and its line count) from a worker, or drops it past the bound.
  void handOff(std::string& buffer, uint64_t& lines);
  void writerLoop();

  const AccessLogOptions options_;
  std::unique_ptr<AccessLogOutput> output_;
  std::vector<std::unique_ptr<AccessLogWorker>> workers_;

  mutable std::mutex mu_;
  std::condition_variable cv_; // the writer waits for chunks, a reopen or stop
  std::deque<Chunk> queue_;
  size_t pending_bytes_ = 0; // queued plus being written
  bool stopping_ = false;
  std::atomic<bool> reopen_requested_{false};

  std::atomic<uint64_t> written_lines_{0};
  std::atomic<uint64_t> dropped_lines_{0};
  std::atomic<uint64_t> write_errors_{0};
  std::vector<CallbackRegistration> metric_registrations_;
  std::thread writer_;
};

} // namespace trellis::telemetry
