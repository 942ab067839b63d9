// SPDX-License-Identifier: Apache-2.0
#include "metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

namespace cpm::server {
namespace {

using ::testing::HasSubstr;

TEST(Metrics, RendersCountersAndGaugesWithLabels) {
  Registry r;
  auto& requests = r.counter("cpm_requests_total", "Requests.", {"method", "code"});
  requests.with({"Recognize", "OK"}).inc();
  requests.with({"Recognize", "OK"}).inc(2);
  requests.with({"Recognize", "NOT_FOUND"}).inc();
  r.gauge("cpm_queue_depth", "Waiting requests.").with({}).set(3.5);
  EXPECT_EQ(r.render(),
            "# HELP cpm_requests_total Requests.\n"
            "# TYPE cpm_requests_total counter\n"
            "cpm_requests_total{method=\"Recognize\",code=\"NOT_FOUND\"} 1\n"
            "cpm_requests_total{method=\"Recognize\",code=\"OK\"} 3\n"
            "# HELP cpm_queue_depth Waiting requests.\n"
            "# TYPE cpm_queue_depth gauge\n"
            "cpm_queue_depth 3.5\n");
}

TEST(Metrics, HistogramBucketsAreCumulativeWithInf) {
  Registry r;
  auto& h = r.histogram("cpm_latency_seconds", "Latency.", {"adapter"}, {0.1, 1.0});
  for (double v : {0.05, 0.1, 0.5, 3.0}) h.with({"a"}).observe(v);
  EXPECT_EQ(r.render(),
            "# HELP cpm_latency_seconds Latency.\n"
            "# TYPE cpm_latency_seconds histogram\n"
            "cpm_latency_seconds_bucket{adapter=\"a\",le=\"0.1\"} 2\n"
            "cpm_latency_seconds_bucket{adapter=\"a\",le=\"1\"} 3\n"
            "cpm_latency_seconds_bucket{adapter=\"a\",le=\"+Inf\"} 4\n"
            "cpm_latency_seconds_sum{adapter=\"a\"} 3.65\n"
            "cpm_latency_seconds_count{adapter=\"a\"} 4\n");
}

TEST(Metrics, EscapesLabelValuesAndHelp) {
  Registry r;
  r.gauge("g", "line one\nback\\slash", {"path"}).with({"a\"b\\c\nd"}).set(1);
  const std::string text = r.render();
  EXPECT_THAT(text, HasSubstr("# HELP g line one\\nback\\\\slash\n"));
  EXPECT_THAT(text, HasSubstr("g{path=\"a\\\"b\\\\c\\nd\"} 1\n"));
}

TEST(Metrics, CollectHooksRunBeforeEachRender) {
  Registry r;
  Gauge& g = r.gauge("g", "h").with({});
  int calls = 0;
  r.on_collect([&] { g.set(++calls); });
  EXPECT_THAT(r.render(), HasSubstr("g 1\n"));
  EXPECT_THAT(r.render(), HasSubstr("g 2\n"));
}

TEST(Metrics, RejectsMisuse) {
  Registry r;
  auto& c = r.counter("c_total", "h", {"a"});
  EXPECT_THROW(c.with({}), std::invalid_argument);
  EXPECT_THROW(c.with({"x"}).inc(-1), std::invalid_argument);
  EXPECT_THROW(r.histogram("h", "h", {}, {1.0, 1.0}), std::invalid_argument);
}

TEST(Metrics, CountsFromManyThreadsWithoutLoss) {
  Registry r;
  auto& c = r.counter("c_total", "h", {"t"});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) c.with({"x"}).inc();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.with({"x"}).value(), 40000);
}

}  // namespace
}  // namespace cpm::server
