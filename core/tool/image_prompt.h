// SPDX-License-Identifier: Apache-2.0
//
// The shared first half of cpm-tool's model commands: an image file read, decoded and sliced, and
// the chat prompt built around it, as the reference chat() does for [image, text].
#pragma once

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

}  // namespace cpm::tool
