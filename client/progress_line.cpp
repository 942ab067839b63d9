// SPDX-License-Identifier: Apache-2.0
#include "progress_line.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "output.h"

namespace cpmctl {

ProgressLine::ProgressLine(FILE* out, bool tty) : out_(out), tty_(tty) {}

ProgressLine::~ProgressLine() { finish(); }

void ProgressLine::update(const std::string& line) {
  if (tty_) {
    std::fprintf(out_, "\r%s\x1b[K", line.c_str());
    current_ = line;
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

void ProgressLine::print_above(const std::string& text) {
  if (tty_ && !current_.empty()) {
    std::fprintf(out_, "\r\x1b[K%s\n%s", text.c_str(), current_.c_str());
  } else {
    std::fprintf(out_, "%s\n", text.c_str());
  }
  std::fflush(out_);
}

void ProgressLine::finish() {
  if (tty_ && !current_.empty()) {
    std::fputc('\n', out_);
    std::fflush(out_);
  }
  current_.clear();
}

int terminal_width(FILE* out) {
  winsize ws{};
  if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

std::string bar(double done, double total, int width) {
  const double fraction = total > 0 ? std::clamp(done / total, 0.0, 1.0) : 0.0;
  const int filled = static_cast<int>(std::floor(fraction * width));
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
}

namespace {

int64_t seconds(const google::protobuf::Duration& d) { return d.seconds(); }

std::string cut(std::string line, int width) {
  if (width > 1 && static_cast<int>(line.size()) >= width) line.resize(static_cast<size_t>(width) - 1);
  return line;
}

}  // namespace

std::string train_progress_line(const cpm::v1::TrainProgress& p, int width) {
  char buf[256];
  const double percent = p.max_steps() > 0 ? 100.0 * p.step() / p.max_steps() : 0;
  std::snprintf(buf, sizeof buf, "step %lld/%lld %s %3.0f%%  loss %.4f  lr %.3g  %.0f tok/s  %s elapsed  ETA %s",
                static_cast<long long>(p.step()), static_cast<long long>(p.max_steps()),
                bar(static_cast<double>(p.step()), static_cast<double>(p.max_steps()), 20).c_str(), percent,
                p.loss(), p.learning_rate(), p.tokens_per_second(), human_duration(seconds(p.elapsed())).c_str(),
                p.step() >= p.max_steps() && p.max_steps() > 0 ? "0s" : human_duration(seconds(p.eta())).c_str());
  return cut(buf, width);
}

std::string upload_progress_line(int64_t sent, int64_t total, double elapsed, int width) {
  const double rate = elapsed > 0 ? static_cast<double>(sent) / elapsed : 0;
  const double percent = total > 0 ? 100.0 * static_cast<double>(sent) / static_cast<double>(total) : 100;
  const std::string eta =
      rate > 0 ? human_duration(static_cast<int64_t>(static_cast<double>(total - sent) / rate)) : "-";
  char buf[256];
  std::snprintf(buf, sizeof buf, "uploading %s %3.0f%%  %s/%s  %s/s  ETA %s",
                bar(static_cast<double>(sent), static_cast<double>(total), 20).c_str(), percent,
                human_bytes(sent).c_str(), human_bytes(total).c_str(),
                human_bytes(static_cast<int64_t>(rate)).c_str(), eta.c_str());
  return cut(buf, width);
}

}  // namespace cpmctl
