// SPDX-License-Identifier: Apache-2.0
#include "process_metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

namespace cpm::server {
namespace {

TEST(ProcessMetrics, ReadsThisProcess) {
  std::thread extra([] { std::this_thread::sleep_for(std::chrono::milliseconds(200)); });
  const ProcessStats s = read_process_stats();
  extra.join();
  EXPECT_GE(s.threads, 2);
  EXPECT_GT(s.resident_bytes, 1 << 20);
  EXPECT_GE(s.virtual_bytes, s.resident_bytes);
  EXPECT_GE(s.open_fds, 3);
  EXPECT_GE(s.max_fds, s.open_fds);
  const double now = std::chrono::duration<double>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  EXPECT_LE(s.start_time_seconds, now + 2);
  EXPECT_GT(s.start_time_seconds, now - 3600);
}

TEST(ProcessMetrics, CpuTimeGrowsWithWork) {
  const double before = read_process_stats().cpu_seconds;
  volatile double x = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  while (std::chrono::steady_clock::now() < until) x = x + 1;
  EXPECT_GT(read_process_stats().cpu_seconds, before);
}

TEST(ProcessMetrics, RegistersTheStandardFamilies) {
  Registry r;
  register_process_metrics(r);
  const std::string text = r.render();
  for (const char* name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                           "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                           "process_threads", "process_start_time_seconds"}) {
    EXPECT_THAT(text, ::testing::HasSubstr(std::string("\n") + name + " ")) << name;
  }
}

}  // namespace
}  // namespace cpm::server
