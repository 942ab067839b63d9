// SPDX-License-Identifier: Apache-2.0
//
// LoRA fine-tuning of MiniCPM-o-2.6 as the OpenBMB recipe trains it (spec section 7): LoRA on the
// LLM's projections, the modules_to_save (vision tower, resampler, embeddings) trained in full as
// copies beside the untouched base model, the recipe's pre-shifted labels and mean cross-entropy,
// AdamW, a warmup + decay schedule, global gradient-norm clipping, gradient accumulation.
//
// The trainer runs one optimizer step per step() call, so its owner (the daemon's engine thread)
// can interleave other work between steps. It checkpoints atomically (adapter, optimizer, RNG and
// position in the data) and resumes from its newest checkpoint to the same result as an
// uninterrupted run. Not thread-safe: one thread drives it.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "io/peft_adapter.h"
#include "model/load.h"
#include "train/adamw.h"
#include "train/collator.h"
#include "train/conversation.h"
#include "train/dataset.h"
#include "train/latex_metrics.h"
#include "train/lr_schedule.h"
#include "train/step_graph.h"

namespace cpm::core::train {

struct TrainConfig {
  // LoRA (r, alpha, dropout, target modules, rsLoRA) and modules_to_save. `vpm` is added to
  // modules_to_save when tune_vision is set.
  io::PeftLoraConfig lora;
  bool use_lora = true;
  bool tune_vision = true;
  // Full fine-tuning of the LLM (every LLM tensor trained, as a copy beside the base; with
  // use_lora false only, as in the recipe). Needs memory for a second LLM, its gradients and two
  // AdamW moments: about 60 GB beside the base model's 15 on the real model.
  bool tune_llm = false;

  // Train the modules_to_save (vision tower, resampler, embeddings; the LLM with tune_llm) in the
  // base model's own tensors instead of copies beside them, as the Python recipe does: 0.9 GiB less
  // on the real model with tune_vision (15 GiB less with tune_llm), but the base model becomes the
  // trained one, so nothing else may use it during or after the job. For a process that only
  // trains (cpm-tool train), never for the daemon, which serves the base model beside its jobs.
  bool in_place = false;

  double learning_rate = 1e-6;
  AdamWOptions adam;
  double max_grad_norm = 1.0;  // 0 disables clipping
  Schedule schedule = Schedule::kCosine;
  double warmup_ratio = 0.01;
  int64_t warmup_steps = 0;  // > 0 overrides warmup_ratio

  int64_t max_steps = 1000;  // 0: num_epochs decides
  double num_epochs = 1;
  int batch_size = 1;
  int gradient_accumulation_steps = 1;
  bool gradient_checkpointing = true;
  // On CUDA (LibTorch >= 2.4), a step whose micro-batches all have shapes seen before is replayed
  // as CUDA graphs (train/step_graph.h) instead of being launched kernel by kernel.
  bool cuda_graphs = true;
  // Round batch shapes up to multiples of this so that nearby shapes share a graph (padding is
  // masked or ignored: the loss is unchanged). 0: 64 when CUDA graphs are used, else 1.
  int64_t shape_bucket = 0;
  uint64_t seed = 42;

  int64_t save_steps = 500;     // 0: only at the end
  int save_total_limit = 10;    // checkpoints kept, oldest removed first; 0 keeps all
  int64_t eval_steps = 500;     // 0: only at the end
  int eval_max_new_tokens = 512;

