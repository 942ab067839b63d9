// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cpm::core::io {

struct ChatMessage {
  std::string role;  // "system" | "user" | "assistant"
  std::string content;
};

// The checkpoint's chat template. MiniCPM-o-2.6 ships Qwen2.5's ChatML template: a default system
// turn when the conversation has none, then `<|im_start|>{role}\n{content}<|im_end|>\n` per message
// and `<|im_start|>assistant\n` as the generation prompt. ChatML templates (Qwen2, Qwen2.5, Qwen3,
// MiniCPM) are rendered natively; the default system text is read from the template source.
// Templates of other families are INVALID_ARGUMENT rather than guessed at.
class ChatTemplate {
 public:
  // MiniCPM-o-2.6's (Qwen2.5's) template, used when tokenizer_config.json has none.
  static ChatTemplate qwen25();
  // `jinja` is tokenizer_config.json's chat_template; empty means qwen25().
  static absl::StatusOr<ChatTemplate> from_jinja(const std::string& jinja);

  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  // The system turn inserted when the first message is not a system message, if any.
  const std::optional<std::string>& default_system() const { return default_system_; }

 private:
  std::optional<std::string> default_system_;
};

}  // namespace cpm::core::io
