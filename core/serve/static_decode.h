// SPDX-License-Identifier: Apache-2.0
//
// Greedy decoding with a preallocated ("static") KV cache, so that every decode step has the same
// shapes and buffer addresses. On CUDA the step is captured once as a CUDA graph and then
// replayed: the ~1,200 kernels of a step go to the GPU in one launch instead of one host call
// each, which is what bounds a batch-1 decode step otherwise. The results equal
// generate_greedy_batch's (same left padding, masks and positions).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "model/qwen2.h"
#include "serve/generation.h"

namespace cpm::core::serve {

// prompts: each [T_i, hidden], left-padded together. `cuda_graph` replays a captured graph when the
// model is on a CUDA device (ignored on the CPU).
std::vector<Generation> generate_greedy_batch_static(const model::Qwen2ForCausalLM& llm,
                                                     const std::vector<at::Tensor>& prompts,
                                                     const GreedyOptions& options, bool cuda_graph = true);

}  // namespace cpm::core::serve
