// SPDX-License-Identifier: Apache-2.0
#include "io/chat_template.h"

#include <regex>

namespace cpm::core::io {
namespace {

constexpr const char* kQwen25System = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

// Jinja string literals spell a newline as the two characters '\' 'n'.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char c = s[++i];
      out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

ChatTemplate ChatTemplate::qwen25() {
  ChatTemplate t;
  t.default_system_ = kQwen25System;
  return t;
}

absl::StatusOr<ChatTemplate> ChatTemplate::from_jinja(const std::string& jinja) {
  if (jinja.empty()) return qwen25();
  if (jinja.find("<|im_start|>") == std::string::npos || jinja.find("<|im_end|>") == std::string::npos) {
    return absl::InvalidArgumentError(
        "tokenizer_config.json: chat_template is not a ChatML (<|im_start|> ... <|im_end|>) template; "
        "only ChatML templates such as MiniCPM-o-2.6's (Qwen2.5) are supported");
  }
  ChatTemplate t;
  // A default system turn is a single string literal '<|im_start|>system\n...<|im_end|>\n' (the
  // system message itself is spliced in with `+ messages[0]['content'] +`, never in one literal).
  static const std::regex kDefaultSystem(R"(['"]<\|im_start\|>system\\n([^'"]*?)<\|im_end\|>\\n['"])");
  std::smatch m;
  if (std::regex_search(jinja, m, kDefaultSystem)) t.default_system_ = unescape(m[1].str());
  return t;
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt) const {
  std::string out;
  if (default_system_ && (messages.empty() || messages.front().role != "system")) {
    out += "<|im_start|>system\n" + *default_system_ + "<|im_end|>\n";
  }
  for (const ChatMessage& m : messages) {
    out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

}  // namespace cpm::core::io
