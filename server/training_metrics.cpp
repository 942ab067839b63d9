// SPDX-License-Identifier: Apache-2.0
#include "training_metrics.h"

#include "absl/strings/ascii.h"
#include "common/logging.h"
#include "job_store.h"

namespace cpm::server {

struct TrainingMetrics::Families {
  Family<Gauge>& jobs;
  Family<Counter>& finished;
  Family<Gauge>& step;
  Family<Gauge>& max_steps;
  Family<Gauge>& loss;
  Family<Gauge>& learning_rate;
  Family<Gauge>& grad_norm;
  Family<Gauge>& tokens_per_second;
  Family<Counter>& tokens;
  Family<Gauge>& eval_loss;
  Family<Gauge>& eval_exact_match;
  Family<Gauge>& eval_edit_distance;
  Family<Gauge>& eval_bleu4;
};

std::string state_label(cpm::v1::JobState state) {
  std::string name = cpm::v1::JobState_Name(state);
  const std::string prefix = "JOB_STATE_";
  if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  return absl::AsciiStrToLower(name);
}

TrainingMetrics::TrainingMetrics(Registry& r)
    : registry_(r),
      families_(new Families{
          r.gauge("cpm_train_jobs", "Fine-tuning jobs in the job store, by state.", {"state"}),
          r.counter("cpm_train_jobs_finished_total",
                    "Fine-tuning jobs that reached a terminal state since cpmd started.", {"state"}),
          r.gauge("cpm_train_step", "Last optimizer step of the job.", {"train_job"}),
          r.gauge("cpm_train_max_steps", "Optimizer steps the job runs in total.", {"train_job"}),
          r.gauge("cpm_train_loss", "Mean training loss over the job's last logging interval.", {"train_job"}),
          r.gauge("cpm_train_learning_rate", "Learning rate of the job's last logged step.", {"train_job"}),
          r.gauge("cpm_train_grad_norm", "Global gradient norm (before clipping) of the last logged step.",
                  {"train_job"}),
          r.gauge("cpm_train_tokens_per_second",
                  "Training tokens (padding excluded) per second over the last logging interval.", {"train_job"}),
          r.counter("cpm_train_tokens_total", "Training tokens the job has seen.", {"train_job"}),
          r.gauge("cpm_train_eval_loss", "Eval loss of the job's last evaluation.", {"train_job"}),
          r.gauge("cpm_train_eval_exact_match", "Exact-match fraction of the job's last evaluation.", {"train_job"}),
          r.gauge("cpm_train_eval_edit_distance",
                  "Mean normalized LaTeX-token edit distance of the job's last evaluation.", {"train_job"}),
          r.gauge("cpm_train_eval_bleu4", "Corpus BLEU-4 of the job's last evaluation.", {"train_job"}),
      }) {
  // Present from the start, so a rate over the first failure sees it rise from 0.
  for (auto s : {cpm::v1::JOB_STATE_SUCCEEDED, cpm::v1::JOB_STATE_FAILED, cpm::v1::JOB_STATE_CANCELLED}) {
    families_->finished.with({state_label(s)});
  }
}

TrainingMetrics::~TrainingMetrics() = default;

void TrainingMetrics::watch(JobStore& store) {
  Family<Gauge>& jobs = families_->jobs;
  registry_.on_collect([&jobs, &store] {
    auto counts = store.count_jobs_by_state();
    if (!counts.ok()) {
      core::log_warn("metrics: cannot count jobs", {{"error", std::string(counts.status().message())}});
      return;
    }
    for (int s = cpm::v1::JOB_STATE_QUEUED; s <= cpm::v1::JOB_STATE_CANCELLED; ++s) {
      const auto state = static_cast<cpm::v1::JobState>(s);
      const auto it = counts->find(state);
      jobs.with({state_label(state)}).set(it == counts->end() ? 0.0 : static_cast<double>(it->second));
    }
  });
}

void TrainingMetrics::progress(const std::string& job, const cpm::v1::TrainProgress& p) {
  Families& f = *families_;
  f.step.with({job}).set(static_cast<double>(p.step()));
  f.max_steps.with({job}).set(static_cast<double>(p.max_steps()));
  f.loss.with({job}).set(p.loss());
  f.learning_rate.with({job}).set(p.learning_rate());
  f.grad_norm.with({job}).set(p.grad_norm());
  f.tokens_per_second.with({job}).set(p.tokens_per_second());
  // A resumed job reports the total it had before the crash again; the counter never goes back.
  Counter& tokens = f.tokens.with({job});
  if (static_cast<double>(p.tokens_seen()) > tokens.value()) tokens.set(static_cast<double>(p.tokens_seen()));
}

void TrainingMetrics::eval(const std::string& job, const cpm::v1::EvalResult& e) {
  Families& f = *families_;
  f.eval_loss.with({job}).set(e.eval_loss());
  f.eval_exact_match.with({job}).set(e.exact_match());
  f.eval_edit_distance.with({job}).set(e.edit_distance());
  f.eval_bleu4.with({job}).set(e.bleu4());
}

void TrainingMetrics::finished(cpm::v1::JobState state, const std::string& job) {
  Families& f = *families_;
  f.finished.with({state_label(state)}).inc();
  std::string retired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    finished_jobs_.push_back(job);
    if (finished_jobs_.size() <= kKeptFinishedJobs) return;
    retired = std::move(finished_jobs_.front());
    finished_jobs_.pop_front();
  }
  for (Family<Gauge>* g : {&f.step, &f.max_steps, &f.loss, &f.learning_rate, &f.grad_norm, &f.tokens_per_second,
                           &f.eval_loss, &f.eval_exact_match, &f.eval_edit_distance, &f.eval_bleu4}) {
    g->remove({retired});
  }
  f.tokens.remove({retired});
}

}  // namespace cpm::server
