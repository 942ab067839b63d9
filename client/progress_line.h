// SPDX-License-Identifier: Apache-2.0
//
// A status line redrawn in place on a terminal ("\r", then erase to the end of the line), with
// other lines printed above it; on a pipe or file each update is a line of its own, so logs stay
// readable. Not thread-safe: one owner prints.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "cpm/v1/training.pb.h"

namespace cpmctl {

class ProgressLine {
 public:
  // `tty`: redraw in place (usually isatty(fileno(out))).
  ProgressLine(FILE* out, bool tty);
  ~ProgressLine();  // ends a line left open

  void update(const std::string& line);
  // `text` on a line of its own, then the status line again.
  void print_above(const std::string& text);
  // Leaves the current status line as it is and moves past it.
  void finish();

 private:
  FILE* out_;
  bool tty_;
  std::string current_;  // what the open line shows; empty: no open line
};

// The terminal's width in columns, or 80.
int terminal_width(FILE* out);

// "[#####.....]" of `width` cells for done/total.
std::string bar(double done, double total, int width);

// The training progress line: "step 120/1000 [###...] 12%  loss 1.2345  lr 9.87e-07  412 tok/s
// 1m 2s elapsed  ETA 7m 35s", cut to `width` columns (a wrapped line cannot be redrawn); 0: whole.
std::string train_progress_line(const cpm::v1::TrainProgress& p, int width);

// The upload line: "uploading [###...] 37%  12.1 MiB/32.6 MiB  5.1 MiB/s  ETA 4s".
std::string upload_progress_line(int64_t sent, int64_t total, double seconds, int width);

}  // namespace cpmctl
