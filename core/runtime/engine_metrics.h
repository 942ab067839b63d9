// SPDX-License-Identifier: Apache-2.0
//
// What the engine tells the metrics exporter, without any Prometheus code: events as they happen
// (for histograms and counters: EngineObserver) and a snapshot of its state (for gauges and
// totals: EngineStats). The server turns both into series with an `adapter` label.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "runtime/decoding.h"
#include "runtime/ocr_request.h"

namespace cpm::core::runtime {

// One finished OCR request, whatever its outcome.
struct RequestEvent {
  std::string adapter;  // empty: the base model
  absl::StatusCode code = absl::StatusCode::kOk;
  // OK only: the timings and counts of the result. Others have timings.total alone.
  OcrTimings timings;
  int prompt_tokens = 0;
  int generated_tokens = 0;
  int batch_size = 0;
  // OK only: arrival to the first token handed to the client, and decode time per generated
  // token. The batched generation returns all tokens at once, so the first token is handed over
  // when the request's generation ends.
  std::chrono::nanoseconds time_to_first_token{0};
  std::chrono::nanoseconds time_per_output_token{0};
};

// The requests of one decoding kind in one engine cycle, run on the engine thread: one batched
// generation over every adapter's rows, except beam search (one request at a time) and adapters
// that cannot be mixed (runtime/ocr_batch.h).
struct BatchEvent {
  std::map<std::string, int> adapters;  // rows per adapter ("": the base model)
  DecodeKind kind = DecodeKind::kGreedy;
  int size = 0;
  std::chrono::nanoseconds duration{0};
};

struct AdapterEvent {
  enum class Kind { kLoaded, kLoadFailed, kEvicted, kUnloaded };
  Kind kind = Kind::kLoaded;
  std::string name;
  // kLoaded / kLoadFailed: reading the files plus putting them on the device.
  std::chrono::nanoseconds load_duration{0};
  absl::StatusCode code = absl::StatusCode::kOk;  // kLoadFailed: why
};

// Receives the engine's events. Called on the engine thread, and on the threads where requests
// fail early (submit's caller, the preparation pool): implementations must be thread-safe, fast
// and must not call back into the engine.
class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  virtual void on_request(const RequestEvent&) {}
  virtual void on_batch(const BatchEvent&) {}
  virtual void on_adapter(const AdapterEvent&) {}
  virtual void on_background_step() {}
};

enum class EngineState { kCreated, kRunning, kStopping, kStopped };

// A consistent snapshot of the engine's gauges and totals.
struct EngineStats {
  EngineState state = EngineState::kCreated;
  int64_t preparing = 0;         // admitted, being decoded / tokenized off the engine thread
  int64_t queued = 0;            // prepared, waiting for a batch (or for their adapter to load)
  int64_t running = 0;           // in the batch on the device now
  int64_t max_queue = 0;         // admitted requests beyond which submit() answers RESOURCE_EXHAUSTED
  bool background_task = false;  // a training job is attached

  // Totals since start.
  std::map<std::pair<std::string, absl::StatusCode>, int64_t> requests;  // by (adapter, code)
  int64_t batches = 0;
  int64_t batched_requests = 0;  // sum of batch sizes
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t background_steps = 0;
  int64_t adapter_loads = 0;
  int64_t adapter_load_failures = 0;
  int64_t adapter_evictions = 0;

  int64_t adapters_loaded = 0;
  int64_t adapter_device_bytes = 0;
  int64_t adapter_budget_bytes = 0;  // 0: no limit
};

}  // namespace cpm::core::runtime
