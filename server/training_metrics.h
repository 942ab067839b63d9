// SPDX-License-Identifier: Apache-2.0
//
// The fine-tuning series of /metrics (the `train_job` label is the job's name; not `job`, which Prometheus
// reserves for the scrape job):
//   cpm_train_jobs{state}                  jobs in the store by state (read per scrape)
//   cpm_train_jobs_finished_total{state}   jobs that reached succeeded | failed | cancelled
//   cpm_train_step, cpm_train_max_steps, cpm_train_loss,
//   cpm_train_learning_rate, cpm_train_grad_norm, cpm_train_tokens_per_second   {train_job}
//                                          the job's last progress report
//   cpm_train_tokens_total{train_job}           training tokens so far
//   cpm_train_eval_loss, cpm_train_eval_exact_match, cpm_train_eval_edit_distance,
//   cpm_train_eval_bleu4{train_job}       its last evaluation
// The per-job series of the kKeptFinishedJobs most recently finished jobs stay (their final values
// remain scrapeable); older ones leave /metrics, so a long-lived daemon's series stay bounded.
#pragma once

#include <deque>
#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "cpm/v1/training.pb.h"
#include "metrics.h"

namespace cpm::server {

class JobStore;

// Thread-safe.
class TrainingMetrics {
 public:
  // Registers the families in `registry`, which must outlive this.
  explicit TrainingMetrics(Registry& registry);
  ~TrainingMetrics();
  TrainingMetrics(const TrainingMetrics&) = delete;
  TrainingMetrics& operator=(const TrainingMetrics&) = delete;

  // Counts the jobs by state before each scrape; `store` must outlive the registry's use.
  void watch(JobStore& store);
  void progress(const std::string& job, const cpm::v1::TrainProgress& p);
  void eval(const std::string& job, const cpm::v1::EvalResult& e);
  // `job` reached terminal `state`.
  void finished(cpm::v1::JobState state, const std::string& job);

  static constexpr size_t kKeptFinishedJobs = 16;

  struct Families;

 private:
  Registry& registry_;
  std::unique_ptr<Families> families_;
  std::mutex mu_;
  std::deque<std::string> finished_jobs_ ABSL_GUARDED_BY(mu_);  // oldest first
};

// "queued", "running", ... as metric label values.
std::string state_label(cpm::v1::JobState state);

}  // namespace cpm::server
