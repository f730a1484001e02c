#include "telemetry/access_log.h"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <unistd.h>

#include "base/log.h"
#include "telemetry/text.h"

namespace trellis::telemetry {
namespace {

struct FlagCode {
  uint32_t flag;
  const char* code;
};

constexpr FlagCode kFlagCodes[] = {
    {kNoRoute, "NR"},
    {kUpstreamConnectionFailure, "UF"},
    {kUpstreamOverflow, "UO"},
    {kUpstreamRequestTimeout, "UT"},
    {kUpstreamRetryLimitExceeded, "URX"},
    {kNoHealthyUpstream, "UH"},
    {kDownstreamDisconnect, "DC"},
    {kRateLimited, "RL"},
    {kFaultInjected, "FI"},
};

void appendDigits(unsigned v, int width, std::string& out) {
  char buf[8];
  for (int i = width - 1; i >= 0; --i) {
    buf[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
  out.append(buf, static_cast<size_t>(width));
}

// Writes to a file descriptor it owns (or to stdout, which it does not close).
class FdAccessLogOutput : public AccessLogOutput {
public:
  explicit FdAccessLogOutput(std::string path) : path_(std::move(path)) {}
  ~FdAccessLogOutput() override { closeFd(); }

  Status open() {
    if (path_ == "-" || path_ == "/dev/stdout") {
      fd_ = STDOUT_FILENO;
      return okStatus();
    }
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
      return makeError(ErrorCode::kIo, "access log {}: cannot open: {}", path_,
                       std::strerror(errno));
    }
    fd_ = fd;
    return okStatus();
  }

  // AccessLogOutput
  Status write(std::string_view data) override {
    while (!data.empty()) {
      const ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR)
          continue;
        return makeError(ErrorCode::kIo, "access log {}: write: {}", path_, std::strerror(errno));
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return okStatus();
  }
  Status reopen() override {
    if (fd_ == STDOUT_FILENO)
      return okStatus();
    closeFd();
    return open();
  }

private:
  void closeFd() {
    if (fd_ >= 0 && fd_ != STDOUT_FILENO)
      ::close(fd_);
    fd_ = -1;
  }

  std::string path_;
  int fd_ = -1;
};

} // namespace

void appendResponseFlags(uint32_t flags, std::string& out) {
  bool any = false;
  for (const FlagCode& fc : kFlagCodes) {
    if ((flags & fc.flag) != 0) {
      if (any)
        out.push_back(',');
      out.append(fc.code);
      any = true;
    }
  }
  if (!any)
    out.push_back('-');
}

std::string formatResponseFlags(uint32_t flags) {
  std::string out;
  appendResponseFlags(flags, out);
  return out;
}

void appendRfc3339Millis(SystemTime t, std::string& out) {
  using namespace std::chrono;
  const auto ms = floor<milliseconds>(t.time_since_epoch()).count();
  int64_t days = ms >= 0 ? ms / 86'400'000 : (ms - 86'399'999) / 86'400'000;
  int64_t ms_of_day = ms - days * 86'400'000;
  // Civil date from days since 1970-01-01 (H. Hinnant's days_from_civil, inverted).
  days += 719468;
  const int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const auto doe = static_cast<unsigned>(days - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned day = doy - (153 * mp + 2) / 5 + 1;
  const unsigned month = mp < 10 ? mp + 3 : mp - 9;
  const int64_t year = static_cast<int64_t>(yoe) + era * 400 + (month <= 2 ? 1 : 0);

  appendDigits(static_cast<unsigned>(std::clamp<int64_t>(year, 0, 9999)), 4, out);
  out.push_back('-');
  appendDigits(month, 2, out);
  out.push_back('-');
  appendDigits(day, 2, out);
  out.push_back('T');
  appendDigits(static_cast<unsigned>(ms_of_day / 3'600'000), 2, out);
  out.push_back(':');
  appendDigits(static_cast<unsigned>(ms_of_day / 60'000 % 60), 2, out);
  out.push_back(':');
  appendDigits(static_cast<unsigned>(ms_of_day / 1000 % 60), 2, out);
  out.push_back('.');
  appendDigits(static_cast<unsigned>(ms_of_day % 1000), 3, out);
  out.push_back('Z');
}

void formatAccessLogJson(const AccessLogEntry& e, std::string& out, size_t max_field_bytes) {
  const auto str = [&](std::string_view key, std::string_view v) {
    out.append(key);
    if (v.empty())
      out.append("null");
    else
      appendJsonString(truncateUtf8(v, max_field_bytes), out);
  };
  const auto num = [&](std::string_view key, uint64_t v) {
    out.append(key);
    const fmt::format_int digits(v);
    out.append(digits.data(), digits.size());
  };

  out.append("{\"time\":\"");
  appendRfc3339Millis(e.start_time, out);
  out.push_back('"');
  str(",\"method\":", e.method);
  str(",\"authority\":", e.authority);
  str(",\"path\":", e.path);
  num(",\"code\":", e.code);
  num(",\"bytes_received\":", e.bytes_received);
  num(",\"bytes_sent\":", e.bytes_sent);
  const int64_t us = std::max<int64_t>(
      0, std::chrono::duration_cast<std::chrono::microseconds>(e.duration).count());
  num(",\"duration_ms\":", static_cast<uint64_t>(us / 1000));
  out.push_back('.');
  appendDigits(static_cast<unsigned>(us % 1000), 3, out);
  str(",\"upstream\":", e.upstream);
  str(",\"request_id\":", e.request_id);
  out.append(",\"response_flags\":\"");
  appendResponseFlags(e.response_flags, out);
  out.push_back('"');
  str(",\"listener\":", e.listener);
  str(",\"route\":", e.route);
  str(",\"cluster\":", e.cluster);
  out.append("}\n");
}

Result<std::unique_ptr<AccessLogOutput>> openAccessLogOutput(const std::string& path) {
  auto out = std::make_unique<FdAccessLogOutput>(path);
  TRELLIS_RETURN_IF_ERROR(out->open());
  return std::unique_ptr<AccessLogOutput>(std::move(out));
}

void AccessLogWorker::log(const AccessLogEntry& e) {
  formatAccessLogJson(e, buffer_, log_.options_.max_field_bytes);
  ++buffered_lines_;
  if (buffer_.size() >= log_.options_.flush_bytes)
    flush();
}

void AccessLogWorker::flush() {
  if (buffered_lines_ == 0)
    return;
  log_.handOff(buffer_, buffered_lines_);
}

void AccessLogWorker::startTimer(Dispatcher& dispatcher) {
  timer_ = dispatcher.createTimer([this] {
    flush();
    timer_->enable(log_.options_.flush_interval);
  });
  timer_->enable(log_.options_.flush_interval);
}

void AccessLogWorker::stopTimer() { timer_.reset(); }

Status validateAccessLogOptions(const AccessLogOptions& options) {
  if (options.path.empty())
    return makeError(ErrorCode::kInvalidArgument, "access log: path is empty (use \"-\")");
  if (options.flush_bytes == 0)
    return makeError(ErrorCode::kInvalidArgument, "access log: flush_bytes must be > 0");
  if (options.max_pending_bytes < options.flush_bytes) {
    return makeError(ErrorCode::kInvalidArgument,
                     "access log: max_pending_bytes ({}) must be at least flush_bytes ({})",
                     options.max_pending_bytes, options.flush_bytes);
  }
  if (options.flush_interval <= Duration::zero())
    return makeError(ErrorCode::kInvalidArgument, "access log: flush_interval must be > 0");
  if (options.max_field_bytes < 16)
    return makeError(ErrorCode::kInvalidArgument, "access log: max_field_bytes must be >= 16");
  return okStatus();
}

Result<std::unique_ptr<AccessLog>> AccessLog::open(const AccessLogOptions& options,
                                                   size_t workers) {
  TRELLIS_RETURN_IF_ERROR(validateAccessLogOptions(options));
  auto output = openAccessLogOutput(options.path);
  if (!output.ok())
    return output.error();
  return std::make_unique<AccessLog>(options, workers, std::move(*output));
}

AccessLog::AccessLog(const AccessLogOptions& options, size_t workers,
                     std::unique_ptr<AccessLogOutput> output)
    : options_(options), output_(std::move(output)) {
  workers_.reserve(workers);
  for (size_t i = 0; i < workers; ++i)
    workers_.push_back(std::unique_ptr<AccessLogWorker>(new AccessLogWorker(*this)));
  writer_ = std::thread([this] { writerLoop(); });
}

AccessLog::~AccessLog() {
  metric_registrations_.clear();
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable())
    writer_.join();
}

void AccessLog::stop() {
  for (auto& w : workers_)
    w->flush();
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable())
    writer_.join();
}

void AccessLog::reopen() {
  reopen_requested_.store(true, std::memory_order_relaxed);
  {
    // Taking the lock orders the flag before the writer's predicate check.
    std::lock_guard lock(mu_);
  }
  cv_.notify_all();
}

size_t AccessLog::pendingBytes() const {
  std::lock_guard lock(mu_);
  return pending_bytes_;
}

void AccessLog::handOff(std::string& buffer, uint64_t& lines) {
  bool queued = false;
  {
    std::lock_guard lock(mu_);
    if (!stopping_ && pending_bytes_ + buffer.size() <= options_.max_pending_bytes) {
      pending_bytes_ += buffer.size();
      queue_.push_back(Chunk{std::move(buffer), lines});
      queued = true;
    }
  }
  if (queued) {
    cv_.notify_one();
  } else {
    dropped_lines_.fetch_add(lines, std::memory_order_relaxed);
  }
  buffer = std::string();
  buffer.reserve(std::min(options_.flush_bytes, size_t{1} << 20));
  lines = 0;
}

void AccessLog::writerLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] {
      return !queue_.empty() || stopping_ || reopen_requested_.load(std::memory_order_relaxed);
    });
    if (reopen_requested_.exchange(false)) {
      lock.unlock();
      Status st = output_->reopen();
      if (!st.ok()) {
        write_errors_.fetch_add(1, std::memory_order_relaxed);
        TLOG_ERROR("{}", st.error().message());
      }
      lock.lock();
      continue;
    }
    if (queue_.empty()) {
      if (stopping_)
        return;
      continue;
    }
    Chunk chunk = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    Status st = output_->write(chunk.data);
    if (st.ok()) {
      written_lines_.fetch_add(chunk.lines, std::memory_order_relaxed);
    } else {
      // Keep going: a full disk may clear. The lines are lost and counted.
      write_errors_.fetch_add(1, std::memory_order_relaxed);
      dropped_lines_.fetch_add(chunk.lines, std::memory_order_relaxed);
      TLOG_ERROR("{}", st.error().message());
    }
    lock.lock();
    pending_bytes_ -= chunk.data.size();
  }
}

Status AccessLog::registerMetrics(Registry& registry) {
  struct Def {
    const char* name;
    const char* help;
    const std::atomic<uint64_t>* value;
  };
  const Def defs[] = {
      {"trellis_access_log_lines_written_total", "Access-log lines written to the output.",
       &written_lines_},
      {"trellis_access_log_lines_dropped_total",
       "Access-log lines dropped because the writer fell behind (max_pending_bytes) or a write "
       "failed.",
       &dropped_lines_},
      {"trellis_access_log_write_errors_total",
       "Failed writes (or reopens) of the access-log output.", &write_errors_},
  };
  for (const Def& d : defs) {
    const std::atomic<uint64_t>* v = d.value;
    auto reg = registry.counterCallback(d.name, d.help,
                                        [v] { return v->load(std::memory_order_relaxed); });
    if (!reg.ok())
      return reg.error();
    metric_registrations_.push_back(std::move(*reg));
  }
  return okStatus();
}

} // namespace trellis::telemetry