  // Checkpoints go to <output_dir>/checkpoint-<step>; required.
  std::string output_dir;
};

// INVALID_ARGUMENT naming the first bad field.
absl::Status validate(const TrainConfig& config);

struct StepReport {
  int64_t step = 0;        // optimizer steps done, 1-based after the first
  int64_t total_steps = 0;
  double loss = 0;         // mean over the step's labelled tokens
  double learning_rate = 0;
  double grad_norm = 0;    // before clipping
  int64_t tokens = 0;      // input tokens in the step
  double step_seconds = 0;
  bool cuda_graph = false;  // the step was replayed from CUDA graphs
  double tokens_per_second = 0;  // over the steps of this run so far
  double elapsed_seconds = 0;    // since this run (or resume) started
  double eta_seconds = 0;
  int64_t gpu_memory_bytes = 0;  // allocated on the training device (0 on the CPU)
};

// An evaluation under way: Trainer::evaluate_some() adds records to it, so that a caller that must
// stay responsive (the daemon's engine thread) can evaluate a few records between other work.
struct EvalProgress {
  size_t next = 0;  // index of the next eval record
  double loss_sum = 0;
  int64_t labelled = 0;
  std::vector<std::string> predictions, references;
};

struct EvalReport {
  int64_t step = 0;
  double loss = 0;  // mean over the eval examples' labelled tokens
  LatexMetrics metrics;  // greedy decoding of every eval example vs its answer
  std::vector<std::string> predictions;
};

class Trainer {
 public:
  // Builds the trainable copies on `base`'s device: a fresh adapter (seeded), or the newest
  // checkpoint under output_dir when there is one (then step() continues after it). `base` and
  // `builder` must outlive the trainer.
  static absl::StatusOr<std::unique_ptr<Trainer>> create(const model::LoadedModel& base,
                                                         const ExampleBuilder& builder,
                                                         std::vector<DatasetRecord> train,
                                                         std::vector<DatasetRecord> eval,
                                                         const TrainConfig& config);

  int64_t step_count() const { return step_; }
  int64_t total_steps() const { return schedule_.total_steps; }
  bool done() const { return step_ >= schedule_.total_steps; }
  int64_t resumed_from() const { return resumed_from_; }

  // One optimizer step (gradient_accumulation_steps micro-batches). Errors (an example that
  // fails to build, out of memory) leave the trainer at the previous step. The next step's
  // examples are read, decoded and sliced on a CPU thread while this one runs on the device.
  absl::StatusOr<StepReport> step();
  // One optimizer step on given micro-batches (benchmarks, tests): the same update, no data order.
  absl::StatusOr<StepReport> step(const std::vector<Batch>& micro_batches);
  // Eval loss and greedy-decoding OCR metrics over the eval records.
  absl::StatusOr<EvalReport> evaluate();
  // The same in slices: evaluate_some(p, n) until evaluation_done(p), then finish_evaluation(p).
  // No step() may run in between (the records are evaluated with the weights of this step).
  absl::Status evaluate_some(EvalProgress& progress, size_t count);
  bool evaluation_done(const EvalProgress& progress) const { return progress.next >= eval_.size(); }
  absl::StatusOr<EvalReport> finish_evaluation(EvalProgress progress) const;
  // <output_dir>/checkpoint-<step>, written atomically; prunes beyond save_total_limit.
  absl::Status save_checkpoint();
  // The adapter as trained so far, in PEFT format (CPU tensors).
  io::PeftAdapter adapter() const;

  // Should the caller checkpoint / evaluate after the step just done?
  bool checkpoint_due() const;
  bool eval_due() const;

