// SPDX-License-Identifier: Apache-2.0
//
// Generated tokens -> the text deltas a streaming client receives, one per token, such that the
// deltas concatenate to what serve::answer_text gives for the whole generation: id 0 and the stop
// token that ended decoding add no text, `<|tts_eos|>` is removed, and text that ends inside a
// UTF-8 character is held back until the character is complete.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "io/tokenizer.h"
#include "runtime/ocr_request.h"

namespace cpm::core::runtime {

// Not thread-safe: one per streamed request.
class TextStreamer {
 public:
  explicit TextStreamer(const io::Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}

  // The delta for the next generated token; `stops` says it is the stop token that ended decoding.
  // INVALID_ARGUMENT for an id outside the vocabulary.
  absl::StatusOr<TextDelta> push(int32_t token, bool stops);
  // Whatever was held back (an unfinished UTF-8 character decodes as U+FFFD, as in answer_text).
  absl::StatusOr<TextDelta> finish();

 private:
  // The answer text of kept_ so far.
  absl::StatusOr<std::string> text() const;

  const io::Tokenizer* tokenizer_;
  std::vector<int32_t> kept_;  // generated ids without 0 and without the final stop token
  std::string emitted_;        // the text sent so far
};

}  // namespace cpm::core::runtime
