// SPDX-License-Identifier: Apache-2.0
//
// MiniCPM-o-2.6 prompts with images (spec section 6): each image in a message becomes the
// placeholder `(<image>./</image>)`, the chat template is applied, and the k-th placeholder is
// expanded to `<image_id>k</image_id><image>` + 64 x `<unk>` + `</image>` followed, for a sliced
// image, by its rows of `<slice>` + 64 x `<unk>` + `</slice>` (rows joined by "\n"). The vision
// features later overwrite the `<unk>` spans, which `image_bound` locates.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "io/chat_template.h"
#include "io/model_config.h"
#include "io/tokenizer.h"

namespace cpm::core::io {

// The MiniCPM-o-2.6 tokens added after Qwen2.5's own specials, in the order their ids follow.
inline constexpr const char* kMiniCpmSpecialTokens[] = {
    "<image>",        "</image>",     "<ref>",           "</ref>",        "<box>",
    "</box>",         "<quad>",       "</quad>",         "<point>",       "</point>",
    "<slice>",        "</slice>",     "<image_id>",      "</image_id>",   "<|audio_start|>",
    "<|audio_end|>",  "<|spk_bos|>",  "<|spk|>",         "<|spk_eos|>",   "<|tts_bos|>",
    "<|tts_eos|>"};

// What the placeholder expansion needs to know about one image: its slicing grid [cols, rows], or
// nothing when it was not sliced (the source image alone).
struct PromptImage {
  std::optional<std::pair<int, int>> grid;
};

// One content item of a message: text, or the index of an image in the request's image list.
struct ImageRef {
  size_t index = 0;
};
using ContentItem = std::variant<std::string, ImageRef>;

struct ChatTurn {
  std::string role;
  std::vector<ContentItem> content;
};

struct Prompt {
  std::string text;                   // after the template and placeholder expansion
  std::vector<int32_t> input_ids;
  // [start, end) token spans of the `<unk>` runs, in image order (source, then slices row-major).
  std::vector<std::pair<int64_t, int64_t>> image_bound;
};

struct PromptOptions {
  bool add_generation_prompt = true;
  // Tokens kept (the reference truncates the tokenized prompt to max_inp_length).
  int64_t max_input_tokens = 32768;
};

// Builds the prompt as the reference processor does (chat() -> MiniCPMOProcessor). Images must be
// referenced in the order of `images` (the k-th placeholder is image k). INVALID_ARGUMENT when the
// tokenizer lacks a MiniCPM token, the placeholders and images disagree, or a bound is incomplete.
absl::StatusOr<Prompt> build_prompt(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                                    const PreprocessorConfig& config,
                                    const std::vector<ChatTurn>& turns,
                                    const std::vector<PromptImage>& images,
                                    const PromptOptions& options = {});

// The text that stands for image `index` (its `<image_id>`, the source and the slices).
std::string image_placeholder(const PreprocessorConfig& config, size_t index, const PromptImage& image);

}  // namespace cpm::core::io
