// SPDX-License-Identifier: Apache-2.0
//
// Several prompts as one left-padded batch, as the reference batches them: the embedding of id 0
// in front of the shorter prompts, masked out of attention, positions counting real tokens only
// (generate()'s cumsum(mask) - 1, padding at 1).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "model/qwen2.h"
#include "serve/generation.h"

namespace cpm::core::serve {

struct LeftPadded {
  at::Tensor embeds;     // [B, L, hidden]
  at::Tensor mask;       // int64 [B, L]: 1 = a real token
  at::Tensor positions;  // int64 [B, L]
};

// prompts: each [T_i, hidden], at least one.
LeftPadded left_pad(const model::Qwen2ForCausalLM& llm, const std::vector<at::Tensor>& prompts);

// One decode step's bookkeeping for a batch: appends picked[b] to every unfinished row, ends rows
// that produced a stop id (kStop) or whose options.on_token says stop; true while a row goes on.
bool record_tokens(const int64_t* picked, const GreedyOptions& options, std::vector<Generation>& out,
                   std::vector<bool>& done);

}  // namespace cpm::core::serve
