// SPDX-License-Identifier: Apache-2.0
//
// One fine-tuning job as the engine's background work: each call of step() (on the engine thread,
// between OCR cycles) runs one optimizer step and checkpoints when due, or evaluates one record of
// an evaluation under way, and reports what happened to a listener. The first call builds the trainer (resuming from the newest
// checkpoint in the output folder); the last one writes the PEFT adapter and frees the trainer's
// device tensors before returning false, so nothing of the job outlives it on the device.
//
// A stop request (cancel, or pause because the daemon stops) takes effect at the next call; a pause
// first checkpoints the steps done since the last checkpoint, so a restart loses no training (an
// evaluation it interrupts is dropped, except the final one, which the restart runs again).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "model/load.h"
#include "train/dataset.h"
#include "train/trainer.h"

namespace cpm::core::runtime {

// What a listener sees of one logging interval.
struct TrainingProgress {
  int64_t step = 0;
  int64_t max_steps = 0;
  double epoch = 0;             // fractional passes over the training split
  double loss = 0;              // mean over the steps since the previous report
  double learning_rate = 0;
  double grad_norm = 0;         // of the step reported, before clipping
  double tokens_per_second = 0; // over the interval
  double elapsed_seconds = 0;   // training time of this job, resumed runs included
  double eta_seconds = 0;
  int64_t peak_memory_bytes = 0;  // device memory (GPU) or resident memory (CPU) in the interval
  int64_t tokens_seen = 0;        // training tokens so far, resumed runs included
};

enum class RunOutcome {
  kSucceeded,  // every step done; the adapter is written
  kFailed,     // see the status
  kCancelled,  // stopped on request at a step boundary
  kPaused,     // stopped for a daemon shutdown, after a checkpoint
};

// Called on the engine thread, in order; must not block for long (it holds up OCR).
class TrainingListener {
 public:
  virtual ~TrainingListener() = default;
  // The trainer is built: it continues after `resumed_from` (0: a fresh start).
  virtual void on_started(int64_t resumed_from, int64_t total_steps) = 0;
  virtual void on_progress(const TrainingProgress& progress) = 0;
  virtual void on_checkpoint(int64_t step, const std::string& path, int64_t size_bytes) = 0;
  virtual void on_eval(const train::EvalReport& report, double seconds) = 0;
  // Last call. kFailed carries the error (RESOURCE_EXHAUSTED for device out of memory).
  virtual void on_finished(RunOutcome outcome, const absl::Status& error) = 0;
};

struct TrainingRunOptions {
  train::TrainConfig config;          // output_dir holds the checkpoints
  train::ExampleOptions examples;
  int64_t logging_steps = 10;         // a progress report at step 1, every N and at the last step
  std::string adapter_dir;            // the final PEFT adapter, written atomically
  // Carried over from the interrupted run when resuming (the reports restart from here).
  double elapsed_seconds = 0;
  int64_t tokens_seen = 0;
};

// Lets another thread stop a run that the engine owns. Thread-safe.
class RunControl {
 public:
  enum class Stop { kNone, kCancel, kPause };
  void request(Stop stop) {
    Stop none = Stop::kNone;
    stop_.compare_exchange_strong(none, stop);
  }
  Stop requested() const { return stop_.load(); }

 private:
  std::atomic<Stop> stop_{Stop::kNone};
};

class TrainingRun {
 public:
  // `listener` and the model's text side (tokenizer) must outlive the run.
  TrainingRun(train::DatasetSplit data, TrainingRunOptions options,
              std::shared_ptr<TrainingListener> listener, std::shared_ptr<RunControl> control);
  ~TrainingRun();
  TrainingRun(const TrainingRun&) = delete;
  TrainingRun& operator=(const TrainingRun&) = delete;

  // The engine's background step. Returns false once the run has finished (listener told).
  bool step(const model::LoadedModel& model);

 private:
  bool advance(const model::LoadedModel& model);  // step() without the exception guard
  bool start(const model::LoadedModel& model);
  bool complete();  // the final evaluation, then write_adapter()
  bool write_adapter();  // and success
  void begin_evaluation(bool then_complete);
  bool continue_evaluation();  // a slice of the evaluation under way
  bool finish(RunOutcome outcome, const absl::Status& error = absl::OkStatus());
  absl::Status save_checkpoint();
  void report(const train::StepReport& r);  // adds a step to the logging interval
  void flush_progress();                     // reports the interval, if it holds a step

  train::DatasetSplit data_;
  const TrainingRunOptions options_;
  const std::shared_ptr<TrainingListener> listener_;
  const std::shared_ptr<RunControl> control_;
  std::optional<train::ExampleBuilder> builder_;
  std::unique_ptr<train::Trainer> trainer_;
  int64_t last_checkpoint_ = 0;
  train::StepReport last_;  // the newest step
  // The evaluation under way, spread over engine turns; then the job ends if complete_after_eval_.
  std::optional<train::EvalProgress> eval_;
  std::chrono::steady_clock::time_point eval_started_;
  bool complete_after_eval_ = false;
  bool finished_ = false;
  // The logging interval so far.
  double loss_sum_ = 0;
  int64_t interval_steps_ = 0, interval_tokens_ = 0, peak_memory_ = 0;
  double interval_seconds_ = 0;
  double elapsed_before_ = 0;  // training seconds of earlier runs of this job
  int64_t tokens_seen_ = 0;
};

}  // namespace cpm::core::runtime
