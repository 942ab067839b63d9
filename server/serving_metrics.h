// SPDX-License-Identifier: Apache-2.0
//
// The OCR and adapter series of /metrics, named as vLLM's (base units, `_total` on counters, no
// colons, our `cpm_` prefix), so dashboards built for vLLM carry over:
//   cpm_ocr_requests_total{method,adapter,code}           every answered Ocr call
//   successful requests, with vLLM's bucket boundaries:
//     cpm_ocr_e2e_request_latency_seconds{adapter}, cpm_ocr_request_queue_time_seconds{adapter},
//     cpm_ocr_request_prefill_time_seconds{adapter}, cpm_ocr_request_decode_time_seconds{adapter},
//     cpm_ocr_time_to_first_token_seconds{adapter}, cpm_ocr_time_per_output_token_seconds{adapter}
//   cpm_ocr_prompt_tokens_total{adapter}, cpm_ocr_generation_tokens_total{adapter}
//   cpm_ocr_batch_size                                    requests per batched generation
//   cpm_ocr_queue_depth, cpm_ocr_requests_running         gauges, read from the engine per scrape
//   cpm_adapter_loads_total{adapter,code}, cpm_adapter_load_seconds{adapter},
//   cpm_adapter_evictions_total{adapter}, cpm_adapter_unloads_total{adapter},
//   cpm_adapters_loaded, cpm_adapter_device_bytes, cpm_adapter_device_budget_bytes
//   cpm_gpu_memory_allocated_bytes{device}, cpm_gpu_memory_reserved_bytes{device}   CUDA only
// The `adapter` label is empty for the base model.
#pragma once

#include <grpcpp/support/status.h>

#include <memory>
#include <string>

#include "metrics.h"

namespace cpm::core::runtime {
class EngineObserver;
}  // namespace cpm::core::runtime

namespace cpm::server {

class ModelHost;

// Registers the families above in `registry` (which must outlive this). Thread-safe.
class ServingMetrics {
 public:
  explicit ServingMetrics(Registry& registry);
  ~ServingMetrics();
  ServingMetrics(const ServingMetrics&) = delete;
  ServingMetrics& operator=(const ServingMetrics&) = delete;

  // Records the engine's events; give it to the engine's options. It may outlive this object,
  // not the registry.
  std::shared_ptr<core::runtime::EngineObserver> observer() const;
  // Refreshes the gauges from `host` before each scrape; `host` must outlive the registry's use.
  void watch(const ModelHost& host);
  // One answered Ocr call. `adapter` is already a label value (see ocr_service.cpp).
  void count_request(const std::string& method, const std::string& adapter, grpc::StatusCode code);

  struct Families;

 private:
  Registry& registry_;
  std::unique_ptr<Families> families_;
  std::shared_ptr<core::runtime::EngineObserver> observer_;
};

// vLLM's bucket boundaries (vllm/v1/metrics/loggers.py), in seconds.
std::vector<double> vllm_request_time_buckets();
std::vector<double> vllm_time_to_first_token_buckets();
std::vector<double> vllm_time_per_output_token_buckets();

}  // namespace cpm::server
