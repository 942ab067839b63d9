// SPDX-License-Identifier: Apache-2.0
//
// A cpm.v1.JobSpec from `cpmctl train`'s flags and --config file. The file is a JobSpec in JSON or
// YAML with training.proto's field names ({"lora": {"r": 16}, "optimizer": {"learning_rate":
// 1e-4}}), the same shape `cpmctl job ID --json` prints under "spec"; flags override it. Unset
// fields are left unset: the daemon fills in the recipe's defaults, which the flags' help shows.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cpm/v1/training.pb.h"

namespace cpmctl {

// One member per JobSpec hyperparameter; unset: not given on the command line.
struct JobSpecFlags {
  std::optional<std::string> name;
  // DataOptions
  std::optional<std::string> format;  // auto | json | csv
  std::optional<int32_t> model_max_length, max_slice_nums, eval_size;
  std::optional<double> eval_fraction;
  std::optional<std::string> eval_dataset_id, csv_prompt;
  std::optional<int64_t> split_seed;
  std::optional<bool> skip_bad_records;
  // LoraOptions
  std::optional<bool> use_lora, use_rslora;
  std::optional<int32_t> lora_r;
  std::optional<double> lora_alpha, lora_dropout;
  std::optional<std::string> target_modules_regex;
  std::vector<std::string> target_modules, modules_to_save;
  // OptimizerOptions
  std::optional<double> learning_rate, weight_decay, adam_beta1, adam_beta2, adam_epsilon, max_grad_norm,
      warmup_ratio;
  std::optional<std::string> lr_schedule;  // cosine | linear | constant
  std::optional<int64_t> warmup_steps;
  // The loop
  std::optional<bool> tune_vision, tune_llm, gradient_checkpointing;
  std::optional<int64_t> max_steps, seed, logging_steps, save_steps, eval_steps;
  std::optional<double> num_epochs;
  std::optional<int32_t> batch_size, gradient_accumulation_steps, save_total_limit, eval_max_new_tokens;
  std::optional<std::string> precision;  // auto | bf16 | fp16 | fp32
  std::vector<std::string> labels;       // KEY=VALUE
};

// Adds every flag to `cmd`, in option groups, each with the recipe's default in its help.
void add_job_spec_flags(CLI::App* cmd, JobSpecFlags& flags);

// Writes the flags that were given into `spec`. Setting one of a pair that excludes the other
// (eval_fraction / eval_size / eval_dataset_id, target_modules_regex / target_modules) clears the
// other, so a flag overrides the config file. INVALID_ARGUMENT for a label without '='.
absl::Status apply_job_spec_flags(const JobSpecFlags& flags, cpm::v1::JobSpec* spec);

// A JobSpec from a .json, .yaml or .yml file. INVALID_ARGUMENT naming the file and the field for
// unknown fields or wrong types.
absl::StatusOr<cpm::v1::JobSpec> read_job_spec_file(const std::string& path);

}  // namespace cpmctl
