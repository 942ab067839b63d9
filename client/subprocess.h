// SPDX-License-Identifier: Apache-2.0
//
// Runs a helper program (latex, dvipng) with a time limit. Thread-safe: each call is independent.
#pragma once

#include <string>
#include <vector>

namespace cpmctl {

struct ProcessResult {
  bool started = false;    // false: see `error` (program not found, cannot spawn)
  bool timed_out = false;  // killed after the time limit
  int exit_code = -1;      // when it exited normally; -1 after a signal
  std::string error;
};

// Runs argv[0] (searched in PATH) in `cwd` with stdin from /dev/null and stdout + stderr into
// `output_file`. After `timeout_seconds` the program and its children are killed.
ProcessResult run_process(const std::vector<std::string>& argv, const std::string& cwd,
                          const std::string& output_file, double timeout_seconds);

// The full path of `program` in PATH, or empty.
std::string find_in_path(const std::string& program);

}  // namespace cpmctl
