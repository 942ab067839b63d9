// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "io/safetensors.h"
#include "model/parameters.h"

namespace cpm::core::model {

struct LoadOptions {
  // Target dtype and device; each tensor is converted straight from the mapped file, so no full
  // float32 copy of the model is ever made in host memory. Default: float32 on the CPU.
  c10::ScalarType dtype = c10::ScalarType::Float;
  c10::Device device = c10::Device(c10::DeviceType::CPU);
  // Called after each tensor (done, total, name), for progress reporting.
  std::function<void(size_t, size_t, const std::string&)> progress;
};

// What the strict join of the architecture's specs with the checkpoint found.
struct LoadReport {
  std::vector<std::string> missing;     // in the specs, not in the checkpoint
  std::vector<std::string> unexpected;  // in the checkpoint, not in the specs (not skipped)
  std::vector<std::string> mis_shaped;  // "name: checkpoint [..] vs expected [..]"
  size_t skipped = 0;                   // audio / TTS tensors, ignored by the vision path
  int64_t num_parameters = 0;
  int64_t bytes = 0;                    // on the target device
};

// Keys of MiniCPM-o's audio and TTS parts, which the vision path never loads.
bool is_skipped_key(const std::string& name);

// Loads every spec from `checkpoint` into `out`. Strict: any missing, unexpected or mis-shaped
// tensor is INVALID_ARGUMENT listing them (the first few of each kind and the counts), and `out`
// is left untouched. The tensors of each group in `stacked` (spec names, equal trailing sizes) are
// loaded straight into consecutive rows of one buffer and stored as views of it (see stack_rows
// in model/parameters.h), so that the fused projections cost no second copy.
absl::StatusOr<LoadReport> load_parameters(const io::SafetensorsCheckpoint& checkpoint,
                                           const std::vector<ParamSpec>& specs,
                                           const LoadOptions& options, Parameters& out,
                                           const std::vector<std::vector<std::string>>& stacked = {});

}  // namespace cpm::core::model
