// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>

#include "metrics.h"

namespace cpm::server {

// This process as /proc sees it.
struct ProcessStats {
  double cpu_seconds = 0;        // user + system
  int64_t resident_bytes = 0;
  int64_t virtual_bytes = 0;
  int64_t threads = 0;
  int64_t open_fds = 0;
  int64_t max_fds = 0;
  double start_time_seconds = 0;  // since the Unix epoch
};

// Reads /proc/self/{stat,fd,limits}. Fields it cannot read stay 0.
ProcessStats read_process_stats();

// Registers the standard process_* families (as the official Prometheus clients name them, plus
// process_threads) and refreshes them on every scrape.
void register_process_metrics(Registry& registry);

}  // namespace cpm::server
