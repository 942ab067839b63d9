// SPDX-License-Identifier: Apache-2.0
#include "runtime/ocr_input.h"

#include <cstdint>
#include <span>

#include "absl/strings/str_cat.h"

namespace cpm::core::runtime {

absl::StatusOr<OcrInput> prepare_ocr_input(const PromptContext& context, std::string_view image,
                                           const std::string& question,
                                           std::optional<int> max_slice_nums,
                                           const InputLimits& limits) {
  io::PreprocessorConfig preprocessor = context.preprocessor;
  if (max_slice_nums) {
    if (*max_slice_nums < 1 || *max_slice_nums > limits.max_slice_nums) {
      return absl::InvalidArgumentError(absl::StrCat(
          "max_slice_nums ", *max_slice_nums, " is outside [1, ", limits.max_slice_nums, "]"));
    }
    preprocessor.max_slice_nums = *max_slice_nums;
  }
  const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(image.data()),
                                       image.size());
  auto rgb = io::decode_image(bytes, limits.image);
  // io's decode errors already read "image: ...".
  if (!rgb.ok()) return absl::InvalidArgumentError(rgb.status().message());
  auto pre = io::preprocess_image(*rgb, preprocessor);
  if (!pre.ok()) return absl::InvalidArgumentError(absl::StrCat("image: ", pre.status().message()));

  OcrInput out;
  out.image = *std::move(pre);
  io::PromptImage prompt_image;
  if (out.image.grid)
    prompt_image.grid = std::make_pair(out.image.grid->cols, out.image.grid->rows);
  std::vector<io::ContentItem> content = {io::ImageRef{0}};
  if (!question.empty()) content.emplace_back(question);
  auto prompt = io::build_prompt(context.tokenizer, context.chat_template, preprocessor,
                                 {{"user", content}}, {prompt_image});
  if (!prompt.ok())
    return absl::Status(prompt.status().code(),
                        absl::StrCat("prompt: ", prompt.status().message()));
  out.prompt = *std::move(prompt);
  return out;
}

}  // namespace cpm::core::runtime
