// SPDX-License-Identifier: Apache-2.0
//
// LoRA on the LLM's linear layers, with PEFT's semantics: a targeted module `m` computes
//   y = W x + b + scaling * B(A(dropout(x)))        A [r, in], B [out, r]
// with x cast to A's dtype for the low-rank path (PEFT keeps A and B in float32 under bf16) and the
// sum rounded back to the base output's dtype. A and B live in the Parameters store under
// `<m>.lora_A.weight` / `<m>.lora_B.weight`: PEFT's adapter keys without the `base_model.model.`
// prefix, so a layer finds its adapter the same way it finds its weights.
#pragma once

#include <string>
#include <vector>

#include "io/model_config.h"

namespace cpm::core::model {

// How the model runs: the adapter's scaling and dropout, training mode (dropout active) and
// gradient checkpointing. Default: inference without an adapter.
struct RunOptions {
  double lora_scaling = 1.0;
  double lora_dropout = 0.0;
  bool training = false;
  // Recompute each decoder layer's activations in the backward pass instead of keeping them.
  bool gradient_checkpointing = false;
};

inline std::string lora_a_name(const std::string& module) { return module + ".lora_A.weight"; }
inline std::string lora_b_name(const std::string& module) { return module + ".lora_B.weight"; }

// The linear layers that can carry LoRA: every projection of every LLM decoder layer
// (`llm.model.layers.N.self_attn.{q,k,v,o}_proj`, `llm.model.layers.N.mlp.{gate,up,down}_proj`),
// in checkpoint order.
std::vector<std::string> lora_capable_modules(const io::ModelConfig& config);

}  // namespace cpm::core::model
