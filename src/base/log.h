#pragma once

#include <string_view>

#include <spdlog/spdlog.h>

#include "base/result.h"

namespace trellis::log {

enum class Format { kText, kJson };

// Configures the process logger (stderr). `level` is one of trace, debug, info, warn, error,
// off; empty means $TRELLIS_LOG_LEVEL, else info. `format` is "text" or "json"; empty means
// $TRELLIS_LOG_FORMAT, else text. JSON lines carry time, level, thread, logger and msg.
Status init(std::string_view level = "", std::string_view format = "");

} // namespace trellis::log

#define TLOG_TRACE(...) SPDLOG_TRACE(__VA_ARGS__)
#define TLOG_DEBUG(...) SPDLOG_DEBUG(__VA_ARGS__)
#define TLOG_INFO(...) SPDLOG_INFO(__VA_ARGS__)
#define TLOG_WARN(...) SPDLOG_WARN(__VA_ARGS__)
#define TLOG_ERROR(...) SPDLOG_ERROR(__VA_ARGS__)
