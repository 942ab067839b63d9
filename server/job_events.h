// SPDX-License-Identifier: Apache-2.0
//
// A job's events and the run reports they carry, as cpm.v1 messages.
#pragma once

#include <cstdint>

#include "cpm/v1/training.pb.h"
#include "runtime/training_run.h"
#include "train/trainer.h"

namespace cpm::server {

// SUCCEEDED, FAILED or CANCELLED.
bool is_terminal(cpm::v1::JobState state);
// An event of `job` at `step`, stamped now; the caller sets its kind.
cpm::v1::JobEvent event_for(const cpm::v1::Job& job, int64_t step);
cpm::v1::TrainProgress to_proto(const core::runtime::TrainingProgress& p);
cpm::v1::EvalResult to_proto(const core::train::EvalReport& r, double seconds);
double seconds_of(const google::protobuf::Duration& d);

}  // namespace cpm::server
