// SPDX-License-Identifier: Apache-2.0
#include "common/logging.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace cpm::core {
namespace {

std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::atomic<LogFormat> g_format{LogFormat::kText};

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

// logfmt: bare when the value has no space, quote, '=' or control character; otherwise quoted with
// the same escapes as JSON.
void append_logfmt_value(std::string& out, std::string_view s) {
  bool bare = !s.empty();
  for (unsigned char c : s) {
    if (c <= ' ' || c == '"' || c == '=' || c == '\\') {
      bare = false;
      break;
    }
  }
  if (bare) {
    out += s;
  } else {
    append_json_string(out, s);
  }
}

std::string format_timestamp(int64_t unix_ms) {
  const std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(unix_ms % 1000));
  return buf;
}

}  // namespace

LogField::LogField(std::string_view k, double v) : key(k), quoted(false) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  value = buf;
}

void set_log_level(LogLevel level) { g_level.store(level); }
void set_log_format(LogFormat format) { g_format.store(format); }
LogLevel log_level() { return g_level.load(); }

bool parse_log_level(std::string_view text, LogLevel* level) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError}) {
    if (text == level_name(l)) {
      *level = l;
      return true;
    }
  }
  return false;
}

std::string format_log_line(LogFormat format, int64_t unix_ms, LogLevel level, std::string_view msg,
                            std::initializer_list<LogField> fields) {
  std::string line;
  line.reserve(128);
  if (format == LogFormat::kJson) {
    line += "{\"ts\":\"" + format_timestamp(unix_ms) + "\",\"level\":\"" + level_name(level) +
            "\",\"msg\":";
    append_json_string(line, msg);
    for (const LogField& f : fields) {
      line += ',';
      append_json_string(line, f.key);
      line += ':';
      if (f.quoted) {
        append_json_string(line, f.value);
      } else {
        line += f.value;
      }
    }
    line += '}';
  } else {
    line += "ts=" + format_timestamp(unix_ms) + " level=" + level_name(level) + " msg=";
    append_json_string(line, msg);
    for (const LogField& f : fields) {
      line += ' ';
      line += f.key;
      line += '=';
      append_logfmt_value(line, f.value);
    }
  }
  return line;
}

void log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields) {
  if (level < g_level.load(std::memory_order_relaxed)) return;
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  std::string line = format_log_line(g_format.load(), now_ms, level, msg, fields);
  line += '\n';
  // One write per line keeps lines from different threads whole.
  size_t off = 0;
  while (off < line.size()) {
    const ssize_t n = ::write(STDERR_FILENO, line.data() + off, line.size() - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
}

}  // namespace cpm::core
