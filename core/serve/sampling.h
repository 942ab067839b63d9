// SPDX-License-Identifier: Apache-2.0
//
// Sampling as the reference generate() does it for MiniCPM-o's chat(sampling=True): the repetition
// penalty over the tokens generated so far (the prompt is not in generate()'s input_ids when it
// starts from inputs_embeds), then temperature, top-k and top-p, then a draw from the softmax.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace cpm::core::serve {

struct SamplingOptions {
  double temperature = 0.7;         // Default: chat()'s; 1 leaves the scores as they are
  int top_k = 100;                  // 0 disables
  double top_p = 0.8;               // 1 disables
  double repetition_penalty = 1.05; // 1 disables; divides positive, multiplies negative scores
};

// scores [V] float32 -> processed scores [V], filtered entries set to -inf. `generated` are the
// tokens produced so far (duplicates allowed).
at::Tensor process_scores(const at::Tensor& scores, const std::vector<int32_t>& generated,
                          const SamplingOptions& options);

// One token drawn from softmax(processed) with `generator` (seeded by the caller for
// reproducible samples).
int32_t sample_token(const at::Tensor& processed, at::Generator& generator);

}  // namespace cpm::core::serve
