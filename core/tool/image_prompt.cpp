// SPDX-License-Identifier: Apache-2.0
#include "image_prompt.h"

#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "io/image_decode.h"
#include "common/device.h"
#include "io/peft_adapter.h"
#include "model/adapter.h"

namespace cpm::tool {

absl::StatusOr<ImagePrompt> prepare_image_prompt(const core::model::LoadedModel& m,
                                                 const std::string& image_path, const std::string& text) {
  std::ifstream in(image_path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(image_path, ": cannot be read"));
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
  auto image = core::io::decode_image(bytes);
  if (!image.ok()) return absl::InvalidArgumentError(absl::StrCat(image_path, ": ", image.status().message()));
  ImagePrompt out;
  auto pre = core::io::preprocess_image(*image, m.configs.preprocessor);
  if (!pre.ok()) return pre.status();
  out.image = std::move(*pre);
  core::io::PromptImage prompt_image;
  if (out.image.grid) prompt_image.grid = std::make_pair(out.image.grid->cols, out.image.grid->rows);
  std::vector<core::io::ContentItem> content = {core::io::ImageRef{0}};
  if (!text.empty()) content.emplace_back(text);
  auto prompt = core::io::build_prompt(*m.tokenizer, m.chat_template, m.configs.preprocessor,
                                       {{"user", content}}, {prompt_image});
  if (!prompt.ok()) return prompt.status();
  out.prompt = std::move(*prompt);
  return out;
}

absl::StatusOr<std::unique_ptr<core::model::MiniCPMO>> adapted_model(const core::model::LoadedModel& m,
                                                                     const std::string& adapter_dir, bool merge) {
  if (adapter_dir.empty()) return nullptr;
  auto adapter = core::io::read_peft_adapter(adapter_dir);
  if (!adapter.ok()) return adapter.status();
  const core::io::ModelConfig& config = m.configs.model;
  auto params = merge ? core::model::merge_adapter(m.params, config, *adapter)
                      : core::model::apply_adapter(m.params, config, *adapter);
  if (!params.ok()) return absl::InvalidArgumentError(absl::StrCat(adapter_dir, ": ", params.status().message()));
  // Merged weights run as plain ones; unmerged LoRA needs the adapter's scaling.
  const core::model::RunOptions options =
      merge ? core::model::RunOptions{} : core::model::run_options(adapter->config, /*training=*/false);
  return std::make_unique<core::model::MiniCPMO>(*params, config, options);
}

absl::StatusOr<core::model::LoadOptions> load_options(const std::string& device, const std::string& dtype) {
  core::model::LoadOptions load;
  if (device == "cuda") {
    if (!core::cuda_available()) return absl::InvalidArgumentError("--device cuda: no CUDA device in this build or machine");
    load.device = c10::Device(c10::DeviceType::CUDA, 0);
  }
  const bool bf16 = dtype == "bf16" || (dtype.empty() && device == "cuda");
  load.dtype = bf16 ? c10::ScalarType::BFloat16 : c10::ScalarType::Float;
  return load;
}

}  // namespace cpm::tool
