// SPDX-License-Identifier: Apache-2.0
//
// The Qwen2 decoder under `llm.` (spec section 2): pre-norm blocks of grouped-query attention with
// q/k/v biases and rotate-half RoPE, and a SwiGLU MLP; RMSNorm computed in float32; an untied
// lm_head. Every size comes from config.json, so a tiny config is the same architecture.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
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

// The groups of keys that inference runs as one matrix multiply each, to be stored as
// consecutive rows of one buffer (model/parameters.h stack_rows; the loader does it): per layer
// the q/k/v weights, the q/k/v biases and the gate/up weights, in that order.
std::vector<std::vector<std::string>> qwen2_stacked_projections(const io::ModelConfig& config,
                                                                const std::string& scope);

// RMSNorm as Qwen2 computes it: in float32, cast back to the input dtype, then scaled.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// RoPE's frequencies theta^(-2k / head_dim), k < head_dim / 2: float32 [head_dim / 2] on `device`.
at::Tensor rope_inverse_frequencies(int64_t head_dim, double theta, c10::Device device);

// RoPE tables for `position_ids` [B, T]: cos and sin [B, T, head_dim] in float32, the frequencies
// repeated over both halves (rotate-half layout). `inv_freq`: rope_inverse_frequencies.
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& position_ids, const at::Tensor& inv_freq);
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
//
// Two ways through a decoder layer, with the same results up to rounding:
// - inference (no autograd recording, not training): q/k/v and gate/up each one matrix multiply
//   over their stacked weights (qwen2_stacked_projections: views when the store is laid out so,
//   else copies made here), the LoRA of a stacked group as one A and one block-diagonal B, the
//   residual adds folded into the o/down matrix multiplies, RoPE on q and k at once: about half
//   the kernels of the other way, which is what a decode step's time is made of. In bf16 on CUDA
//   the fused kernels of model/fused_ops.h take over the small ops, and a single row's projections;
// - training (autograd, gradient checkpointing, LoRA dropout, float32 LoRA on a bf16 model): one
//   projection at a time, out of place, exactly as PEFT computes it.
// The inference way is chosen per call when nothing records gradients and the options do not say
// training; it is never built for tensors that require grad, so tensors to be trained must
// require grad before the model is built. Its stacked LoRA B's are copies taken here: an adapter
// changed in place later (other than by training) needs a new model.
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

  // Identifies this model and its copies (which share its tensors), for caches of work that is
  // only valid for these weights (serve/static_decode.h): a weak_ptr to it expires when the last
  // copy is gone and never matches a model built later.
  const std::shared_ptr<const int>& identity() const { return identity_; }

  // Consecutive rows of a batch and the model (this base, or one of its adapters) they run on.
  struct RowSegment {
    const Qwen2ForCausalLM* model = nullptr;
    int64_t rows = 0;
  };
  // Whether `adapted` (a model over this base's parameters plus an adapter) can share a forward
  // pass with other adapters of this base: both run the inference way and its decoder weights,
  // biases and norms are this model's own tensors. Its LoRA, embeddings and lm_head may differ
  // (the recipe's modules_to_save include embed_tokens).
  bool can_mix(const Qwen2ForCausalLM& adapted) const;
  // This base model running each segment's rows with that segment's LoRA (scaling included),
  // embeddings and lm_head, as Punica/S-LoRA batch adapters: the base projections once for the
  // whole batch, then each segment's LoRA on its own rows ([rows * T, in] slices, two matrix
  // multiplies per adapter and projection). Row b's results equal what its own model gives for
  // it alone. Rows past the segments (a padded batch) run on the base. embed() of 1-D ids and
  // logits() of a 1-D hidden state have no rows and use the base's tables (left_pad's masked pad
  // embedding). Inference only; a new identity. REQUIRES: can_mix(*segment.model) for each segment.
  Qwen2ForCausalLM mixed(const std::vector<RowSegment>& segments) const;

 private:
  // One linear layer: weight [out, in], optional bias [out], optional LoRA A [r, in] / B [out, r].
  struct Linear {
    at::Tensor weight, bias, lora_a, lora_b;
  };
  // A mixed model's LoRA for one segment's rows [first, first + rows) of the batch, per layer
  // (only lora_a / lora_b of the Linears are set: the segment model's stacked ones).
  struct SegmentLora {
    int64_t first = 0, rows = 0;
    double scaling = 1.0;
    Linear qkv, o, gate_up, down;
  };
  // A mixed model's LoRA of one projection when several segments have one: their A's stacked
  // [sum r, in] and B's side by side [out, sum r] (copies), and per batch row its segment's
  // scaling on that segment's columns, 0 elsewhere ([rows, sum r]): one shrink, one scale and one
  // expand for all the adapters at once instead of two matrix multiplies each.
  struct StackedLora {
    at::Tensor a, b, row_scale;
  };
  // A mixed model's embeddings and lm_head for rows [first, first + rows).
  struct SegmentTables {
    int64_t first = 0, rows = 0;
    at::Tensor embed_tokens, lm_head;
  };
  struct Layer {
    at::Tensor input_norm, post_norm;  // [D]
    Linear q, k, v, o;                 // q [H*Dh, D], k/v [Hkv*Dh, D], o [D, H*Dh]
    Linear gate, up, down;             // [I, D], [I, D], [D, I]
    // The inference way's stacked projections: qkv [(H + 2 Hkv) * Dh, D] (+ bias), gate_up
    // [2I, D]; with LoRA, A stacks the members' A's [sum r, D] and B is block-diagonal
    // [out, sum r]. Undefined when a member's weights or LoRA are being trained or the LoRA
    // dtype differs from the weights' (then only the training way runs).
    Linear qkv, gate_up;
    std::vector<SegmentLora> segments;  // a mixed model's per-row LoRA
    StackedLora qkv_stacked, o_stacked, gate_up_stacked, down_stacked;  // ... stacked, where built
  };
  // What a decoder layer needs besides its weights. Layers run as static functions of it, so a
  // checkpointed layer's recomputation (in the backward pass) holds copies, not `this`.
  struct Dims {
    int64_t heads, kv_heads, head_dim;
    double eps;
    RunOptions options;
    bool fusable = false;  // sizes the fused CUDA kernels take (model/fused_ops.h)
  };
  // RoPE's tables for the inference way, [B, T, Dh] in the activations' dtype: cos and sin, and
  // [-sin, sin] over the two halves where the rotation runs as ATen ops; undefined signed_sin means
  // the fused kernel rotates q and k and writes the static cache (hidden_states decides once).
  struct Rope {
    at::Tensor cos, sin, signed_sin;
  };
  // LoRA dropout's keep masks of one layer (bool, the shape of each projection's input
  // [B, T, in]; undefined where the projection has no LoRA or nothing is dropped). Drawn before
  // the layer runs, so that a checkpointed layer's recomputation sees the same masks without
  // replaying the random-number generator (which a captured CUDA graph cannot do).
  struct LayerDropout {
    at::Tensor q, k, v, o, gate, up, down;
  };
  // The masks of layer `w` for input `x` [B, T, D] when training with lora_dropout > 0.
  static LayerDropout draw_dropout(const Dims& d, const Layer& w, const at::Tensor& x);
  // Whether the inference way can run `linear` (nothing trained, LoRA in the weights' dtype).
  static bool servable(const Linear& linear);
  // `members` (reading the same input) as one projection: their weights and biases stacked
  // (model/parameters.h stacked_rows), their LoRA A's stacked and B's block-diagonal; undefined
  // when one is not servable.
  static Linear stacked(const std::vector<const Linear*>& members);
  // `keep`: the LoRA input's dropout mask, or undefined.
  static at::Tensor project(const Dims& d, const at::Tensor& x, const Linear& linear, const at::Tensor& keep = {});
  // The training way. cos/sin: [B, 1, T, Dh] in the activations' dtype.
  static at::Tensor layer_forward(const Dims& d, const Layer& w, const at::Tensor& x, const at::Tensor& cos,
                                  const at::Tensor& sin, KvCache* cache, size_t index,
                                  const std::optional<at::Tensor>& mask, const LayerDropout& drop = {});
  // The inference way, on the residual stream `x` [B, T, D] in place. `fused`: bf16 on CUDA with
  // the fused kernels (model/fused_ops.h): RMSNorm, RoPE + static-cache writes and SiLU-mul in one
  // kernel each, and a single row's projections through the fused GEMV.
  static void layer_inference(const Dims& d, const Layer& w, at::Tensor& x, const Rope& rope, KvCache* cache,
                              size_t index, const std::optional<at::Tensor>& mask, bool fused);
  // out [B * T, n] += each segment's LoRA `member` of `in` [B * T, m], on that segment's rows
  // (through `stacked` when it is built).
  static void add_segment_loras(at::Tensor& out, const at::Tensor& in, const std::vector<SegmentLora>& segments,
                                Linear SegmentLora::*member, const StackedLora& stacked, int64_t batch);
  // The StackedLora of `member` over `segments` (rows in total), or an empty one when fewer than
  // two segments have that LoRA.
  static StackedLora stack(const std::vector<SegmentLora>& segments, Linear SegmentLora::*member, int64_t rows);
  // The tensors of a layer that require grad (what a checkpointed layer returns gradients for).
  static std::vector<at::Tensor> trainable(const Layer& w);
  // `fn(table, rows)` on each segment's rows of `x` (dim 0) with its table, concatenated back;
  // the rows past the segments get `base_table`.
  at::Tensor per_segment(const at::Tensor& x, const at::Tensor& base_table, bool lm_head,
                         const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& fn) const;

  Dims dims_;

  at::Tensor inv_freq_;      // [Dh / 2] float32, RoPE's frequencies
  at::Tensor embed_tokens_;  // [V, D]
  std::vector<Layer> layers_;
  bool inference_ready_ = true;  // every layer has its stacked projections
  at::Tensor norm_;     // [D]
  at::Tensor lm_head_;  // [V, D]
  std::vector<SegmentTables> tables_;  // a mixed model's, when a segment's differ from these
  std::shared_ptr<const int> identity_ = std::make_shared<const int>(0);
};

}  // namespace cpm::core::model
