// SPDX-License-Identifier: Apache-2.0
#include "serving_metrics.h"

#include <chrono>

#include "common/device.h"
#include "grpc_code_name.h"
#include "model_host.h"
#include "runtime/engine_metrics.h"

namespace cpm::server {

struct ServingMetrics::Families {
  Family<Counter>* requests;
  Family<Histogram>* e2e;
  Family<Histogram>* queue;
  Family<Histogram>* prefill;
  Family<Histogram>* decode;
  Family<Histogram>* first_token;
  Family<Histogram>* per_output_token;
  Family<Counter>* prompt_tokens;
  Family<Counter>* generation_tokens;
  Family<Histogram>* batch_size;
  Family<Gauge>* queue_depth;
  Family<Gauge>* queue_capacity;
  Family<Gauge>* running;
  Family<Counter>* adapter_loads;
  Family<Histogram>* adapter_load_seconds;
  Family<Counter>* adapter_evictions;
  Family<Counter>* adapter_unloads;
  Family<Gauge>* adapters_loaded;
  Family<Gauge>* adapter_device_bytes;
  Family<Gauge>* adapter_budget_bytes;
  Family<Gauge>* gpu_allocated;
  Family<Gauge>* gpu_reserved;
  Family<Gauge>* gpu_total;
};

namespace {

using core::runtime::AdapterEvent;
using core::runtime::BatchEvent;
using core::runtime::RequestEvent;

double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

const char* code_name(absl::StatusCode code) {
  return grpc_code_name(static_cast<grpc::StatusCode>(code));  // absl and gRPC share the numbers
}

class Observer final : public core::runtime::EngineObserver {
 public:
  // A copy: the families live in the registry, which outlives the engine; this object need not.
  explicit Observer(const ServingMetrics::Families& f) : f_(f) {}

  void on_request(const RequestEvent& e) override {
    if (e.code != absl::StatusCode::kOk) return;  // counted by code in cpm_ocr_requests_total
    f_.e2e->with({e.adapter}).observe(seconds(e.timings.total));
    f_.queue->with({e.adapter}).observe(seconds(e.timings.queue));
    f_.prefill->with({e.adapter}).observe(seconds(e.timings.prefill));
    f_.decode->with({e.adapter}).observe(seconds(e.timings.decode));
    f_.first_token->with({e.adapter}).observe(seconds(e.time_to_first_token));
    f_.per_output_token->with({e.adapter}).observe(seconds(e.time_per_output_token));
    f_.prompt_tokens->with({e.adapter}).inc(e.prompt_tokens);
    f_.generation_tokens->with({e.adapter}).inc(e.generated_tokens);
  }

  void on_batch(const BatchEvent& e) override { f_.batch_size->with({}).observe(e.size); }

  void on_adapter(const AdapterEvent& e) override {
    switch (e.kind) {
      case AdapterEvent::Kind::kLoaded:
        f_.adapter_loads->with({e.name, code_name(e.code)}).inc();
        f_.adapter_load_seconds->with({e.name}).observe(seconds(e.load_duration));
        break;
      case AdapterEvent::Kind::kLoadFailed:
        f_.adapter_loads->with({e.name, code_name(e.code)}).inc();
        break;
      case AdapterEvent::Kind::kEvicted:
        f_.adapter_evictions->with({e.name}).inc();
        break;
      case AdapterEvent::Kind::kUnloaded:
        f_.adapter_unloads->with({e.name}).inc();
        break;
    }
  }

