// SPDX-License-Identifier: Apache-2.0
#include "runtime/text_stream.h"

#include <string_view>

namespace cpm::core::runtime {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD: an unfinished character so far
constexpr std::string_view kTtsEos = "<|tts_eos|>";

}  // namespace

absl::StatusOr<std::string> TextStreamer::text() const {
  auto decoded = tokenizer_->decode(kept_);
  if (!decoded.ok()) return decoded.status();
  std::string out = *std::move(decoded);
  for (size_t at; (at = out.find(kTtsEos)) != std::string::npos;) out.erase(at, kTtsEos.size());
  return out;
}

absl::StatusOr<TextDelta> TextStreamer::push(int32_t token, bool stops) {
  TextDelta delta;
  delta.token_ids = {token};
  // answer_text drops every id 0 (a quirk of the reference) and the final stop token.
  if (token == 0 || stops) return delta;
  kept_.push_back(token);
  auto now = text();
  if (!now.ok()) return now.status();
  const std::string_view s = *now;
  if (s.ends_with(kReplacement) || !s.starts_with(emitted_)) return delta;  // wait for more bytes
  delta.text = std::string(s.substr(emitted_.size()));
  emitted_ = *std::move(now);
  return delta;
}

absl::StatusOr<TextDelta> TextStreamer::finish() {
  TextDelta delta;
  auto now = text();
  if (!now.ok()) return now.status();
  if (now->starts_with(emitted_)) delta.text = now->substr(emitted_.size());
  emitted_ = *std::move(now);
  return delta;
}

}  // namespace cpm::core::runtime
