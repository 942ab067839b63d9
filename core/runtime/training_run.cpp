// SPDX-License-Identifier: Apache-2.0
#include "runtime/training_run.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/guard.h"
#include "common/status_macros.h"
#include "common/logging.h"
#include "io/peft_adapter.h"

namespace cpm::core::runtime {
namespace {

namespace fs = std::filesystem;

int64_t folder_bytes(const std::string& dir) {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& entry : fs::recursive_directory_iterator(dir, ec)) {
    if (entry.is_regular_file(ec)) total += static_cast<int64_t>(entry.file_size(ec));
  }
  return total;
}

// Resident set size of this process; the CPU's stand-in for device memory.
int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

TrainingRun::TrainingRun(train::DatasetSplit data, TrainingRunOptions options,
                         std::shared_ptr<TrainingListener> listener,
                         std::shared_ptr<RunControl> control)
    : data_(std::move(data)),
      options_(std::move(options)),
      listener_(std::move(listener)),
      control_(std::move(control)),
      elapsed_before_(options_.elapsed_seconds),
      tokens_seen_(options_.tokens_seen) {}

TrainingRun::~TrainingRun() {
  // Replaced or dropped by the engine before it finished (the engine stopped abruptly): the job is
  // left where its last checkpoint put it, as after a crash.
  if (!finished_) {
    trainer_.reset();
    log_warn("training run dropped before it finished",
             {{"output_dir", options_.config.output_dir}});
  }
}

bool TrainingRun::step(const model::LoadedModel& model) {
  if (finished_) return false;
  // Whatever LibTorch throws (out of memory in a checkpoint copy, a shape error) fails the job
  // instead of escaping into the engine, which would drop the run without a word to the manager.
  bool more = false;
  const absl::Status s = guarded("training", [&] {
    more = advance(model);
    return absl::OkStatus();
  });
  if (!s.ok() && !finished_) return finish(RunOutcome::kFailed, s);
  return more && !finished_;
}

bool TrainingRun::advance(const model::LoadedModel& model) {
  if (!trainer_) {
    if (!start(model)) return false;
    // Resumed from the final checkpoint (the daemon died during the last evaluation or before the
    // job's end was stored): only the end is left to do.
    if (trainer_->done()) return complete();
  }
  switch (control_->requested()) {
    case RunControl::Stop::kCancel:
      flush_progress();
      return finish(RunOutcome::kCancelled);
    case RunControl::Stop::kPause: {
      // The history and the resumed run's counters (tokens, elapsed) continue from this step.
      flush_progress();
      if (trainer_->step_count() > last_checkpoint_) {
        if (absl::Status s = save_checkpoint(); !s.ok()) return finish(RunOutcome::kFailed, s);
      }
      return finish(RunOutcome::kPaused);
    }
    case RunControl::Stop::kNone:
      break;
  }
  if (eval_) return continue_evaluation();
  absl::StatusOr<train::StepReport> r = trainer_->step();
  if (!r.ok()) {
    return finish(RunOutcome::kFailed,
                  absl::Status(r.status().code(), absl::StrCat("step ", trainer_->step_count() + 1,
                                                               ": ", r.status().message())));
  }
  report(*r);
  const int64_t every = std::max<int64_t>(1, options_.logging_steps);
  if (r->step == 1 || r->step % every == 0 || r->step == r->total_steps) flush_progress();
  if (trainer_->checkpoint_due()) {
    if (absl::Status s = save_checkpoint(); !s.ok()) return finish(RunOutcome::kFailed, s);
  }
  if (!trainer_->done()) {
    if (trainer_->eval_due() && !data_.eval.empty()) begin_evaluation(/*then_complete=*/false);
    return true;
  }
  return complete();
}

bool TrainingRun::complete() {
  if (!data_.eval.empty()) {
    begin_evaluation(/*then_complete=*/true);
    return true;
  }
  return write_adapter();
}

void TrainingRun::begin_evaluation(bool then_complete) {
  eval_.emplace();
  eval_started_ = std::chrono::steady_clock::now();
  complete_after_eval_ = then_complete;
}

bool TrainingRun::continue_evaluation() {
  // A few records per engine turn: an OCR request waits for at most their greedy decoding, not
  // for the whole evaluation.
  constexpr size_t kRecordsPerTurn = 1;
  const auto failed = [&](const absl::Status& s) {
    return finish(RunOutcome::kFailed,
                  absl::Status(s.code(), absl::StrCat("evaluation after step ", trainer_->step_count(), ": ",
                                                      s.message())));
  };
  if (absl::Status s = trainer_->evaluate_some(*eval_, kRecordsPerTurn); !s.ok()) return failed(s);
  if (!trainer_->evaluation_done(*eval_)) return true;
  absl::StatusOr<train::EvalReport> report = trainer_->finish_evaluation(*std::move(eval_));
  eval_.reset();
  if (!report.ok()) return failed(report.status());
  listener_->on_eval(*report, seconds_since(eval_started_));
  return complete_after_eval_ ? write_adapter() : true;
}

bool TrainingRun::write_adapter() {
  std::error_code ec;
  fs::remove_all(options_.adapter_dir, ec);  // a run that crashed after writing it writes it again
  if (absl::Status s = io::write_peft_adapter(options_.adapter_dir, trainer_->adapter()); !s.ok()) {
    return finish(RunOutcome::kFailed, s);
  }
  return finish(RunOutcome::kSucceeded);
}

bool TrainingRun::start(const model::LoadedModel& model) {
  absl::StatusOr<train::ExampleBuilder> builder = train::ExampleBuilder::create(
      *model.tokenizer, model.chat_template, model.configs.preprocessor, options_.examples);
  if (!builder.ok()) return finish(RunOutcome::kFailed, builder.status());
  builder_.emplace(*std::move(builder));
  absl::StatusOr<std::unique_ptr<train::Trainer>> trainer =
      train::Trainer::create(model, *builder_, data_.train, data_.eval, options_.config);
  if (!trainer.ok()) return finish(RunOutcome::kFailed, trainer.status());
  trainer_ = *std::move(trainer);
  last_checkpoint_ = trainer_->resumed_from();
  listener_->on_started(trainer_->resumed_from(), trainer_->total_steps());
  return true;
}

void TrainingRun::report(const train::StepReport& r) {
  loss_sum_ += r.loss;
  ++interval_steps_;
  interval_tokens_ += r.tokens;
  interval_seconds_ += r.step_seconds;
  tokens_seen_ += r.tokens;
  peak_memory_ = std::max(peak_memory_, r.gpu_memory_bytes > 0 ? r.gpu_memory_bytes : resident_bytes());
  last_ = r;
}

void TrainingRun::flush_progress() {
  if (interval_steps_ == 0) return;
  const train::StepReport& r = last_;
  const auto& c = options_.config;
  const double examples_per_step = static_cast<double>(c.batch_size) * c.gradient_accumulation_steps;
  TrainingProgress p;
  p.step = r.step;
  p.max_steps = r.total_steps;
  p.epoch = data_.train.empty() ? 0 : r.step * examples_per_step / static_cast<double>(data_.train.size());
  p.loss = loss_sum_ / static_cast<double>(interval_steps_);
  p.learning_rate = r.learning_rate;
  p.grad_norm = r.grad_norm;
  p.tokens_per_second = interval_seconds_ > 0 ? interval_tokens_ / interval_seconds_ : 0;
  p.elapsed_seconds = elapsed_before_ + r.elapsed_seconds;
  p.eta_seconds = r.eta_seconds;
  p.peak_memory_bytes = peak_memory_;
  p.tokens_seen = tokens_seen_;
  listener_->on_progress(p);
  loss_sum_ = 0;
  interval_steps_ = interval_tokens_ = peak_memory_ = 0;
  interval_seconds_ = 0;
}

absl::Status TrainingRun::save_checkpoint() {
  CPM_RETURN_IF_ERROR(trainer_->save_checkpoint());
  last_checkpoint_ = trainer_->step_count();
  const std::string path =
      (fs::path(options_.config.output_dir) / absl::StrCat("checkpoint-", last_checkpoint_)).string();
  listener_->on_checkpoint(last_checkpoint_, path, folder_bytes(path));
  return absl::OkStatus();
}

bool TrainingRun::finish(RunOutcome outcome, const absl::Status& error) {
  if (finished_) return false;
  // The trainer's device tensors go here, on the engine thread.
  trainer_.reset();
  finished_ = true;
  listener_->on_finished(outcome, error);
  return false;
}

}  // namespace cpm::core::runtime
