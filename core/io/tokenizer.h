// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace cpm::core::io {

// Text <-> token ids, as the checkpoint's Hugging Face tokenizer does it. Implementations are
// immutable after loading and thread-safe.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // UTF-8 text -> ids. Added and special tokens (<|im_start|>, <image>, <unk>, ...) that appear in
  // the text are matched whole, before anything else. INVALID_ARGUMENT for invalid UTF-8.
  virtual absl::StatusOr<std::vector<int32_t>> encode(std::string_view text) const = 0;
  // Ids -> text. Special tokens are kept unless `skip_special`. Bytes that do not form valid UTF-8
  // (a token sequence cut inside a character) become U+FFFD, as the reference decoder does.
  // INVALID_ARGUMENT for an id outside the vocabulary.
  virtual absl::StatusOr<std::string> decode(std::span<const int32_t> ids,
                                             bool skip_special = false) const = 0;

  // Vocabulary size including added tokens (largest id + 1).
  virtual int32_t vocab_size() const = 0;
  // The id of a token string as the vocabulary spells it ("<|im_end|>", "Ġthe").
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual bool is_special(int32_t id) const = 0;
};

// Loads the tokenizer of a checkpoint: `tokenizer.json` (byte-level BPE) in `dir`, or else a
// SentencePiece `tokenizer.model`. `dir` may also name either file directly. Errors name the file.
absl::StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& dir);

// Returns `json_text` (a tokenizer.json) with `tokens` added as special added tokens, as
// `tokenizers`' add_special_tokens does: a token already in the vocabulary keeps its id (and becomes
// an added token, matched whole), a new one takes the next free id, in order.
absl::StatusOr<std::string> add_special_tokens(const std::string& json_text,
                                               const std::vector<std::string>& tokens);

// A tokenizer.json, already read.
absl::StatusOr<std::unique_ptr<Tokenizer>> load_bpe_tokenizer_json(const std::string& json_text,
                                                                   const std::string& source);
// A SentencePiece model file, through the libcpm_sentencepiece.so module in ../lib beside the
// executable (UNAVAILABLE if the module is missing).
absl::StatusOr<std::unique_ptr<Tokenizer>> load_sentencepiece_model(const std::string& path);

}  // namespace cpm::core::io
