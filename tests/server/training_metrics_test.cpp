// SPDX-License-Identifier: Apache-2.0
#include "training_metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace cpm::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Finished jobs keep their series for a while; beyond the newest kKeptFinishedJobs finished ones
// their series leave /metrics, so a daemon that runs jobs for months does not grow without bound.
TEST(TrainingMetrics, TheSeriesOfOldFinishedJobsLeave) {
  Registry registry;
  TrainingMetrics metrics(registry);
  cpm::v1::TrainProgress p;
  p.set_step(3);
  p.set_loss(1.5);
  p.set_tokens_seen(100);
  cpm::v1::EvalResult e;
  e.set_exact_match(0.5);
  const size_t jobs = TrainingMetrics::kKeptFinishedJobs + 2;
  for (size_t i = 0; i < jobs; ++i) {
    const std::string job = "job-" + std::to_string(i);
    metrics.progress(job, p);
    metrics.eval(job, e);
    metrics.finished(i % 2 ? cpm::v1::JOB_STATE_FAILED : cpm::v1::JOB_STATE_SUCCEEDED, job);
  }
  metrics.progress("running", p);
  const std::string text = registry.render();
  for (const char* gone : {"job-0", "job-1"}) {
    EXPECT_THAT(text, Not(HasSubstr(std::string("train_job=\"") + gone + "\""))) << gone;
  }
  const std::string kept = "train_job=\"job-" + std::to_string(jobs - 1) + "\"";
  for (const char* family : {"cpm_train_step{", "cpm_train_loss{", "cpm_train_tokens_total{",
                             "cpm_train_eval_exact_match{"}) {
    EXPECT_THAT(text, HasSubstr(family + kept + "}")) << family;
  }
  EXPECT_THAT(text, HasSubstr("cpm_train_step{train_job=\"job-2\"} 3"));
  EXPECT_THAT(text, HasSubstr("cpm_train_step{train_job=\"running\"} 3"));
  EXPECT_THAT(text, HasSubstr("cpm_train_jobs_finished_total{state=\"succeeded\"} 9"));
  EXPECT_THAT(text, HasSubstr("cpm_train_jobs_finished_total{state=\"failed\"} 9"));
}

}  // namespace
}  // namespace cpm::server
