// SPDX-License-Identifier: Apache-2.0
//
// The CPU half of an OCR request: image bytes decoded, sliced and normalised, and the chat prompt
// built around them, as the reference chat() does for [image, question]. It needs the tokenizer,
// the chat template and the preprocessor config, never a model tensor, so it runs off the engine
// thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "io/chat_template.h"
#include "io/image_decode.h"
#include "io/image_slicing.h"
#include "io/model_config.h"
#include "io/prompt.h"
#include "io/tokenizer.h"

namespace cpm::core::runtime {

struct OcrInput {
  io::PreprocessedImage image;  // pixel_values: float32 CPU strips [3, p, L_i * p]
  io::Prompt prompt;            // input_ids and the image spans the features overwrite
};

struct InputLimits {
  io::DecodeLimits image;  // Default: io's (32 MiB, 50 megapixels)
  int max_slice_nums = 9;  // the largest max_slice_nums a request may ask for. Default: 9
};

// The tokenizer, chat template and preprocessor config a prompt is built with (all immutable
// after loading, so reads from several threads are safe).
struct PromptContext {
  const io::Tokenizer& tokenizer;
  const io::ChatTemplate& chat_template;
  const io::PreprocessorConfig& preprocessor;
};

// `question` empty: the image alone. INVALID_ARGUMENT for an image io cannot decode (the message
// starts with "image: "), a max_slice_nums outside [1, limits.max_slice_nums] or a prompt that
// cannot be built. Thread-safe.
absl::StatusOr<OcrInput> prepare_ocr_input(const PromptContext& context, std::string_view image,
                                           const std::string& question,
                                           std::optional<int> max_slice_nums,
                                           const InputLimits& limits);

}  // namespace cpm::core::runtime
