// SPDX-License-Identifier: Apache-2.0
//
// The GPU owner. One engine thread owns the model and every tensor made from it (the base weights,
// the adapters' LoRA matrices and module copies, activations, KV caches) and runs all the tensor
// work: OCR batches, adapter loads, and the steps of a training job. Everything else talks to it
// through the thread-safe methods below, which only check arguments, enqueue work and return a
// future or invoke a callback; none of them touches a tensor.
//
// OCR request path:
//   submit()       caller's thread: options checked, admission against max_queue (else
//                  RESOURCE_EXHAUSTED at once), adapter known (else NOT_FOUND)
//   preparation    worker pool: image decoded and sliced, prompt built (INVALID_ARGUMENT here)
//   queue          waits for the engine; a cancelled request leaves at once (CANCELLED), an expired
//                  one when the engine next looks (DEADLINE_EXCEEDED); neither is ever run
//   engine cycle   up to max_batch_size ready requests, waiting at most max_wait after the oldest
//                  became ready for the batch to fill; grouped by decoding kind, each group one
//                  batched generation with its rows ordered by adapter, every adapter's LoRA on
//                  its own rows of the one forward pass (runtime/ocr_batch.h)
// While its batch runs, a request's text streams out token by token (greedy and sampled; beam
// search at the end); a request cancelled or expired then stops decoding at its next token and is
// answered CANCELLED / DEADLINE_EXCEEDED when the batch ends.
//
// Priority: the loop runs adapter tasks first, then OCR cycles, and calls the background task
// (a training job's step) only when no OCR request is ready, or after
// max_ocr_cycles_per_background_step OCR cycles in a row, so the job is not starved. Training
// yields between steps: an OCR request that arrives during a step waits for that step at most.
//
// Adapters: a load reads the PEFT folder on the worker pool, then, on the engine thread, makes
// room in the device budget (evicting idle unpinned adapters, least recently used first), builds
// the adapted parameters (model::apply_adapter, sharing the base tensors) and swaps them in. A
// load under a loaded name replaces the old version only once the new one is on the device; on
// error the old one keeps serving. Requests naming an adapter that is loading wait for it in the
// queue. Evicted and unloaded adapters stay registered (kRegistered); with load_adapters_on_demand
// a request naming one loads it again from its folder and waits, as for any load.
#pragma once

#include <c10/core/Device.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "io/peft_adapter.h"
#include "model/adapter.h"
#include "model/load.h"
#include "runtime/adapter_registry.h"
#include "runtime/decoding.h"
#include "runtime/engine_metrics.h"
#include "runtime/mixed_adapters.h"
#include "runtime/ocr_input.h"
#include "runtime/ocr_request.h"
#include "runtime/worker_pool.h"

namespace cpm::core::runtime {

struct EngineOptions {
  // Most requests taken into one engine cycle. Default: 8
  int max_batch_size = 8;
  // How long the oldest ready request waits for a cycle to fill up. Default: 5 ms
  std::chrono::microseconds max_wait{5000};
  // Admitted requests not yet running (preparing or queued); one more is RESOURCE_EXHAUSTED at
  // once. Default: 256
  int max_queue = 256;
  // Worker-pool threads (image decoding, prompts, adapter file reads). Default: 2
  int prepare_threads = 2;
  // With a background task attached: after this many OCR cycles in a row, one background step
  // runs before the next cycle. 0: OCR strictly first (training can starve). Default: 4
  int max_ocr_cycles_per_background_step = 4;
  // Device bytes that loaded adapters may hold together; 0: no limit. Default: 0
  int64_t adapter_budget_bytes = 0;
  // A request naming a registered adapter that is not on the device (evicted or unloaded) loads
  // it; false: such a request is FAILED_PRECONDITION. Default: true
  bool load_adapters_on_demand = true;
  // The adapters' LoRA matrices: in the base weights' dtype (bf16 matmuls in the decode step, no
  // casts), or float32 as PEFT keeps them (for parity checks). Default: the base weights' dtype
  model::LoraPrecision lora_precision = model::LoraPrecision::kModelDtype;
  DecodingLimits decoding;
  InputLimits input;
  // Optional; receives the engine's events (see engine_metrics.h).
  std::shared_ptr<EngineObserver> observer;
  // Test seam: runs on the engine thread before each generation call with its number of rows; what
  // it throws is handled as the generation's own failure (fault injection, e.g. out of memory).
  std::function<void(int)> before_generation;
};

struct AdapterList {
  std::vector<AdapterInfo> adapters;  // in name order
  int64_t device_bytes_used = 0;
  int64_t device_bytes_budget = 0;  // 0: no limit
};

// See the top of this file. All public methods are thread-safe.
class Engine {
 public:
  using OcrCallback = std::function<void(absl::StatusOr<OcrResult>)>;
  enum class StopMode {
    kDrain,       // finish every admitted request and adapter load, then stop
    kFailQueued,  // finish the cycle that is running; everything else fails with UNAVAILABLE
  };

