// SPDX-License-Identifier: Apache-2.0
#include "serve/answer_text.h"

namespace cpm::core::serve {

absl::StatusOr<std::string> answer_text(const io::Tokenizer& tokenizer, const Generation& generation) {
  std::vector<int32_t> kept;
  for (const int32_t id : generation.tokens) {
    if (id != 0) kept.push_back(id);
  }
  if (generation.finish == FinishReason::kStop && !kept.empty()) kept.pop_back();
  auto text = tokenizer.decode(kept);
  if (!text.ok()) return text.status();
  std::string out = *std::move(text);
  for (size_t at; (at = out.find("<|tts_eos|>")) != std::string::npos;) out.erase(at, 11);
  return out;
}

}  // namespace cpm::core::serve
