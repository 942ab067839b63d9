// SPDX-License-Identifier: Apache-2.0
#include "io/prompt.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace cpm::core::io {
namespace {

constexpr const char* kImageTag = "(<image>./</image>)";

std::string repeat(const std::string& s, int n) {
  std::string out;
  out.reserve(s.size() * static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

}  // namespace

std::string image_placeholder(const PreprocessorConfig& config, size_t index, const PromptImage& image) {
  const std::string unk = repeat(config.unk, config.image_feature_size);
  std::string out;
  if (config.use_image_id) out += config.im_id_start + std::to_string(index) + config.im_id_end;
  out += config.im_start + unk + config.im_end;
  if (config.slice_mode && image.grid) {
    const auto [cols, rows] = *image.grid;
    const std::string cell = config.slice_start + unk + config.slice_end;
    for (int r = 0; r < rows; ++r) {
      if (r > 0) out += "\n";
      out += repeat(cell, cols);
    }
  }
  return out;
}

absl::StatusOr<Prompt> build_prompt(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                                    const PreprocessorConfig& config,
                                    const std::vector<ChatTurn>& turns,
                                    const std::vector<PromptImage>& images,
                                    const PromptOptions& options) {
  // Resolve the marker ids from the tokenizer itself (they differ between checkpoints).
  auto id_of = [&](const std::string& token) -> absl::StatusOr<int32_t> {
    const auto id = tokenizer.token_to_id(token);
    if (!id) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the tokenizer has no '", token, "' token; is this a MiniCPM-V/o checkpoint?"));
    }
    return *id;
  };
  absl::StatusOr<int32_t> im_start = id_of(config.im_start), im_end = id_of(config.im_end),
                          slice_start = id_of(config.slice_start), slice_end = id_of(config.slice_end);
  for (const auto* id : {&im_start, &im_end, &slice_start, &slice_end}) {
    if (!id->ok()) return id->status();
  }

  // chat(): each message's items joined by "\n", images as the tag.
  std::vector<ChatMessage> messages;
  size_t next_image = 0;
  for (const ChatTurn& turn : turns) {
    std::string content;
    for (size_t i = 0; i < turn.content.size(); ++i) {
      if (i > 0) content += "\n";
      if (const auto* text = std::get_if<std::string>(&turn.content[i])) {
        content += *text;
      } else {
        const size_t index = std::get<ImageRef>(turn.content[i]).index;
        if (index != next_image) {
          return absl::InvalidArgumentError(absl::StrCat(
              "images must appear in the conversation in order; found image ", index,
              " where image ", next_image, " was expected"));
        }
        ++next_image;
        content += kImageTag;
      }
    }
    messages.push_back({turn.role, std::move(content)});
  }
  if (next_image != images.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the conversation shows ", next_image,
                                                   " images but ", images.size(), " were given"));
  }

  // The processor splits the rendered text on the tag and interleaves the placeholders.
  const std::string rendered = chat_template.render(messages, options.add_generation_prompt);
  Prompt prompt;
  size_t pos = 0, k = 0;
  for (size_t hit; (hit = rendered.find(kImageTag, pos)) != std::string::npos; pos = hit + std::strlen(kImageTag)) {
    prompt.text += rendered.substr(pos, hit - pos);
    if (k >= images.size()) {
      return absl::InvalidArgumentError(
          "the text itself contains '(<image>./</image>)'; remove it or pass the image as an image");
    }
    prompt.text += image_placeholder(config, k, images[k]);
    ++k;
  }
  prompt.text += rendered.substr(pos);

  auto ids = tokenizer.encode(prompt.text);
  if (!ids.ok()) return ids.status();
  prompt.input_ids = std::move(*ids);
  if (static_cast<int64_t>(prompt.input_ids.size()) > options.max_input_tokens) {
    prompt.input_ids.resize(static_cast<size_t>(options.max_input_tokens));
  }

  // image_bound: starts after each <image>/<slice>, ends at each </image>/</slice>, paired in order.
  std::vector<int64_t> starts, ends;
  for (size_t i = 0; i < prompt.input_ids.size(); ++i) {
    const int32_t id = prompt.input_ids[i];
    if (id == *im_start || id == *slice_start) starts.push_back(static_cast<int64_t>(i) + 1);
    if (id == *im_end || id == *slice_end) ends.push_back(static_cast<int64_t>(i));
  }
  if (starts.size() != ends.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the prompt has ", starts.size(), " image starts but ", ends.size(),
        " ends (truncated to ", options.max_input_tokens, " tokens inside an image?)"));
  }
  for (size_t i = 0; i < starts.size(); ++i) prompt.image_bound.emplace_back(starts[i], ends[i]);
  return prompt;
}

}  // namespace cpm::core::io
