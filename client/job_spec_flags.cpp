// SPDX-License-Identifier: Apache-2.0
#include "job_spec_flags.h"

#include <google/protobuf/util/json_util.h>

#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "cli_checks.h"
#include "common/read_file.h"
#include "yaml_json.h"

namespace cpmctl {
namespace {

constexpr const char* kData = "Data (DataOptions)";
constexpr const char* kLora = "LoRA (LoraOptions)";
constexpr const char* kOptimizer = "Optimizer (OptimizerOptions)";
constexpr const char* kLoop = "Training loop";

template <typename T>
CLI::Option* option(CLI::App* cmd, const std::string& name, std::optional<T>& into, const std::string& help,
                    const char* group) {
  return cmd->add_option(name, into, help)->group(group);
}

// --NAME sets true, --no-NAME false; neither leaves it to the config file or the default.
void switch_pair(CLI::App* cmd, const std::string& name, std::optional<bool>& into, const std::string& on,
                 const std::string& off, const char* group) {
  cmd->add_flag_callback("--" + name, [&into] { into = true; }, on)->group(group);
  cmd->add_flag_callback("--no-" + name, [&into] { into = false; }, off)->group(group);
}

template <typename T, typename Set>
void put(const std::optional<T>& value, Set set) {
  if (value) set(*value);
}

}  // namespace

void add_job_spec_flags(CLI::App* cmd, JobSpecFlags& f) {
  option(cmd, "--name", f.name, "job and adapter name, 1-64 of [A-Za-z0-9._-] (default: job-<id>)", kLoop);

  option(cmd, "--format", f.format, "dataset format: auto (by the file name), json or csv (default auto)", kData)
      ->check(CLI::IsMember({"auto", "json", "csv"}));
  option(cmd, "--model-max-length", f.model_max_length,
         "tokens per example after the chat template; longer ones are cut (default 2048)", kData)
      ->check(positive());
  option(cmd, "--max-slice-nums", f.max_slice_nums, "most slices per image (default 9)", kData)
      ->check(positive());
  option(cmd, "--eval-fraction", f.eval_fraction,
         "fraction held out for evaluation by a seeded shuffle (default 0.05, at most 500 examples)", kData)
      ->check(between(0.0, 1.0));
  option(cmd, "--eval-size", f.eval_size, "examples held out for evaluation, instead of --eval-fraction", kData)
      ->check(non_negative())
      ->excludes("--eval-fraction");
  option(cmd, "--eval-dataset-id", f.eval_dataset_id,
         "an uploaded dataset to evaluate on (then nothing is held out)", kData)
      ->excludes("--eval-fraction")
      ->excludes("--eval-size");
  option(cmd, "--split-seed", f.split_seed, "seed of the train/eval split (default 42)", kData);
  switch_pair(cmd, "skip-bad-records", f.skip_bad_records,
              "skip and count bad records instead of failing with the list (default: fail)",
              "fail on any bad record (the default)", kData);
  option(cmd, "--csv-prompt", f.csv_prompt, "the user question for CSV datasets (default: the LaTeX-OCR recipe's)",
         kData);

  switch_pair(cmd, "use-lora", f.use_lora, "train LoRA adapters on the LLM (the default)",
              "train nothing in the LLM", kLora);
  option(cmd, "--lora-r", f.lora_r, "LoRA rank (default 64)", kLora)->check(positive());
  option(cmd, "--lora-alpha", f.lora_alpha, "LoRA scaling numerator alpha (default 16)", kLora);
  option(cmd, "--lora-dropout", f.lora_dropout, "dropout on the LoRA input (default 0.1)", kLora)
      ->check(between(0.0, 1.0));
  option(cmd, "--target-modules-regex", f.target_modules_regex,
         "modules that get LoRA, a regex matched in full (default "
         "llm\\..*layers\\.\\d+\\.self_attn\\.(q_proj|k_proj|v_proj|o_proj))",
         kLora);
  cmd->add_option("--target-modules", f.target_modules,
                  "modules that get LoRA as name suffixes (q_proj v_proj ...), instead of the regex")
      ->group(kLora)
      ->excludes("--target-modules-regex");
  cmd->add_option("--modules-to-save", f.modules_to_save,
                  "modules trained in full and saved with the adapter (default embed_tokens resampler, plus vpm "
                  "with --tune-vision)")
      ->group(kLora);
  switch_pair(cmd, "use-rslora", f.use_rslora, "rank-stabilised scaling alpha/sqrt(r) (default: off)",
              "scaling alpha/r (the default)", kLora);

  option(cmd, "--learning-rate,--lr", f.learning_rate, "peak learning rate (default 1e-6)", kOptimizer)
      ->check(positive());
  option(cmd, "--weight-decay", f.weight_decay, "AdamW decoupled weight decay (default 0.1)", kOptimizer)
      ->check(non_negative());
  option(cmd, "--adam-beta1", f.adam_beta1, "default 0.9", kOptimizer)->check(between(0.0, 1.0));
  option(cmd, "--adam-beta2", f.adam_beta2, "default 0.95", kOptimizer)->check(between(0.0, 1.0));
  option(cmd, "--adam-epsilon", f.adam_epsilon, "default 1e-8", kOptimizer)->check(positive());
  option(cmd, "--max-grad-norm", f.max_grad_norm, "global gradient-norm clipping, 0 disables it (default 1.0)",
         kOptimizer)
      ->check(non_negative());
  option(cmd, "--lr-schedule", f.lr_schedule, "cosine, linear or constant (default cosine)", kOptimizer)
      ->check(CLI::IsMember({"cosine", "linear", "constant"}));
  option(cmd, "--warmup-ratio", f.warmup_ratio, "linear warmup as a fraction of the steps (default 0.01)",
         kOptimizer)
      ->check(between(0.0, 1.0));
  option(cmd, "--warmup-steps", f.warmup_steps, "linear warmup steps, instead of --warmup-ratio", kOptimizer)
      ->check(non_negative());

  switch_pair(cmd, "tune-vision", f.tune_vision, "train the vision tower in full (the default)",
              "keep the vision tower frozen", kLoop);
  switch_pair(cmd, "tune-llm", f.tune_llm, "train the whole LLM (needs --no-use-lora; default: off)",
              "leave the LLM's own weights frozen (the default)", kLoop);
  option(cmd, "--max-steps", f.max_steps, "optimizer steps; 0 trains for --num-epochs (default 1000)", kLoop)
      ->check(non_negative());
  option(cmd, "--num-epochs", f.num_epochs, "passes over the training split when --max-steps is 0 (default 1)",
         kLoop)
      ->check(positive());
  option(cmd, "--batch-size", f.batch_size, "examples per micro-batch (default 1)", kLoop)
      ->check(positive());
  option(cmd, "--gradient-accumulation-steps", f.gradient_accumulation_steps,
         "micro-batches per optimizer step (default 1)", kLoop)
      ->check(positive());
  switch_pair(cmd, "gradient-checkpointing", f.gradient_checkpointing,
              "recompute activations in the backward pass (the default)", "keep activations (faster, more memory)",
              kLoop);
  option(cmd, "--precision", f.precision, "auto, bf16, fp16 or fp32 (default auto: bf16 on a GPU, fp32 on a CPU)",
         kLoop)
      ->check(CLI::IsMember({"auto", "bf16", "fp16", "fp32"}));
  option(cmd, "--seed", f.seed, "seeds data order, dropout and LoRA initialisation (default 42)", kLoop);
  option(cmd, "--logging-steps", f.logging_steps, "a progress event every N steps (default 10)", kLoop)
      ->check(positive());
  option(cmd, "--save-steps", f.save_steps, "checkpoint every N steps (default 500)", kLoop)
      ->check(positive());
  option(cmd, "--save-total-limit", f.save_total_limit, "checkpoints kept on disk (default 10)", kLoop)
      ->check(positive());
  option(cmd, "--eval-steps", f.eval_steps, "evaluate every N steps and at the end; 0: only at the end (default 500)",
         kLoop)
      ->check(non_negative());
  option(cmd, "--eval-max-new-tokens", f.eval_max_new_tokens, "tokens decoded per eval example (default 512)",
         kLoop)
      ->check(positive());
  cmd->add_option("--label", f.labels, "KEY=VALUE stored with the job; repeatable")->group(kLoop);
}

absl::Status apply_job_spec_flags(const JobSpecFlags& f, cpm::v1::JobSpec* s) {
  put(f.name, [&](const std::string& v) { s->set_name(v); });
  auto* d = s->mutable_data();
  put(f.format, [&](const std::string& v) {
    d->set_format(v == "json"  ? cpm::v1::DATASET_FORMAT_CONVERSATION_JSON
                  : v == "csv" ? cpm::v1::DATASET_FORMAT_CSV
                               : cpm::v1::DATASET_FORMAT_UNSPECIFIED);
  });
  put(f.model_max_length, [&](int32_t v) { d->set_model_max_length(v); });
  put(f.max_slice_nums, [&](int32_t v) { d->set_max_slice_nums(v); });
  if (f.eval_fraction || f.eval_size || f.eval_dataset_id) {
    d->clear_eval_fraction();
    d->clear_eval_size();
    d->clear_eval_dataset_id();
  }
  put(f.eval_fraction, [&](double v) { d->set_eval_fraction(v); });
  put(f.eval_size, [&](int32_t v) { d->set_eval_size(v); });
  put(f.eval_dataset_id, [&](const std::string& v) { d->set_eval_dataset_id(v); });
  put(f.split_seed, [&](int64_t v) { d->set_split_seed(v); });
  put(f.skip_bad_records, [&](bool v) { d->set_skip_bad_records(v); });
  put(f.csv_prompt, [&](const std::string& v) { d->set_csv_prompt(v); });

  auto* l = s->mutable_lora();
  put(f.use_lora, [&](bool v) { l->set_use_lora(v); });
  put(f.lora_r, [&](int32_t v) { l->set_r(v); });
  put(f.lora_alpha, [&](double v) { l->set_alpha(v); });
  put(f.lora_dropout, [&](double v) { l->set_dropout(v); });
  if (f.target_modules_regex || !f.target_modules.empty()) {
    l->clear_target_modules_regex();
    l->clear_target_modules();
  }
  put(f.target_modules_regex, [&](const std::string& v) { l->set_target_modules_regex(v); });
  for (const auto& m : f.target_modules) l->add_target_modules(m);
  if (!f.modules_to_save.empty()) {
    l->clear_modules_to_save();
    for (const auto& m : f.modules_to_save) l->add_modules_to_save(m);
  }
  put(f.use_rslora, [&](bool v) { l->set_use_rslora(v); });

  auto* o = s->mutable_optimizer();
  put(f.learning_rate, [&](double v) { o->set_learning_rate(v); });
  put(f.weight_decay, [&](double v) { o->set_weight_decay(v); });
  put(f.adam_beta1, [&](double v) { o->set_adam_beta1(v); });
  put(f.adam_beta2, [&](double v) { o->set_adam_beta2(v); });
  put(f.adam_epsilon, [&](double v) { o->set_adam_epsilon(v); });
  put(f.max_grad_norm, [&](double v) { o->set_max_grad_norm(v); });
  put(f.lr_schedule, [&](const std::string& v) {
    o->set_lr_schedule(v == "linear"     ? cpm::v1::LR_SCHEDULE_LINEAR
                       : v == "constant" ? cpm::v1::LR_SCHEDULE_CONSTANT
                                         : cpm::v1::LR_SCHEDULE_COSINE);
  });
  put(f.warmup_ratio, [&](double v) { o->set_warmup_ratio(v); });
  put(f.warmup_steps, [&](int64_t v) { o->set_warmup_steps(v); });

  put(f.tune_vision, [&](bool v) { s->set_tune_vision(v); });
  put(f.tune_llm, [&](bool v) { s->set_tune_llm(v); });
  put(f.max_steps, [&](int64_t v) { s->set_max_steps(v); });
  put(f.num_epochs, [&](double v) { s->set_num_epochs(v); });
  put(f.batch_size, [&](int32_t v) { s->set_batch_size(v); });
  put(f.gradient_accumulation_steps, [&](int32_t v) { s->set_gradient_accumulation_steps(v); });
  put(f.gradient_checkpointing, [&](bool v) { s->set_gradient_checkpointing(v); });
  put(f.precision, [&](const std::string& v) {
    s->set_precision(v == "bf16"   ? cpm::v1::PRECISION_BF16
                     : v == "fp16" ? cpm::v1::PRECISION_FP16
                     : v == "fp32" ? cpm::v1::PRECISION_FP32
                                   : cpm::v1::PRECISION_UNSPECIFIED);
  });
  put(f.seed, [&](int64_t v) { s->set_seed(v); });
  put(f.logging_steps, [&](int64_t v) { s->set_logging_steps(v); });
  put(f.save_steps, [&](int64_t v) { s->set_save_steps(v); });
  put(f.save_total_limit, [&](int32_t v) { s->set_save_total_limit(v); });
  put(f.eval_steps, [&](int64_t v) { s->set_eval_steps(v); });
  put(f.eval_max_new_tokens, [&](int32_t v) { s->set_eval_max_new_tokens(v); });
  for (const std::string& label : f.labels) {
    const size_t eq = label.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat("--label ", label, " is not KEY=VALUE"));
    }
    (*s->mutable_labels())[label.substr(0, eq)] = label.substr(eq + 1);
  }
  return absl::OkStatus();
}

absl::StatusOr<cpm::v1::JobSpec> read_job_spec_file(const std::string& path) {
  auto text = cpm::core::read_whole_file(path);
  if (!text.ok()) return text.status();
  const std::string ext = absl::AsciiStrToLower(std::filesystem::path(path).extension().string());
  std::string json = *text;
  if (ext == ".yaml" || ext == ".yml") {
    auto converted = yaml_to_json(*text);
    if (!converted.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", converted.status().message()));
    }
    json = *converted;
  } else if (ext != ".json") {
    return absl::InvalidArgumentError(absl::StrCat(path, ": name it .json, .yaml or .yml"));
  }
  cpm::v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(json, &spec, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a JobSpec (training.proto's field names, e.g. {\"lora\": {\"r\": 16}}): ",
        std::string(status.message().data(), status.message().size())));
  }
  return spec;
}

}  // namespace cpmctl
