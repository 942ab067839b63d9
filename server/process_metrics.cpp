// SPDX-License-Identifier: Apache-2.0
#include "process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace cpm::server {
namespace {

double boot_time_seconds() {
  std::ifstream in("/proc/stat");
  std::string key;
  while (in >> key) {
    if (key == "btime") {
      double t = 0;
      in >> t;
      return t;
    }
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

}  // namespace

ProcessStats read_process_stats() {
  ProcessStats s;
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (std::getline(in, line)) {
    // Field 2 (comm) may hold spaces; everything after the last ')' is space-separated, starting
    // with field 3 (state).
    const auto close = line.rfind(')');
    if (close != std::string::npos) {
      std::istringstream rest(line.substr(close + 2));
      std::vector<std::string> f{std::istream_iterator<std::string>(rest), {}};
      // Indices below are the man page's field numbers minus 3.
      if (f.size() > 21) {
        const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
        s.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / ticks;  // utime, stime
        s.threads = std::stoll(f[17]);
        s.start_time_seconds = boot_time_seconds() + std::stod(f[19]) / ticks;
        s.virtual_bytes = std::stoll(f[20]);
        s.resident_bytes = std::stoll(f[21]) * sysconf(_SC_PAGESIZE);
      }
    }
  }
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++s.open_fds;
  }
  struct rlimit lim {};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) s.max_fds = static_cast<int64_t>(lim.rlim_cur);
  return s;
}

void register_process_metrics(Registry& registry) {
  Counter& cpu =
      registry.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.")
          .with({});
  Gauge& rss =
      registry.gauge("process_resident_memory_bytes", "Resident memory size in bytes.").with({});
  Gauge& vsz =
      registry.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.").with({});
  Gauge& fds = registry.gauge("process_open_fds", "Number of open file descriptors.").with({});
  Gauge& max_fds =
      registry.gauge("process_max_fds", "Maximum number of open file descriptors.").with({});
  Gauge& threads = registry.gauge("process_threads", "Number of OS threads in the process.").with({});
  Gauge& start = registry
                     .gauge("process_start_time_seconds",
                            "Start time of the process since unix epoch in seconds.")
                     .with({});
  registry.on_collect([&] {
    const ProcessStats s = read_process_stats();
    cpu.set(s.cpu_seconds);
    rss.set(static_cast<double>(s.resident_bytes));
    vsz.set(static_cast<double>(s.virtual_bytes));
    fds.set(static_cast<double>(s.open_fds));
    max_fds.set(static_cast<double>(s.max_fds));
    threads.set(static_cast<double>(s.threads));
    start.set(s.start_time_seconds);
  });
}

}  // namespace cpm::server
