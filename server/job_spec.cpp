// SPDX-License-Identifier: Apache-2.0
#include "job_spec.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <regex>

#include "absl/strings/str_cat.h"
#include "train/trainer.h"

namespace cpm::server {
namespace {

using cpm::v1::JobSpec;
namespace train = core::train;

constexpr const char* kDefaultTargets = R"(llm\..*layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj))";

absl::Status bad(const std::string& field, const std::string& rule) {
  return absl::InvalidArgumentError(absl::StrCat("spec.", field, " ", rule));
}

// The proto's documented defaults, for each field still unset.
void fill_defaults(JobSpec& s) {
  auto* d = s.mutable_data();
  if (!d->has_model_max_length()) d->set_model_max_length(2048);
  if (!d->has_max_slice_nums()) d->set_max_slice_nums(9);
  if (!d->has_split_seed()) d->set_split_seed(42);
  if (!d->has_skip_bad_records()) d->set_skip_bad_records(false);
  if (!d->has_csv_prompt()) d->set_csv_prompt(std::string(train::kDefaultCsvPrompt));
  if (!s.has_tune_vision()) s.set_tune_vision(true);
  if (!s.has_tune_llm()) s.set_tune_llm(false);
  auto* l = s.mutable_lora();
  if (!l->has_use_lora()) l->set_use_lora(true);
  if (!l->has_r()) l->set_r(64);
  if (!l->has_alpha()) l->set_alpha(16);
  if (!l->has_dropout()) l->set_dropout(0.1);
  if (!l->has_target_modules_regex() && l->target_modules().empty()) {
    l->set_target_modules_regex(kDefaultTargets);
  }
  if (l->modules_to_save().empty()) {
    l->add_modules_to_save("embed_tokens");
    l->add_modules_to_save("resampler");
    if (s.tune_vision()) l->add_modules_to_save("vpm");
  }
  if (!l->has_use_rslora()) l->set_use_rslora(false);
  auto* o = s.mutable_optimizer();
  if (!o->has_learning_rate()) o->set_learning_rate(1e-6);
  if (!o->has_weight_decay()) o->set_weight_decay(0.1);
  if (!o->has_adam_beta1()) o->set_adam_beta1(0.9);
  if (!o->has_adam_beta2()) o->set_adam_beta2(0.95);
  if (!o->has_adam_epsilon()) o->set_adam_epsilon(1e-8);
  if (!o->has_max_grad_norm()) o->set_max_grad_norm(1.0);
  if (o->lr_schedule() == cpm::v1::LR_SCHEDULE_UNSPECIFIED) o->set_lr_schedule(cpm::v1::LR_SCHEDULE_COSINE);
  if (!o->has_warmup_ratio()) o->set_warmup_ratio(0.01);
  if (!o->has_warmup_steps()) o->set_warmup_steps(0);
  if (!s.has_max_steps()) s.set_max_steps(1000);
  if (!s.has_num_epochs()) s.set_num_epochs(1);
  if (!s.has_batch_size()) s.set_batch_size(1);
  if (!s.has_gradient_accumulation_steps()) s.set_gradient_accumulation_steps(1);
  if (!s.has_gradient_checkpointing()) s.set_gradient_checkpointing(true);
  if (!s.has_seed()) s.set_seed(42);
  if (!s.has_logging_steps()) s.set_logging_steps(10);
  if (!s.has_save_steps()) s.set_save_steps(500);
  if (!s.has_save_total_limit()) s.set_save_total_limit(10);
  if (!s.has_eval_steps()) s.set_eval_steps(500);
  if (!s.has_eval_max_new_tokens()) s.set_eval_max_new_tokens(512);
}

// What train::validate does not cover, with the proto's field names.
absl::Status check_fields(const JobSpec& s) {
  const auto& d = s.data();
  // Upper bounds keep one step (and one evaluation, which runs between two OCR cycles) bounded.
  if (d.model_max_length() < 16 || d.model_max_length() > 32768) {
    return bad("data.model_max_length", "must be in [16, 32768] (Qwen2.5's context)");
  }
  if (d.max_slice_nums() < 1 || d.max_slice_nums() > 64) return bad("data.max_slice_nums", "must be in [1, 64]");
  if (d.has_eval_fraction() + d.has_eval_size() + !d.eval_dataset_id().empty() > 1) {
    return bad("data", "takes at most one of eval_fraction, eval_size and eval_dataset_id");
  }
  if (d.has_eval_fraction() && !(d.eval_fraction() >= 0 && d.eval_fraction() < 1)) {
    return bad("data.eval_fraction", "must be in [0, 1)");
  }
  if (d.has_eval_size() && d.eval_size() < 0) return bad("data.eval_size", "must be >= 0");
  if (!d.eval_dataset_id().empty()) {
    return absl::UnimplementedError(
        "spec.data.eval_dataset_id: a separate eval dataset is not supported yet; use eval_size or "
        "eval_fraction to hold records out of the training data");
  }
  const auto& l = s.lora();
  if (l.r() < 1 || l.r() > 4096) return bad("lora.r", "must be in [1, 4096]");
  if (!(l.alpha() > 0) || !std::isfinite(l.alpha())) return bad("lora.alpha", "must be positive");
  if (!(l.dropout() >= 0 && l.dropout() < 1)) return bad("lora.dropout", "must be in [0, 1)");
  if (l.has_target_modules_regex() && !l.target_modules().empty()) {
    return bad("lora", "takes target_modules_regex or target_modules, not both");
  }
  if (l.has_target_modules_regex()) {
    try {
      std::regex check(l.target_modules_regex());
    } catch (const std::regex_error& e) {
      return bad("lora.target_modules_regex", absl::StrCat("is not a valid regex: ", e.what()));
    }
  }
  if (s.logging_steps() < 1) return bad("logging_steps", "must be >= 1");
  if (s.eval_max_new_tokens() > 4096) return bad("eval_max_new_tokens", "must be at most 4096");
  if (s.batch_size() > 1024) return bad("batch_size", "must be at most 1024");
  if (s.labels_size() > 64) return bad("labels", "holds at most 64 entries");
  for (const auto& [k, v] : s.labels()) {
    if (k.empty() || k.size() > 63 || v.size() > 256) {
      return bad("labels", "keys must be 1-63 characters and values at most 256");
    }
  }
  return absl::OkStatus();
}

const char* dtype_name(c10::ScalarType t) { return t == c10::ScalarType::BFloat16 ? "bfloat16" : "float32"; }

}  // namespace

absl::Status check_job_name(const std::string& name) {
  const bool ok = !name.empty() && name.size() <= 64 &&
                  std::all_of(name.begin(), name.end(), [](char c) {
                    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
                  }) &&
                  name != "." && name != "..";
  if (ok) return absl::OkStatus();
  return bad("name", absl::StrCat("\"", name, "\" must be 1-64 characters of [A-Za-z0-9._-]"));
}

absl::StatusOr<JobSpec> complete_spec(JobSpec spec, const std::string& id, c10::ScalarType model_dtype) {
  if (spec.name().empty()) spec.set_name(absl::StrCat("job-", id));
  if (absl::Status s = check_job_name(spec.name()); !s.ok()) return s;
  if (spec.dataset_case() == JobSpec::DATASET_NOT_SET) {
    return bad("dataset", "is required: a dataset_id from UploadDataset or a dataset_path on the daemon host");
  }
  const cpm::v1::Precision loaded =
      model_dtype == c10::ScalarType::BFloat16 ? cpm::v1::PRECISION_BF16 : cpm::v1::PRECISION_FP32;
  if (spec.precision() == cpm::v1::PRECISION_UNSPECIFIED) spec.set_precision(loaded);
  if (spec.precision() == cpm::v1::PRECISION_FP16) {
    return absl::UnimplementedError(
        "spec.precision FP16: not supported (the recipe trains in bf16); leave precision unset to train in the "
        "dtype cpmd loaded the model in (bf16 on a GPU)");
  }
  if (spec.precision() != loaded) {
    return absl::FailedPreconditionError(absl::StrCat(
        "spec.precision ", cpm::v1::Precision_Name(spec.precision()), ": the daemon's model is loaded in ",
        dtype_name(model_dtype), " and jobs train in that dtype; leave precision unset, or restart cpmd with "
        "--dtype to match"));
  }
  fill_defaults(spec);
  if (absl::Status s = check_fields(spec); !s.ok()) return s;
  // The engine's own checks (learning rate, betas, steps, ...), with the proto's field names.
  train::TrainConfig config = run_options(spec, "/validate", "/validate", "").config;
  if (absl::Status s = train::validate(config); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("spec: ", s.message()));
  }
  return spec;
}

