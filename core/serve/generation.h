// SPDX-License-Identifier: Apache-2.0
//
// Token generation on the LLM from prompt embeddings, as the reference chat() drives
// llm.generate(inputs_embeds=...): the returned tokens are new tokens only, and decoding stops at
// the first stop id (<|im_end|>, <|endoftext|>) or after max_new_tokens.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "model/qwen2.h"
#include "serve/sampling.h"

namespace cpm::core::serve {

enum class FinishReason { kStop, kLength };

struct Generation {
  std::vector<int32_t> tokens;  // new tokens; a stop token that ended decoding is included
  FinishReason finish = FinishReason::kLength;
};

struct GreedyOptions {
  int max_new_tokens = 2048;      // Default: the reference chat()'s
  std::vector<int32_t> stop_ids;  // Default: none
  // Called with each new token of each row (row 0 for single-sequence decoding) as it is
  // produced, for streaming; returning false ends that row there (finish kLength, as if its
  // max_new_tokens were reached): a cancelled request or a row with a smaller limit.
  std::function<bool(size_t row, int32_t token)> on_token = nullptr;
};

// Greedy decoding of one sequence with a KV cache (on CUDA: the static cache and a CUDA graph of the
// decode step, serve/static_decode.h). inputs_embeds: [1, T, hidden] (the prompt after
// the image features are scattered in); positions run 0..T-1, then on.
Generation generate_greedy(const model::Qwen2ForCausalLM& llm, const at::Tensor& inputs_embeds,
                           const GreedyOptions& options);

// Greedy decoding of several prompts at once, left-padded as the reference batches them: pad
// embeddings of id 0 in front, masked out of attention, positions counting real tokens only.
// prompts: each [T_i, hidden]. Each result is what generate_greedy gives for that prompt alone.
std::vector<Generation> generate_greedy_batch(const model::Qwen2ForCausalLM& llm,
                                              const std::vector<at::Tensor>& prompts,
                                              const GreedyOptions& options);

// The same loop, drawing each token from the processed scores (see sampling.h); `seed` makes the
// draws reproducible.
Generation generate_sampled(const model::Qwen2ForCausalLM& llm, const at::Tensor& inputs_embeds,
                            const GreedyOptions& options, const SamplingOptions& sampling, uint64_t seed);

// Sampled decoding of several prompts at once, left-padded as generate_greedy_batch does it. Row i
// draws with sampling[i] (sampling[0] for every row when one set is given) from its own CPU
// generator seeded with seeds[i], once per step as generate_sampled does, so each result is what
// generate_sampled gives for that prompt alone with the same options and seed.
// REQUIRES: seeds.size() == prompts.size(); sampling.size() is 1 or prompts.size().
std::vector<Generation> generate_sampled_batch(const model::Qwen2ForCausalLM& llm,
                                               const std::vector<at::Tensor>& prompts,
                                               const GreedyOptions& options,
                                               const std::vector<SamplingOptions>& sampling,
                                               const std::vector<uint64_t>& seeds);

}  // namespace cpm::core::serve
