// SPDX-License-Identifier: Apache-2.0
//
// The Qwen2 decoder under `llm.` (spec section 2): pre-norm blocks of grouped-query attention with
// q/k/v biases and rotate-half RoPE, and a SwiGLU MLP; RMSNorm computed in float32; an untied
// lm_head. Every size comes from config.json, so a tiny config is the same architecture.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "model/lora.h"
#include "model/parameters.h"

namespace cpm::core::model {

// Every key of the LLM under `scope` ("llm"): `<scope>.model.embed_tokens.weight`,
// `<scope>.model.layers.N.{self_attn,mlp,...}.*`, `<scope>.model.norm.weight`, and
// `<scope>.lm_head.weight` unless the embeddings are tied.
std::vector<ParamSpec> qwen2_parameter_specs(const io::ModelConfig& config, const std::string& scope);

// RMSNorm as Qwen2 computes it: in float32, cast back to the input dtype, then scaled.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// RoPE tables for `position_ids` [B, T]: cos and sin [B, T, head_dim] in float32, the frequencies
// repeated over both halves (rotate-half layout).
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& position_ids, int64_t head_dim,
                                              double theta);

// Keys and values of the tokens seen so far, per layer: [B, Hkv, T, head_dim]. One per sequence
// batch being decoded; not thread-safe.
// With `write_positions` defined the cache is static: keys/values are preallocated
// [B, Hkv, capacity, head_dim] and each forward writes its T new keys and values at those slots
// (a device tensor [T], so a captured CUDA graph can advance it) instead of appending; attention
// then spans the whole capacity and the key mask must hide the slots not written yet.
struct KvCache {
  std::vector<at::Tensor> keys, values;
  at::Tensor write_positions;
  int64_t length() const { return keys.empty() ? 0 : keys.front().size(2); }
};

// Thread-safe for concurrent forward calls with distinct caches (it holds only tensor handles).
// A projection whose `<module>.lora_A.weight` and `.lora_B.weight` are in the store runs with that
// LoRA adapter (model/lora.h); `options` gives its scaling and dropout.
class Qwen2ForCausalLM {
 public:
  Qwen2ForCausalLM(const Parameters& params, const std::string& scope, const io::ModelConfig& config,
                   const RunOptions& options = {});

  // [B, T] token ids -> [B, T, hidden].
  at::Tensor embed(const at::Tensor& input_ids) const;
  // Causal forward: inputs_embeds [B, T, hidden], position_ids [B, T] -> final hidden states
  // [B, T, hidden] (after the last norm). With a cache, the T new tokens attend to the cached ones
  // too and their keys and values are appended. `key_mask` [B, cached + T] (nonzero = a real
  // token) hides left padding from every query, as the reference's attention_mask does.
  at::Tensor hidden_states(const at::Tensor& inputs_embeds, const at::Tensor& position_ids,
                           KvCache* cache = nullptr,
                           const std::optional<at::Tensor>& key_mask = std::nullopt) const;
  // hidden [.., hidden] -> logits [.., vocab].
  at::Tensor logits(const at::Tensor& hidden) const;

 private:
  // One linear layer: weight [out, in], optional bias [out], optional LoRA A [r, in] / B [out, r].
  struct Linear {
    at::Tensor weight, bias, lora_a, lora_b;
  };
  struct Layer {
    at::Tensor input_norm, post_norm;  // [D]
    Linear q, k, v, o;                 // q [H*Dh, D], k/v [Hkv*Dh, D], o [D, H*Dh]
    Linear gate, up, down;             // [I, D], [I, D], [D, I]
  };
  // What a decoder layer needs besides its weights. Layers run as static functions of it, so a
  // checkpointed layer's recomputation (in the backward pass) holds copies, not `this`.
  struct Dims {
    int64_t heads, kv_heads, head_dim;
    double eps;
    RunOptions options;
  };
  static at::Tensor project(const Dims& d, const at::Tensor& x, const Linear& linear);
  // cos/sin: [B, 1, T, Dh] in the activations' dtype.
  static at::Tensor layer_forward(const Dims& d, const Layer& w, const at::Tensor& x, const at::Tensor& cos,
                                  const at::Tensor& sin, KvCache* cache, size_t index,
                                  const std::optional<at::Tensor>& mask);
  // The tensors of a layer that require grad (what a checkpointed layer returns gradients for).
  static std::vector<at::Tensor> trainable(const Layer& w);

  Dims dims_;

  double rope_theta_;
  at::Tensor embed_tokens_;  // [V, D]
  std::vector<Layer> layers_;
  at::Tensor norm_;     // [D]
  at::Tensor lm_head_;  // [V, D]
};

}  // namespace cpm::core::model
