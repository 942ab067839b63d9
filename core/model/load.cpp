// SPDX-License-Identifier: Apache-2.0
#include "model/load.h"

#include "absl/strings/str_cat.h"
#include "common/guard.h"

namespace cpm::core::model {

absl::StatusOr<std::unique_ptr<LoadedModel>> load_model(const std::string& dir, const LoadOptions& options) {
  auto out = std::make_unique<LoadedModel>();
  auto configs = io::load_checkpoint_configs(dir);
  if (!configs.ok()) return configs.status();
  out->configs = std::move(*configs);
  auto tokenizer = io::load_tokenizer(dir);
  if (!tokenizer.ok()) return tokenizer.status();
  out->tokenizer = std::move(*tokenizer);
  auto chat_template = io::ChatTemplate::from_jinja(out->configs.tokenizer.chat_template);
  if (!chat_template.ok()) return chat_template.status();
  out->chat_template = *chat_template;
  auto checkpoint = io::SafetensorsCheckpoint::open(dir);
  if (!checkpoint.ok()) return checkpoint.status();
  // q/k/v and gate/up straight into one buffer each: the inference way's stacked projections.
  auto report = load_parameters(*checkpoint, minicpmo_parameter_specs(out->configs.model), options, out->params,
                                qwen2_stacked_projections(out->configs.model, "llm"));
  if (!report.ok()) return absl::Status(report.status().code(), absl::StrCat(dir, ": ", report.status().message()));
  out->report = std::move(*report);
  const absl::Status built = guarded("building the model", [&] {
    out->model = std::make_unique<MiniCPMO>(out->params, out->configs.model);
    return absl::OkStatus();
  });
  if (!built.ok()) return built;
  return out;
}

}  // namespace cpm::core::model
