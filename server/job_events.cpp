// SPDX-License-Identifier: Apache-2.0
#include "job_events.h"

#include "api_values.h"

namespace cpm::server {
namespace {

void set_duration(google::protobuf::Duration* d, double seconds) {
  d->set_seconds(static_cast<int64_t>(seconds));
  d->set_nanos(static_cast<int32_t>((seconds - static_cast<double>(d->seconds())) * 1e9));
}

}  // namespace

bool is_terminal(cpm::v1::JobState s) {
  return s == cpm::v1::JOB_STATE_SUCCEEDED || s == cpm::v1::JOB_STATE_FAILED || s == cpm::v1::JOB_STATE_CANCELLED;
}

cpm::v1::JobEvent event_for(const cpm::v1::Job& job, int64_t step) {
  cpm::v1::JobEvent e;
  e.set_job_id(job.id());
  set_now(e.mutable_time());
  e.set_step(step);
  return e;
}

cpm::v1::TrainProgress to_proto(const core::runtime::TrainingProgress& p) {
  cpm::v1::TrainProgress t;
  t.set_step(p.step);
  t.set_max_steps(p.max_steps);
  t.set_epoch(p.epoch);
  t.set_loss(p.loss);
  t.set_learning_rate(p.learning_rate);
  t.set_grad_norm(p.grad_norm);
  t.set_tokens_per_second(p.tokens_per_second);
  set_duration(t.mutable_elapsed(), p.elapsed_seconds);
  set_duration(t.mutable_eta(), p.eta_seconds);
  t.set_peak_memory_bytes(p.peak_memory_bytes);
  t.set_tokens_seen(p.tokens_seen);
  return t;
}

cpm::v1::EvalResult to_proto(const core::train::EvalReport& r, double seconds) {
  cpm::v1::EvalResult e;
  e.set_step(r.step);
  e.set_eval_loss(r.loss);
  e.set_exact_match(r.metrics.exact_match);
  e.set_edit_distance(r.metrics.normalized_edit_distance);
  e.set_bleu4(r.metrics.bleu4);
  e.set_num_examples(static_cast<int32_t>(r.metrics.count));
  set_duration(e.mutable_duration(), seconds);
  return e;
}

double seconds_of(const google::protobuf::Duration& d) { return d.seconds() + d.nanos() * 1e-9; }

}  // namespace cpm::server
