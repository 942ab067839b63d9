// SPDX-License-Identifier: Apache-2.0
//
// cpm.v1.JobSpec <-> the training engine's options: every unset field gets the default that
// training.proto documents (so GetJob shows what actually runs), every field is range-checked with
// a message naming it, and the complete spec becomes a TrainConfig and data options.
#pragma once

#include <c10/core/ScalarType.h>

#include <string>

#include "absl/status/statusor.h"
#include "cpm/v1/training.pb.h"
#include "runtime/training_run.h"
#include "train/dataset.h"

namespace cpm::server {

// 1-64 characters of [A-Za-z0-9._-]; INVALID_ARGUMENT saying so otherwise.
absl::Status check_job_name(const std::string& name);

// Fills in the defaults (`name` falls back to "job-<id>"; precision to the loaded model's dtype),
// then validates. INVALID_ARGUMENT naming the field and the allowed range; FAILED_PRECONDITION
// for a precision other than the dtype the daemon loaded the model in (the message says how to
// change that).
absl::StatusOr<cpm::v1::JobSpec> complete_spec(cpm::v1::JobSpec spec, const std::string& id,
                                               c10::ScalarType model_dtype);

// A completed spec as engine options. `output_dir` receives the checkpoints, `adapter_dir` the
// final adapter; `base_model` goes into the adapter's config.
core::runtime::TrainingRunOptions run_options(const cpm::v1::JobSpec& spec,
                                              const std::string& output_dir,
                                              const std::string& adapter_dir,
                                              const std::string& base_model);
core::train::DataOptions data_options(const cpm::v1::JobSpec& spec);

}  // namespace cpm::server