 private:
  const ServingMetrics::Families f_;
};

}  // namespace

std::vector<double> vllm_request_time_buckets() {
  return {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
          30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
}

std::vector<double> vllm_time_to_first_token_buckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
          1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
}

std::vector<double> vllm_time_per_output_token_buckets() {
  return {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
          0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
}

ServingMetrics::ServingMetrics(Registry& r)
    : registry_(r), families_(std::make_unique<Families>()) {
  Families& f = *families_;
  const std::vector<std::string> adapter = {"adapter"};
  f.requests = &r.counter("cpm_ocr_requests_total",
                          "OCR calls answered, by gRPC method, adapter and status code.",
                          {"method", "adapter", "code"});
  f.e2e = &r.histogram("cpm_ocr_e2e_request_latency_seconds",
                       "Arrival to answer of successful OCR requests, in seconds.", adapter,
                       vllm_request_time_buckets());
  f.queue = &r.histogram("cpm_ocr_request_queue_time_seconds",
                         "Time successful OCR requests waited for a batch, in seconds.", adapter,
                         vllm_request_time_buckets());
  f.prefill = &r.histogram(
      "cpm_ocr_request_prefill_time_seconds",
      "Image preparation, vision tower and prompt embedding of successful OCR requests, in "
      "seconds.",
      adapter, vllm_request_time_buckets());
  f.decode = &r.histogram("cpm_ocr_request_decode_time_seconds",
                          "Token generation of successful OCR requests' batches, in seconds.",
                          adapter, vllm_request_time_buckets());
  f.first_token = &r.histogram(
      "cpm_ocr_time_to_first_token_seconds",
      "Arrival to the first token handed to the client, of successful OCR requests, in seconds.",
      adapter, vllm_time_to_first_token_buckets());
  f.per_output_token =
      &r.histogram("cpm_ocr_time_per_output_token_seconds",
                   "Decode time per generated token of successful OCR requests, in seconds.",
                   adapter, vllm_time_per_output_token_buckets());
  f.prompt_tokens = &r.counter("cpm_ocr_prompt_tokens_total",
                               "Prompt tokens (image placeholders included) of successful OCR "
                               "requests.",
                               adapter);
  f.generation_tokens = &r.counter("cpm_ocr_generation_tokens_total",
                                   "Tokens generated for successful OCR requests.", adapter);
  f.batch_size = &r.histogram("cpm_ocr_batch_size",
                              "Requests per batched generation (one adapter, one decoding kind).",
                              {}, {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024});
  f.queue_depth = &r.gauge("cpm_ocr_queue_depth",
                           "OCR requests admitted and waiting: being prepared or queued.");
  f.queue_capacity = &r.gauge("cpm_ocr_queue_capacity",
                              "max_queue: admitted OCR requests beyond which new ones are refused.");
  f.running = &r.gauge("cpm_ocr_requests_running", "OCR requests in the batch on the device now.");
  f.adapter_loads =
      &r.counter("cpm_adapter_loads_total", "Adapter loads finished, by adapter and status code.",
                 {"adapter", "code"});
  f.adapter_load_seconds = &r.histogram(
      "cpm_adapter_load_seconds",
      "Successful adapter loads: reading the PEFT files and putting them on the device, in "
      "seconds.",
      adapter, {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250});
  f.adapter_evictions =
      &r.counter("cpm_adapter_evictions_total",
                 "Adapters evicted from the device to make room for another.", adapter);
  f.adapter_unloads = &r.counter("cpm_adapter_unloads_total",
                                 "Adapters unloaded from the device on request.", adapter);
  f.adapters_loaded = &r.gauge("cpm_adapters_loaded", "Adapters on the device.");
  f.adapter_device_bytes =
      &r.gauge("cpm_adapter_device_bytes", "Device bytes held by loaded adapters' own tensors.");
  f.adapter_budget_bytes = &r.gauge("cpm_adapter_device_budget_bytes",
                                    "Device bytes loaded adapters may hold together; 0: no limit.");
  f.gpu_allocated =
      &r.gauge("cpm_gpu_memory_allocated_bytes",
               "CUDA memory held by the model's tensors (caching allocator).", {"device"});
  f.gpu_reserved = &r.gauge("cpm_gpu_memory_reserved_bytes",
                            "CUDA memory reserved by the caching allocator.", {"device"});
  f.gpu_total = &r.gauge("cpm_gpu_memory_total_bytes", "The CUDA device's memory capacity.", {"device"});
  observer_ = std::make_shared<Observer>(*families_);
}

ServingMetrics::~ServingMetrics() = default;

std::shared_ptr<core::runtime::EngineObserver> ServingMetrics::observer() const {
  return observer_;
}

void ServingMetrics::watch(const ModelHost& host) {
  Families& f = *families_;
  registry_.on_collect([&f, &host] {
    const std::optional<core::runtime::EngineStats> stats = host.stats();
    if (!stats) return;  // no engine yet: the gauges have no series
    f.queue_depth->with({}).set(static_cast<double>(stats->preparing + stats->queued));
    f.queue_capacity->with({}).set(static_cast<double>(stats->max_queue));
    f.running->with({}).set(static_cast<double>(stats->running));
    f.adapters_loaded->with({}).set(static_cast<double>(stats->adapters_loaded));
    f.adapter_device_bytes->with({}).set(static_cast<double>(stats->adapter_device_bytes));
    f.adapter_budget_bytes->with({}).set(static_cast<double>(stats->adapter_budget_bytes));
    const std::string device = host.status().device;
    if (device.rfind("cuda:", 0) == 0) {
      const core::CudaMemory memory = core::cuda_memory(std::stoi(device.substr(5)));
      f.gpu_allocated->with({device}).set(static_cast<double>(memory.allocated_bytes));
      f.gpu_reserved->with({device}).set(static_cast<double>(memory.reserved_bytes));
      f.gpu_total->with({device}).set(static_cast<double>(memory.total_bytes));
    }
  });
}

void ServingMetrics::count_request(const std::string& method, const std::string& adapter,
                                   grpc::StatusCode code) {
  families_->requests->with({method, adapter, grpc_code_name(code)}).inc();
}

}  // namespace cpm::server