 private:
  Trainer(const model::LoadedModel& base, const ExampleBuilder& builder, std::vector<DatasetRecord> train,
          std::vector<DatasetRecord> eval, const TrainConfig& config);
  absl::Status init(std::optional<std::string> checkpoint);
  std::vector<size_t> micro_batch(int64_t index) const;  // record indices of micro-batch `index`
  // The micro-batches of optimizer step `step`, built from the records (throws BadExample).
  std::vector<Batch> step_batches(int64_t step) const;
  // A micro-batch on the device: everything batch_loss reads, prepared before the step runs, so
  // that the step reads nothing from the host (what a captured CUDA graph needs). Shapes are
  // rounded up to multiples of `bucket` (length, labelled rows, each image chunk's patch slots),
  // the padding masked or ignored, so that batches of nearby shapes share a graph.
  struct DeviceBatch {
    std::vector<model::MiniCPMO::ImageChunk> images;  // every sample's images, in order
    std::vector<int64_t> images_per_sample;
    std::vector<at::Tensor> image_positions;          // per sample: int64 [its images * query_num]
    at::Tensor input_ids, position_ids;               // int64 [B, T]
    at::Tensor rows, targets;                         // int64 [R]: flat labelled positions and labels
                                                      // (padding rows: position 0, label -100)
    int64_t labelled = 0, tokens = 0;                 // labelled tokens; input tokens without padding
    std::string key;  // what a graph of this batch depends on besides tensor values
    // Every tensor above, for copying one batch into another of the same key.
    std::vector<at::Tensor*> tensors();
  };
  DeviceBatch upload(const Batch& batch, const model::MiniCPMO& model, int64_t bucket) const;
  // The mean cross-entropy over the labelled tokens (scalar, float32). Throws on a failing
  // forward pass.
  at::Tensor batch_loss(const DeviceBatch& batch, const model::MiniCPMO& model) const;
  // Forward and backward of one of `n` micro-batches: gradients / n into .grad, the loss into
  // loss_sum_.
  void accumulate(const DeviceBatch& batch, double n) const;
  // Clips the gradients (torch's clip_grad_norm_, on the device) and leaves their norm in
  // grad_norm_.
  void clip_gradients(const std::vector<at::Tensor>& grads) const;
  // The step's device work, eager or replayed, leaving its results in loss_sum_ and grad_norm_.
  void eager_step(std::vector<DeviceBatch>& batches, StepReport& r);
  void graph_step(std::vector<DeviceBatch>& batches, StepReport& r);
  // The shape bucket of this trainer's batches: 64 when steps may replay graphs, else 1.
  int64_t bucket() const;

  const model::LoadedModel& base_;
  const ExampleBuilder& builder_;
  std::vector<DatasetRecord> train_, eval_;
  TrainConfig config_;
  io::PeftAdapter adapter_;  // the trained tensors, on the device, requiring grad
  model::Parameters params_;
  std::unique_ptr<model::MiniCPMO> model_;
  std::unique_ptr<AdamW> optimizer_;
  LrSchedule schedule_;
  int64_t step_ = 0;
  int64_t resumed_from_ = 0;
  int64_t run_tokens_ = 0;
  double run_seconds_ = 0;
  c10::Device device_ = c10::Device(c10::DeviceType::CPU);
  at::Tensor loss_sum_, grad_norm_;  // float32 scalars on the device: a step's results
  at::Tensor lr_;                     // float32 scalar on the device: the rate a graph reads
  // With graphs: gradients that persist across steps (graphs replay into them), and per trained
  // tensor whether the backward pass just run reached it (set by a hook).
  std::vector<at::Tensor> grad_buffers_;
  std::shared_ptr<std::vector<char>> reached_;
  // CUDA graphs: a micro-batch graph per key with its input buffers (8 kept, least recently used
  // out first), and the update's.
  struct GraphSlot {
    DeviceBatch inputs;  // its key is the graph's
    std::unique_ptr<StepGraphs::Graph> graph;
  };
  std::unique_ptr<StepGraphs> graphs_;
  std::vector<GraphSlot> slots_;  // most recently used last
  std::unique_ptr<StepGraphs::Graph> update_graph_;
  // Keys whose micro-batch, run eagerly, gave every trained tensor a gradient.
  std::set<std::string> graphable_;
  // The next step's batches, being built on a CPU thread.
  int64_t prefetched_step_ = -1;
  std::future<std::vector<Batch>> prefetched_;
};

// Newest complete checkpoint folder under `output_dir` ("checkpoint-<step>"), if any.
std::optional<std::string> latest_checkpoint(const std::string& output_dir);

}  // namespace cpm::core::train
