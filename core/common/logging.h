// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>

namespace cpm::core {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// kText is logfmt (`ts=... level=info msg="..." key=value`), kJson one JSON object per line.
enum class LogFormat { kText, kJson };

// One key=value pair of a structured log line. Values are formatted on construction.
struct LogField {
  LogField(std::string_view k, std::string_view v) : key(k), value(v) {}
  LogField(std::string_view k, const char* v) : key(k), value(v) {}
  LogField(std::string_view k, const std::string& v) : key(k), value(v) {}
  LogField(std::string_view k, bool v) : key(k), value(v ? "true" : "false"), quoted(false) {}
  LogField(std::string_view k, double v);
  template <typename Int>
    requires std::is_integral_v<Int>
  LogField(std::string_view k, Int v) : key(k), value(std::to_string(v)), quoted(false) {}

  std::string_view key;
  std::string value;
  // JSON output quotes strings but not numbers and booleans.
  bool quoted = true;
};

// Process-wide logger writing one line per call to stderr. Thread-safe: each line is a single
// write(2). Configure once at start-up, before other threads log.
void set_log_level(LogLevel level);
void set_log_format(LogFormat format);
LogLevel log_level();
// Parses "debug" | "info" | "warn" | "error"; false if unknown.
bool parse_log_level(std::string_view text, LogLevel* level);

void log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields = {});
inline void log_debug(std::string_view msg, std::initializer_list<LogField> fields = {}) {
  log(LogLevel::kDebug, msg, fields);
}
inline void log_info(std::string_view msg, std::initializer_list<LogField> fields = {}) {
  log(LogLevel::kInfo, msg, fields);
}
inline void log_warn(std::string_view msg, std::initializer_list<LogField> fields = {}) {
  log(LogLevel::kWarn, msg, fields);
}
inline void log_error(std::string_view msg, std::initializer_list<LogField> fields = {}) {
  log(LogLevel::kError, msg, fields);
}

// The line `log` would write, without the trailing newline (exposed for tests). `unix_ms` is the
// timestamp in milliseconds since the epoch.
std::string format_log_line(LogFormat format, int64_t unix_ms, LogLevel level, std::string_view msg,
                            std::initializer_list<LogField> fields);

}  // namespace cpm::core