  // `model` is loaded on any device; from start() on, only the engine thread touches its tensors.
  Engine(std::unique_ptr<model::LoadedModel> model, EngineOptions options);
  // stop(kFailQueued).
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Starts the engine thread and the worker pool. FAILED_PRECONDITION when already started.
  absl::Status start();
  // New work is refused with UNAVAILABLE from now on; returns once the engine thread has ended and
  // every admitted request has its answer. The background task is not called again. Not from a
  // callback that the engine runs (it would wait for itself).
  void stop(StopMode mode = StopMode::kFailQueued);

  // OCR. `done` runs exactly once: at once on this thread for an early error, else on the worker
  // pool (preparation errors, cancellation) or the engine thread. It must not block.
  void submit(OcrRequest request, OcrCallback done);
  std::future<absl::StatusOr<OcrResult>> submit(OcrRequest request);

  // Registers the PEFT folder `path` under `name` without loading it (only adapter_config.json is
  // read, on this thread). Registering the same folder again is a no-op; another folder for an
  // adapter on the device is ALREADY_EXISTS (load_adapter with the new folder replaces it).
  absl::StatusOr<AdapterInfo> register_adapter(const std::string& name, const std::string& path);
  // Loads `name` from `path` (empty: its registered folder) onto the device, evicting others if
  // the budget needs it, and sets its pin. Already loaded from that folder: only the pin changes.
  // Errors: NOT_FOUND (empty path, unknown name), what io::read_peft_adapter / apply_adapter say
  // (INVALID_ARGUMENT naming the file, or the tensor and both shapes),
  // RESOURCE_EXHAUSTED (does not fit the budget even after evicting every idle unpinned adapter,
  // or the device is out of memory), FAILED_PRECONDITION (a load from another folder is running).
  std::future<absl::StatusOr<AdapterInfo>> load_adapter(const std::string& name,
                                                        const std::string& path, bool pin);
  // Frees its device memory; it stays registered (kRegistered). NOT_FOUND if unknown,
  // FAILED_PRECONDITION while it is loading.
  std::future<absl::StatusOr<AdapterInfo>> unload_adapter(const std::string& name);
  absl::StatusOr<AdapterInfo> adapter(const std::string& name) const;
  AdapterList adapters() const;

  // Attaches the background work (a training job): the engine thread calls `step` with the base
  // model between OCR cycles, one step per call, until it returns false or throws (logged), or
  // another task (or nullptr) replaces it. `step` and what it holds are destroyed on the engine
  // thread. UNAVAILABLE unless running.
  using BackgroundStep = std::function<bool(const model::LoadedModel&)>;
  absl::Status set_background_task(BackgroundStep step);

  // The model's host-side parts (configs, tokenizer, chat template): immutable, so any thread may
  // read them, e.g. to validate a dataset. Its tensors belong to the engine thread.
  const io::CheckpointConfigs& configs() const { return model_->configs; }
  const io::Tokenizer& tokenizer() const { return *model_->tokenizer; }
  const io::ChatTemplate& chat_template() const { return model_->chat_template; }

  EngineStats stats() const;

