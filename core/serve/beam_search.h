// SPDX-License-Identifier: Apache-2.0
//
// Beam search as Hugging Face transformers' generate(num_beams=N, do_sample=False) does it (the
// vectorised _beam_search of transformers 4.50+ / 5.x), which MiniCPM-o's chat(sampling=False)
// calls with num_beams=3 and repetition_penalty=1.2 from inputs_embeds: the repetition penalty
// sees the tokens each beam generated, not the prompt, and the result holds new tokens only.
//
// One step, in HF's terms:
//   1. Each running beam's next-token log-probs (log_softmax of float32 logits), the repetition
//      penalty applied to them over that beam's tokens, plus the beam's running score.
//   2. The best K = max(2, 1 + #stop ids) * num_beams continuations over all beams ("top-K").
//   3. The next running beams: the best num_beams of those K that did not just stop (a stop id,
//      or max_new_tokens reached).
//   4. Finished hypotheses: a continuation that stopped counts only if it is among the best
//      num_beams of the K; its score is its log-prob sum / length^length_penalty (the length
//      counts the stop token). The best num_beams hypotheses seen so far are kept.
//   5. Decoding ends when the early-stopping rule says no running beam can improve on the
//      finished ones, or every continuation stopped (max_new_tokens).
// The KV cache follows the beams: each step its rows are reordered with index_select to the new
// running beams' parents.
#pragma once

#include <ATen/core/Tensor.h>

#include "model/qwen2.h"
#include "serve/generation.h"

namespace cpm::core::serve {

// HF's `early_stopping`, which decides when decoding may end before max_new_tokens.
enum class EarlyStopping {
  // early_stopping=False (HF's default, and what chat() gets): stop once num_beams hypotheses are
  // finished and the best running beam, scored at its current length, can't beat the worst.
  kHeuristic,
  // early_stopping=True: stop as soon as num_beams hypotheses are finished.
  kWhenFull,
  // early_stopping="never": as kHeuristic, but with length_penalty > 0 the running beam is scored
  // at max_new_tokens (the canonical beam search).
  kNever,
};

struct BeamSearchOptions {
  int num_beams = 3;                // Default: chat(sampling=False)'s. REQUIRES: >= 1
  double repetition_penalty = 1.2;  // Default: chat(sampling=False)'s; 1 disables
  double length_penalty = 1.0;      // Default: HF's; hypothesis score = sum / length^this
  EarlyStopping early_stopping = EarlyStopping::kHeuristic;  // Default: HF's
};

struct BeamSearchResult {
  Generation best;  // the best finished hypothesis; kStop when it ends with a stop id
  float score = 0;  // its score (HF's sequences_scores)
};

// Beam search of one prompt: inputs_embeds [1, T, hidden], positions 0..T-1 then on. `limits`
// gives max_new_tokens and the stop ids (HF's eos_token_id list). Runs on the model's device;
// the bookkeeping is on the host. Throws c10::Error when num_beams < 1.
BeamSearchResult generate_beam(const model::Qwen2ForCausalLM& llm, const at::Tensor& inputs_embeds,
                               const GreedyOptions& limits, const BeamSearchOptions& options);

}  // namespace cpm::core::serve
