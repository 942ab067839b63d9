// SPDX-License-Identifier: Apache-2.0
//
// Learning-rate schedules as transformers' get_{cosine,linear,constant}_schedule_with_warmup: a
// linear warmup from 0, then cosine (half a cycle) or linear decay to 0 at the last step, or flat.
// As in the HF Trainer, optimizer step k (0-based) uses the factor at k, so the first warmup step
// trains with learning rate 0.
#pragma once

#include <cstdint>

namespace cpm::core::train {

enum class Schedule { kCosine, kLinear, kConstant };

struct LrSchedule {
  Schedule kind = Schedule::kCosine;
  double peak = 1e-6;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  double at(int64_t step) const;
};

// The HF Trainer's warmup length: warmup_steps when positive, else ceil(total * ratio).
int64_t warmup_steps(int64_t total_steps, double warmup_ratio, int64_t warmup_steps);

}  // namespace cpm::core::train
