// SPDX-License-Identifier: Apache-2.0
#include "serving_metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>

#include "model_host.h"
#include "runtime/engine_metrics.h"

namespace cpm::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace runtime = core::runtime;
using namespace std::chrono_literals;

TEST(ServingMetrics, EngineEventsBecomeVllmStyleSeries) {
  Registry registry;
  ServingMetrics metrics(registry);
  const auto observer = metrics.observer();

  runtime::RequestEvent ok;
  ok.adapter = "ocr-v2";
  ok.timings.queue = 2ms;
  ok.timings.prefill = 30ms;
  ok.timings.decode = 400ms;
  ok.timings.total = 450ms;
  ok.prompt_tokens = 120;
  ok.generated_tokens = 10;
  ok.batch_size = 2;
  ok.time_to_first_token = 440ms;
  ok.time_per_output_token = 40ms;
  observer->on_request(ok);
  runtime::RequestEvent failed;
  failed.code = absl::StatusCode::kInvalidArgument;
  failed.timings.total = 1ms;
  observer->on_request(failed);  // no latency or token series for failures
  runtime::BatchEvent batch;
  batch.adapters = {{"ocr-v2", 2}};
  batch.size = 2;
  observer->on_batch(batch);
  const auto adapter_event = [&](runtime::AdapterEvent::Kind kind, const std::string& name) {
    runtime::AdapterEvent e;
    e.kind = kind;
    e.name = name;
    return e;
  };
  runtime::AdapterEvent loaded = adapter_event(runtime::AdapterEvent::Kind::kLoaded, "ocr-v2");
  loaded.load_duration = 1500ms;
  observer->on_adapter(loaded);
  runtime::AdapterEvent failed_load =
      adapter_event(runtime::AdapterEvent::Kind::kLoadFailed, "bad");
  failed_load.code = absl::StatusCode::kInvalidArgument;
  observer->on_adapter(failed_load);
  observer->on_adapter(adapter_event(runtime::AdapterEvent::Kind::kEvicted, "old"));
  observer->on_adapter(adapter_event(runtime::AdapterEvent::Kind::kUnloaded, "ocr-v2"));
  metrics.count_request("Recognize", "ocr-v2", grpc::StatusCode::OK);
  metrics.count_request("RecognizeStream", "", grpc::StatusCode::INVALID_ARGUMENT);

  const std::string text = registry.render();
  for (const char* line : {
           "cpm_ocr_requests_total{method=\"Recognize\",adapter=\"ocr-v2\",code=\"OK\"} 1\n",
           "cpm_ocr_requests_total{method=\"RecognizeStream\",adapter=\"\",code=\"INVALID_"
           "ARGUMENT\"} 1\n",
           "cpm_ocr_e2e_request_latency_seconds_bucket{adapter=\"ocr-v2\",le=\"0.3\"} 0\n",
           "cpm_ocr_e2e_request_latency_seconds_bucket{adapter=\"ocr-v2\",le=\"0.5\"} 1\n",
           "cpm_ocr_e2e_request_latency_seconds_bucket{adapter=\"ocr-v2\",le=\"7680\"} 1\n",
           "cpm_ocr_e2e_request_latency_seconds_count{adapter=\"ocr-v2\"} 1\n",
           "cpm_ocr_request_queue_time_seconds_sum{adapter=\"ocr-v2\"} 0.002\n",
           "cpm_ocr_request_prefill_time_seconds_sum{adapter=\"ocr-v2\"} 0.03\n",
           "cpm_ocr_request_decode_time_seconds_sum{adapter=\"ocr-v2\"} 0.4\n",
           "cpm_ocr_time_to_first_token_seconds_bucket{adapter=\"ocr-v2\",le=\"0.001\"} 0\n",
           "cpm_ocr_time_to_first_token_seconds_bucket{adapter=\"ocr-v2\",le=\"0.5\"} 1\n",
           "cpm_ocr_time_to_first_token_seconds_bucket{adapter=\"ocr-v2\",le=\"2560\"} 1\n",
           "cpm_ocr_time_per_output_token_seconds_bucket{adapter=\"ocr-v2\",le=\"0.025\"} 0\n",
           "cpm_ocr_time_per_output_token_seconds_bucket{adapter=\"ocr-v2\",le=\"0.05\"} 1\n",
           "cpm_ocr_time_per_output_token_seconds_bucket{adapter=\"ocr-v2\",le=\"80\"} 1\n",
           "cpm_ocr_prompt_tokens_total{adapter=\"ocr-v2\"} 120\n",
           "cpm_ocr_generation_tokens_total{adapter=\"ocr-v2\"} 10\n",
           "cpm_ocr_batch_size_bucket{le=\"2\"} 1\n",
           "cpm_adapter_loads_total{adapter=\"ocr-v2\",code=\"OK\"} 1\n",
           "cpm_adapter_loads_total{adapter=\"bad\",code=\"INVALID_ARGUMENT\"} 1\n",
           "cpm_adapter_load_seconds_sum{adapter=\"ocr-v2\"} 1.5\n",
           "cpm_adapter_evictions_total{adapter=\"old\"} 1\n",
           "cpm_adapter_unloads_total{adapter=\"ocr-v2\"} 1\n",
           "# TYPE cpm_gpu_memory_allocated_bytes gauge\n",
           "# TYPE cpm_gpu_memory_reserved_bytes gauge\n",
           "# TYPE cpm_gpu_memory_total_bytes gauge\n",
       }) {
    EXPECT_THAT(text, HasSubstr(line));
  }
  EXPECT_THAT(text, Not(HasSubstr("adapter_load_seconds_count{adapter=\"bad\"}")));
  EXPECT_THAT(text, Not(HasSubstr("e2e_request_latency_seconds_count{adapter=\"\"}")));
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    const std::string name = line.substr(0, line.find_first_of("{ "));
    EXPECT_EQ(name.find(':'), std::string::npos) << name;
  }
}

TEST(ServingMetrics, GaugesAppearOnceAnEngineRuns) {
  Registry registry;
  ServingMetrics metrics(registry);
  auto host = ModelHost::create(DaemonConfig{}, metrics.observer());  // no --model
  ASSERT_TRUE(host.ok()) << host.status();
  metrics.watch(**host);
  const std::string text = registry.render();
  EXPECT_THAT(text, HasSubstr("# TYPE cpm_ocr_queue_depth gauge\n"));
  EXPECT_THAT(text, Not(HasSubstr("\ncpm_ocr_queue_depth ")));
}

}  // namespace
}  // namespace cpm::server
