// SPDX-License-Identifier: Apache-2.0
//
// Generated tokens -> the answer text, as the reference's _decode_text does it: every id 0 is
// dropped (a quirk of the reference: id 0 is "!"), then one trailing stop token, the rest is
// decoded and `<|tts_eos|>` removed.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "io/tokenizer.h"
#include "serve/generation.h"

namespace cpm::core::serve {

absl::StatusOr<std::string> answer_text(const io::Tokenizer& tokenizer, const Generation& generation);

}  // namespace cpm::core::serve
