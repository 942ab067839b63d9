// SPDX-License-Identifier: Apache-2.0
#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace cpm::core::train {

double LrSchedule::at(int64_t step) const {
  if (step < warmup_steps) {
    return peak * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  }
  const double decay_steps = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  const double progress = static_cast<double>(step - warmup_steps) / decay_steps;
  switch (kind) {
    case Schedule::kCosine:
      return peak * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
    case Schedule::kLinear:
      return peak * std::max(0.0, static_cast<double>(total_steps - step) / decay_steps);
    case Schedule::kConstant:
      break;
  }
  return peak;
}

int64_t warmup_steps(int64_t total_steps, double warmup_ratio, int64_t steps) {
  if (steps > 0) return steps;
  return static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_ratio));
}

}  // namespace cpm::core::train
