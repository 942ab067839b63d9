// SPDX-License-Identifier: Apache-2.0
//
// The shared first half of cpm-tool's model commands: an image file read, decoded and sliced, and
// the chat prompt built around it, as the reference chat() does for [image, text]; and the model
// with a PEFT adapter put on it (--adapter).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "io/image_slicing.h"
#include "io/prompt.h"
#include "model/load.h"

namespace cpm::tool {

struct ImagePrompt {
  core::io::PreprocessedImage image;
  core::io::Prompt prompt;
};

// `text` empty: the image alone. Errors name the file.
absl::StatusOr<ImagePrompt> prepare_image_prompt(const core::model::LoadedModel& model,
                                                 const std::string& image_path, const std::string& text);

// `model`'s weights with the PEFT adapter directory `adapter_dir` on them: unmerged (LoRA run beside
// the frozen weights, as the server serves adapters) or, with `merge`, folded into them; null for an
// empty `adapter_dir` (run the base model). The result shares the base tensors that the adapter
// leaves alone. Errors name the directory and, for an adapter that does not fit the model, the
// tensor.
absl::StatusOr<std::unique_ptr<core::model::MiniCPMO>> adapted_model(const core::model::LoadedModel& model,
                                                                     const std::string& adapter_dir, bool merge);

// Where and in what dtype the commands with --device / --dtype load the model: "cpu" or "cuda"
// (the first GPU; INVALID_ARGUMENT without one), "f32" or "bf16" (default: bf16 on CUDA).
absl::StatusOr<core::model::LoadOptions> load_options(const std::string& device, const std::string& dtype);

}  // namespace cpm::tool
