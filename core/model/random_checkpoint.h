// SPDX-License-Identifier: Apache-2.0
//
// Checkpoint directories of the real MiniCPM-o-2.6 format with random weights: the real weights
// cannot be downloaded here, and tests, the demo and GPU benchmarks all need a model of the exact
// format (tiny for the CPU, the real 8B shapes for the GPU).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "io/model_config.h"

namespace cpm::core::model {

// The `tiny` preset: every part of the architecture at toy size (hidden 128 so the resampler keeps
// its 128-dim heads, 2 layers each, tied embeddings) with the real vocabulary, so that the real
// tokenizer works; a CPU forward takes well under a second. `full`: MiniCPM-o-2.6's own numbers.
io::ModelConfig tiny_config();
io::ModelConfig full_config();

struct RandomCheckpointOptions {
  // Weights dtype in the files. Default: float32 (the tiny preset); bfloat16 for full.
  c10::ScalarType dtype = c10::ScalarType::Float;
  uint64_t seed = 0;
  // Shards are cut when they would exceed this many bytes (the index lists them).
  int64_t max_shard_bytes = int64_t{2} << 30;
  // The Qwen tokenizer.json to copy; the MiniCPM special tokens are added to it.
  std::string base_tokenizer_json;
};

// Writes `dir` (which must not exist): config.json, preprocessor_config.json,
// generation_config.json, tokenizer.json, tokenizer_config.json, model-0000K-of-0000N.safetensors
// and model.safetensors.index.json. Weights: normal(0, 0.02), norms one, biases zero. Everything is
// written into a temporary sibling folder that is renamed into place at the end, so an interrupted
// run leaves no half-written checkpoint.
absl::Status write_random_checkpoint(const std::string& dir, const io::ModelConfig& config,
                                     const RandomCheckpointOptions& options);

// config.json text for `config`, in the shape MiniCPM-o-2.6 ships it.
std::string model_config_json(const io::ModelConfig& config);

}  // namespace cpm::core::model
