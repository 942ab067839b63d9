// SPDX-License-Identifier: Apache-2.0
// The /metrics reader: the exposition parser, histogram quantiles and the summary.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "metrics_command.h"
#include "metrics_summary.h"
#include "prometheus_text.h"

namespace cpmctl {
namespace {

using ::testing::HasSubstr;

// A scrape as cpmd writes it (names and labels from server/*metrics.cpp).
const char* kScrape = R"(# HELP grpc_server_started_total RPCs started.
# TYPE grpc_server_started_total counter
grpc_server_started_total{grpc_service="cpm.v1.Ocr",grpc_method="Recognize",grpc_type="unary"} 40
grpc_server_started_total{grpc_service="cpm.v1.Admin",grpc_method="GetInfo",grpc_type="unary"} 0
grpc_server_handled_total{grpc_service="cpm.v1.Ocr",grpc_method="Recognize",grpc_type="unary",grpc_code="OK"} 38
grpc_server_handled_total{grpc_service="cpm.v1.Ocr",grpc_method="Recognize",grpc_type="unary",grpc_code="INVALID_ARGUMENT"} 2
grpc_server_handling_seconds_bucket{grpc_service="cpm.v1.Ocr",grpc_method="Recognize",grpc_type="unary",le="0.1"} 10
grpc_server_handling_seconds_bucket{grpc_service="cpm.v1.Ocr",grpc_method="Recognize",grpc_type="unary",le="0.5"} 30
grpc_server_handling_seconds_bucket{grpc_service="cpm.v1.Ocr",grpc_method="Recognize",grpc_type="unary",le="1"} 40
grpc_server_handling_seconds_bucket{grpc_service="cpm.v1.Ocr",grpc_method="Recognize",grpc_type="unary",le="+Inf"} 40
grpc_server_handling_seconds_sum{grpc_service="cpm.v1.Ocr",grpc_method="Recognize",grpc_type="unary"} 12
grpc_server_handling_seconds_count{grpc_service="cpm.v1.Ocr",grpc_method="Recognize",grpc_type="unary"} 40
cpm_ocr_requests_total{adapter="",code="OK"} 30
cpm_ocr_requests_total{adapter="latex",code="OK"} 8
cpm_ocr_requests_total{adapter="latex",code="INVALID_ARGUMENT"} 2
cpm_ocr_time_to_first_token_seconds_bucket{adapter="",le="0.05"} 5
cpm_ocr_time_to_first_token_seconds_bucket{adapter="",le="+Inf"} 10
cpm_ocr_time_to_first_token_seconds_sum{adapter=""} 2.5
cpm_ocr_time_to_first_token_seconds_count{adapter=""} 10
cpm_ocr_queue_depth 3
cpm_ocr_queue_capacity 256
cpm_ocr_requests_running 2
cpm_ocr_prompt_tokens_total 4000
cpm_ocr_generation_tokens_total 900
cpm_adapters_loaded 1
cpm_adapter_device_bytes 1048576
cpm_adapter_device_budget_bytes 0
cpm_adapter_loads_total 2
cpm_adapter_unloads_total 1
cpm_adapter_evictions_total 0
cpm_gpu_memory_allocated_bytes{device="cuda:0"} 2147483648
cpm_gpu_memory_reserved_bytes{device="cuda:0"} 3221225472
cpm_gpu_memory_total_bytes{device="cuda:0"} 150000000000
cpm_train_jobs{state="running"} 1
cpm_train_jobs{state="succeeded"} 3
cpm_train_step{train_job="j1"} 120
cpm_train_max_steps{train_job="j1"} 1000
cpm_train_loss{train_job="j1"} 1.25
cpm_train_learning_rate{train_job="j1"} 1e-06
cpm_train_tokens_per_second{train_job="j1"} 412.5
process_resident_memory_bytes 1.5e+09
process_cpu_seconds_total 12.5 1700000000000
process_threads 31
process_start_time_seconds 0
label_escapes{path="a\"b\\c\nd"} 1
)";

TEST(PrometheusText, ParsesSamplesLabelsEscapesAndTimestamps) {
  auto samples = parse_prometheus_text(kScrape);
  ASSERT_TRUE(samples.ok()) << samples.status();
  const Sample& escaped = samples->back();
  EXPECT_EQ(escaped.name, "label_escapes");
  EXPECT_EQ(escaped.labels.at("path"), "a\"b\\c\nd");
  bool saw_cpu = false;
  for (const Sample& s : *samples) {
    if (s.name == "process_cpu_seconds_total") {
      EXPECT_EQ(s.value, 12.5);  // the timestamp after it is not the value
      saw_cpu = true;
    }
  }
  EXPECT_TRUE(saw_cpu);
  EXPECT_THAT(parse_prometheus_text("ok 1\nbroken{a=\"x} 1\n").status().message(), HasSubstr("line 2"));
  EXPECT_THAT(parse_prometheus_text("no_value\n").status().message(), HasSubstr("line 1"));
  EXPECT_THAT(parse_prometheus_text("x one\n").status().message(), HasSubstr("bad value 'one'"));
}

TEST(PrometheusText, SumsByLabel) {
  auto samples = parse_prometheus_text(kScrape);
  ASSERT_TRUE(samples.ok());
  const auto by_adapter = sum_by(*samples, "cpm_ocr_requests_total", {"adapter"});
  ASSERT_EQ(by_adapter.size(), 2u);
  EXPECT_EQ(by_adapter.at({""}), 30);
  EXPECT_EQ(by_adapter.at({"latex"}), 10);
  EXPECT_EQ(sum_by(*samples, "cpm_ocr_requests_total", {}, {{"code", "OK"}}).at({}), 38);
}

// Values as PromQL's histogram_quantile() gives them for the same buckets.
TEST(PrometheusText, QuantilesInterpolateInsideTheBucket) {
  HistogramData h;
  h.buckets = {{0.1, 10}, {0.5, 30}, {1.0, 40}, {INFINITY, 40}};
  EXPECT_DOUBLE_EQ(*histogram_quantile(0.5, h), 0.3);
  EXPECT_DOUBLE_EQ(*histogram_quantile(0.99, h), 0.98);
  EXPECT_DOUBLE_EQ(*histogram_quantile(0.1, h), 0.04);
  // In the +Inf bucket: the highest finite bound.
  h.buckets = {{1.0, 5}, {INFINITY, 10}};
  EXPECT_DOUBLE_EQ(*histogram_quantile(0.9, h), 1.0);
  h.buckets = {{1.0, 0}, {INFINITY, 0}};
  EXPECT_FALSE(histogram_quantile(0.5, h).has_value());
}

TEST(MetricsSummary, HoldsRequestsLatencyQueueAdaptersGpuTrainingAndProcess) {
  auto samples = parse_prometheus_text(kScrape);
  ASSERT_TRUE(samples.ok());
  const auto j = summarize_metrics(*samples);
  const auto& grpc = j["requests"]["grpc"];
  ASSERT_EQ(grpc.size(), 1u);  // GetInfo never started: left out
  EXPECT_EQ(grpc[0]["method"], "cpm.v1.Ocr/Recognize");
  EXPECT_EQ(grpc[0]["started"], 40);
  EXPECT_EQ(grpc[0]["errors"], 2);
  EXPECT_DOUBLE_EQ(grpc[0]["latency_seconds"]["p50"].get<double>(), 0.3);
  EXPECT_DOUBLE_EQ(grpc[0]["latency_seconds"]["mean"].get<double>(), 0.3);
  EXPECT_EQ(j["requests"]["ocr"]["by_adapter"]["latex"], 10);
  EXPECT_DOUBLE_EQ(j["ocr_latency_seconds"]["time_to_first_token"]["p50"].get<double>(), 0.05);
  EXPECT_EQ(j["queue"]["depth"], 3);
  EXPECT_EQ(j["queue"]["capacity"], 256);
  EXPECT_EQ(j["adapters"]["loads"], 2);
  EXPECT_EQ(j["gpu_memory"][0]["device"], "cuda:0");
  EXPECT_EQ(j["gpu_memory"][0]["reserved_bytes"], 3221225472.0);
  EXPECT_EQ(j["training"]["jobs_by_state"]["succeeded"], 3);
  EXPECT_EQ(j["training"]["jobs"][0]["job"], "j1");
  EXPECT_EQ(j["training"]["jobs"][0]["step"], 120);
  EXPECT_EQ(j["process"]["threads"], 31);

  const std::string text = format_metrics_summary(j);
  EXPECT_THAT(text, HasSubstr("cpm.v1.Ocr/Recognize"));
  EXPECT_THAT(text, HasSubstr("p50 300.0 ms"));
  EXPECT_THAT(text, HasSubstr("queue     3 waiting of 256, 2 running"));
  EXPECT_THAT(text, HasSubstr("cuda:0: 2.0 GiB allocated, 3.0 GiB reserved"));
  EXPECT_THAT(text, HasSubstr("j1"));
  EXPECT_THAT(text, HasSubstr("step 120/1000"));
}

TEST(MetricsSummary, ADaemonWithoutAModelHasOnlyTheBasics) {
  auto samples = parse_prometheus_text("process_threads 4\n");
  ASSERT_TRUE(samples.ok());
  const auto j = summarize_metrics(*samples);
  EXPECT_FALSE(j.contains("queue"));
  EXPECT_FALSE(j.contains("adapters"));
  EXPECT_FALSE(j.contains("training"));
  EXPECT_THAT(format_metrics_summary(j), HasSubstr("none yet"));
}

TEST(MetricsFetchAddress, WildcardHostsBecomeTheServersHost) {
  EXPECT_EQ(metrics_fetch_address("127.0.0.1:9464", "gpu:50051"), "127.0.0.1:9464");
  EXPECT_EQ(metrics_fetch_address("0.0.0.0:9464", "gpu-node:50051"), "gpu-node:9464");
  EXPECT_EQ(metrics_fetch_address("[::]:9464", "10.0.0.7:50051"), "10.0.0.7:9464");
  EXPECT_EQ(metrics_fetch_address("0.0.0.0:9464", "[fd00::1]:50051"), "[fd00::1]:9464");
}

}  // namespace
}  // namespace cpmctl
