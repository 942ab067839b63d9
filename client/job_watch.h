// SPDX-License-Identifier: Apache-2.0
//
// Following a training job through Training.WatchJob: a progress line redrawn in place on a
// terminal (step/max, loss, lr, tokens/s, elapsed, ETA), evaluations, state changes and
// checkpoints printed above it; with --json one JobEvent per line. Ctrl-C detaches: the job keeps
// running and cpmctl prints how to re-attach.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "cpm/v1/training.grpc.pb.h"
#include "settings.h"

namespace cpmctl {

struct WatchRequest {
  std::string job_id;
  std::optional<int64_t> from_step;  // replay recorded events from this step
};

// Returns the exit code: 0 when the job succeeded, 1 when it failed or was cancelled (or the
// daemon answered with an error), 3 when the daemon could not be reached, 130 after Ctrl-C.
int follow_job(cpm::v1::Training::Stub& stub, const GlobalOptions& global, const WatchRequest& request);

// The command that resumes a watch after `last_step` was seen (-1: no step yet).
std::string reattach_command(const std::string& job_id, int64_t last_step);

}  // namespace cpmctl