core::runtime::TrainingRunOptions run_options(const JobSpec& s, const std::string& output_dir,
                                              const std::string& adapter_dir, const std::string& base_model) {
  core::runtime::TrainingRunOptions r;
  train::TrainConfig& c = r.config;
  const auto& l = s.lora();
  c.use_lora = l.use_lora();
  c.lora.r = l.r();
  c.lora.lora_alpha = l.alpha();
  c.lora.lora_dropout = l.dropout();
  if (l.has_target_modules_regex()) c.lora.target_modules_regex = l.target_modules_regex();
  c.lora.target_modules.assign(l.target_modules().begin(), l.target_modules().end());
  c.lora.modules_to_save.assign(l.modules_to_save().begin(), l.modules_to_save().end());
  c.lora.use_rslora = l.use_rslora();
  c.lora.base_model_name_or_path = base_model;
  c.tune_vision = s.tune_vision();
  c.tune_llm = s.tune_llm();
  const auto& o = s.optimizer();
  c.learning_rate = o.learning_rate();
  c.adam.beta1 = o.adam_beta1();
  c.adam.beta2 = o.adam_beta2();
  c.adam.eps = o.adam_epsilon();
  c.adam.weight_decay = o.weight_decay();
  c.max_grad_norm = o.max_grad_norm();
  c.schedule = o.lr_schedule() == cpm::v1::LR_SCHEDULE_LINEAR     ? train::Schedule::kLinear
               : o.lr_schedule() == cpm::v1::LR_SCHEDULE_CONSTANT ? train::Schedule::kConstant
                                                                  : train::Schedule::kCosine;
  c.warmup_ratio = o.warmup_ratio();
  c.warmup_steps = o.warmup_steps();
  c.max_steps = s.max_steps();
  c.num_epochs = s.num_epochs();
  c.batch_size = s.batch_size();
  c.gradient_accumulation_steps = s.gradient_accumulation_steps();
  c.gradient_checkpointing = s.gradient_checkpointing();
  c.seed = static_cast<uint64_t>(s.seed());
  c.save_steps = s.save_steps();
  c.save_total_limit = s.save_total_limit();
  c.eval_steps = s.eval_steps();
  c.eval_max_new_tokens = s.eval_max_new_tokens();
  c.output_dir = output_dir;
  r.examples.model_max_length = s.data().model_max_length();
  r.examples.max_slice_nums = s.data().max_slice_nums();
  r.logging_steps = s.logging_steps();
  r.adapter_dir = adapter_dir;
  return r;
}

train::DataOptions data_options(const JobSpec& s) {
  train::DataOptions d;
  const auto& p = s.data();
  d.read.format = p.format() == cpm::v1::DATASET_FORMAT_CSV                 ? train::DatasetFormat::kCsv
                  : p.format() == cpm::v1::DATASET_FORMAT_CONVERSATION_JSON ? train::DatasetFormat::kConversationJson
                                                                            : train::DatasetFormat::kAuto;
  d.read.csv_prompt = p.csv_prompt();
  if (p.has_eval_fraction()) d.split.eval_fraction = p.eval_fraction();
  if (p.has_eval_size()) d.split.eval_size = p.eval_size();
  d.split.seed = p.split_seed();
  d.skip_bad_records = p.skip_bad_records();
  return d;
}

}  // namespace cpm::server
