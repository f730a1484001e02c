#include "base/log.h"

#include <cstdlib>
#include <memory>
#include <string>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace trellis::log {
namespace {

void appendJsonEscaped(spdlog::memory_buf_t& out, std::string_view s) {
  for (char c : s) {
    switch (c) {
    case '"':
      out.append(std::string_view("\\\""));
      break;
    case '\\':
      out.append(std::string_view("\\\\"));
      break;
    case '\n':
      out.append(std::string_view("\\n"));
      break;
    case '\r':
      out.append(std::string_view("\\r"));
      break;
    case '\t':
      out.append(std::string_view("\\t"));
      break;
    default:
      if (static_cast<unsigned char>(c) < 0x20) {
        fmt::format_to(std::back_inserter(out), "\\u{:04x}", static_cast<int>(c));
      } else {
        out.push_back(c);
      }
    }
  }
}

// One JSON object per line; the message is escaped, unlike a plain spdlog pattern.
class JsonFormatter : public spdlog::formatter {
public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    auto t = std::chrono::time_point_cast<std::chrono::microseconds>(msg.time);
    std::time_t secs = std::chrono::system_clock::to_time_t(msg.time);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    fmt::format_to(std::back_inserter(dest),
                   "{{\"time\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z\",\"level\":\"{}\","
                   "\"thread\":{},\"msg\":\"",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                   tm.tm_sec, t.time_since_epoch().count() % 1000000,
                   spdlog::level::to_string_view(msg.level), msg.thread_id);
    appendJsonEscaped(dest, std::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(std::string_view("\"}\n"));
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

std::string_view envOr(std::string_view given, const char* env) {
  if (!given.empty())
    return given;
  const char* v = std::getenv(env);
  return v ? std::string_view(v) : std::string_view();
}

} // namespace

Status init(std::string_view level, std::string_view format) {
  level = envOr(level, "TRELLIS_LOG_LEVEL");
  format = envOr(format, "TRELLIS_LOG_FORMAT");
  spdlog::level::level_enum lvl = spdlog::level::info;
  if (!level.empty()) {
    lvl = spdlog::level::from_str(std::string(level));
    // from_str answers "off" for anything it does not know; only accept a real "off".
    if (lvl == spdlog::level::off && level != "off")
      return makeError(ErrorCode::kInvalidArgument,
                       "invalid log level \"{}\" (use trace, debug, info, warn, error or off)",
                       level);
  }
  if (!format.empty() && format != "text" && format != "json")
    return makeError(ErrorCode::kInvalidArgument,
                     "invalid log format \"{}\" (use text or json)", format);
  auto logger = std::make_shared<spdlog::logger>(
      "trellis", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (format == "json")
    logger->set_formatter(std::make_unique<JsonFormatter>());
  else
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%t] %v");
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  spdlog::set_level(lvl);
  return okStatus();
}

} // namespace trellis::log