 private:
  struct Pending;
  // Work for the engine thread besides OCR; `abandon` runs instead of `run` after it stopped.
  struct Task {
    std::function<void()> run;
    std::function<void()> abandon;
  };
  using BackgroundTask = std::shared_ptr<BackgroundStep>;
  // What the loop does next.
  struct Work {
    enum class Kind { kNothing, kTask, kBatch, kBackground, kExit };
    Kind kind = Kind::kNothing;
    Task task;
    std::vector<std::unique_ptr<Pending>> batch;
    BackgroundTask background;
    // Queued requests that leave without running, with their status.
    std::vector<std::pair<std::unique_ptr<Pending>, absl::Status>> dropped;
    // Replaced background tasks, destroyed with the Work on the engine thread, outside the lock.
    std::vector<BackgroundTask> retired;
  };
  // An adapter on the device: the adapted store (base handles + its own tensors) and a model over
  // it.
  struct DeviceAdapter {
    model::Parameters params;
    std::unique_ptr<model::MiniCPMO> model;
  };
  // Lets cancellation hooks reach the engine for as long as it exists. A hook counts itself in
  // `active` instead of holding `mu` while it finishes a request, so a completion callback may
  // cancel another request; the destructor waits for active hooks to leave.
  struct Lifeline {
    std::mutex mu;
    std::condition_variable idle;
    Engine* engine = nullptr;
    int active = 0;
  };

  // Worker pool.
  void prepare(std::unique_ptr<Pending> pending);
  // Engine thread.
  void loop();
  Work next_work();
  void run_cycle(std::vector<std::unique_ptr<Pending>> batch);
  void run_background(const BackgroundTask& task);
  // Puts a read adapter on the device (or records why not) and answers the load's waiters.
  void install_adapter(const std::string& name, const std::string& path,
                       absl::StatusOr<io::PeftAdapter> read, int64_t size_bytes,
                       Clock::time_point requested);
  void evict(const std::string& name);
  // Frees `name`'s device tensors, unless a load of it is running (FAILED_PRECONDITION).
  absl::StatusOr<AdapterInfo> unload_now(const std::string& name);
  void shut_down();
  // Any thread, without mu_ held.
  void finish(std::unique_ptr<Pending> pending, absl::StatusOr<OcrResult> result);
  void cancel_queued(uint64_t id);
  void complete_load(const std::string& name, const absl::StatusOr<AdapterInfo>& result);
  // With mu_ held: marks `info` loading and reads `path` on the worker pool, then installs it.
  void start_load_locked(AdapterInfo& info, const std::string& path)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool accepting_locked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Immutable after construction.
  const std::unique_ptr<model::LoadedModel> model_;
  const EngineOptions options_;
  const c10::Device device_;
  const std::vector<int32_t> stop_ids_;
  const std::shared_ptr<Lifeline> lifeline_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t changes_ ABSL_GUARDED_BY(mu_) = 0;  // bumped on anything the loop may wait for
  EngineState state_ ABSL_GUARDED_BY(mu_) = EngineState::kCreated;
  bool drain_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t preparing_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t running_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t reads_in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // adapter folders being read
  std::deque<std::unique_ptr<Pending>> queue_ ABSL_GUARDED_BY(mu_);
  std::deque<Task> tasks_ ABSL_GUARDED_BY(mu_);
  BackgroundTask background_ ABSL_GUARDED_BY(mu_);
  std::vector<BackgroundTask> retired_
      ABSL_GUARDED_BY(mu_);  // replaced tasks, destroyed by the loop
  int ocr_cycles_in_a_row_ ABSL_GUARDED_BY(mu_) = 0;
  AdapterRegistry registry_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<std::promise<absl::StatusOr<AdapterInfo>>>> load_waiters_
      ABSL_GUARDED_BY(mu_);
  EngineStats totals_ ABSL_GUARDED_BY(mu_);  // the cumulative fields only

  // Engine thread only.
  std::map<std::string, std::shared_ptr<const DeviceAdapter>> device_adapters_;
  // Takes an adapter off the device (unload, eviction): also the mixed-batch models naming it.
  void drop_device_adapter(const std::string& name);
  MixedAdapterModels mixer_;

  std::mutex stop_mu_;  // one stop() at a time
  std::unique_ptr<WorkerPool> pool_;
  std::thread thread_;
};

}  // namespace cpm::core::runtime
