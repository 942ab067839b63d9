// SPDX-License-Identifier: Apache-2.0
//
// LoRA adapters in PEFT's directory format, both ways: `adapter_config.json` and
// `adapter_model.safetensors` whose keys are the model's module names under `base_model.model.`
// (`base_model.model.llm.model.layers.0.self_attn.q_proj.lora_A.weight` [r, in], `...lora_B.weight`
// [out, r]) plus whole copies of the modules_to_save (`base_model.model.resampler.query`, ...).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cpm::core::io {

// The fields of adapter_config.json that define a LoRA adapter. Options PEFT has and cpmd does not
// implement (DoRA, fan_in_fan_out, bias training, per-layer rank or alpha patterns,
// layers_to_transform, and later variants: LoRA bias, aLoRA, QALoRA, Arrow, layer replication,
// parameter targets, trainable tokens) are refused when reading rather than silently ignored.
struct PeftLoraConfig {
  int64_t r = 64;
  double lora_alpha = 16;
  double lora_dropout = 0.1;
  // PEFT's two forms: one regex matched in full against module names, or a list of names that
  // match a module whose name equals one or ends with "." + one.
  std::optional<std::string> target_modules_regex;
  std::vector<std::string> target_modules;
  std::vector<std::string> modules_to_save;
  bool use_rslora = false;
  std::string base_model_name_or_path;

  // alpha / r, or alpha / sqrt(r) with rsLoRA.
  double scaling() const;
};

struct PeftAdapter {
  PeftLoraConfig config;
  // Keys without the `base_model.model.` prefix, so they equal the model's own names
  // (`llm.model.layers.0.self_attn.q_proj.lora_A.weight`, `resampler.query`).
  std::map<std::string, at::Tensor> tensors;
};

inline constexpr const char* kPeftKeyPrefix = "base_model.model.";

absl::StatusOr<PeftLoraConfig> parse_peft_config(const std::string& json_text, const std::string& source);
std::string peft_config_json(const PeftLoraConfig& config);

// Reads `dir` (CPU tensors as stored). INVALID_ARGUMENT naming the file and key for a missing
// file, a non-LoRA or unsupported config, or a key outside the PEFT naming.
absl::StatusOr<PeftAdapter> read_peft_adapter(const std::string& dir);
// Writes `dir` (which must not exist) atomically: staged in a sibling folder, then renamed.
absl::Status write_peft_adapter(const std::string& dir, const PeftAdapter& adapter);

}  // namespace cpm::core::io
