// SPDX-License-Identifier: Apache-2.0
//
// The vision tower under `vpm.` (spec section 3): SigLIP-so400m in the NaViT form MiniCPM-o uses.
// Each image is a strip of 14 x 14 patches in row-major patch order; a batch pads the strips to the
// longest, gives each image position ids bucketed onto the 70 x 70 position table, and masks the
// padded patches as attention keys. Pre-LN encoder layers, then post_layernorm; no pooling head.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "model/parameters.h"

namespace cpm::core::model {

// Every key of the vision tower under `scope` ("vpm") for `layers` encoder layers:
// `<scope>.embeddings.{patch_embedding.{weight,bias},position_embedding.weight}`,
// `<scope>.encoder.layers.N.{self_attn.{q,k,v,out}_proj,layer_norm1,layer_norm2,mlp.fc1,mlp.fc2}.*`
// and `<scope>.post_layernorm.*`. The checkpoint holds vision.num_hidden_layers layers even when
// drop_vision_last_layer is set, so a strict load lists that many; the model may use fewer.
std::vector<ParamSpec> siglip_parameter_specs(const io::VisionConfig& config, int layers,
                                              const std::string& scope);

// NaViT position ids, as the reference computes them on the CPU: for an h x w image, row r and
// column c go to bucket(r / h) * side + bucket(c / w), where bucket(f) counts the boundaries
// k / side (k = 1..side-1) that are <= f, with the fractions and boundaries from at::arange in
// float32 and at::bucketize(right=true) (ties at exact k / side fractions resolve as in PyTorch).
// Returns int64 [N, length] on the CPU; slots at and past h * w hold 0.
at::Tensor navit_position_ids(const std::vector<std::array<int64_t, 2>>& tgt_sizes,
                              int64_t num_patches_per_side, int64_t length);

// The SigLIP NaViT encoder. Holds tensor handles from the Parameters store (weights updated in
// place there are seen here). forward() is const and thread-safe for concurrent calls.
class SiglipVisionTransformer {
 public:
  // Uses encoder layers 0..layers-1 (ModelConfig::vision_layers_used(): one fewer when
  // drop_vision_last_layer). Throws std::out_of_range when a weight is not in `params`, and
  // std::invalid_argument for a hidden_act other than gelu_pytorch_tanh.
  // checkpoint_layers: recompute each encoder layer in the backward pass (model/checkpoint.h)
  // when gradients are recorded, as the recipe's gradient_checkpointing does for the vision tower.
  SiglipVisionTransformer(const Parameters& params, const std::string& scope,
                          const io::VisionConfig& config, int layers, bool checkpoint_layers = false);

  // What forward() computes on the host before the tower runs, for `length` patch slots per image
  // (0: the longest image's; more are padding, masked like the reference's): the pixels padded
  // with zeros and cast to the weights' dtype [N, 3, p, length * p], the NaViT position ids
  // [N, length] (0 on padding) and the additive key mask [N, 1, 1, length] holding finfo.min on
  // padded keys (undefined when nothing is padded: the reference then passes none), all on the
  // weights' device. A captured training step runs forward(Prepared) on copies of these.
  struct Prepared {
    at::Tensor pixels, position_ids, mask;
  };
  // pixel_values: per image float [3, p, L_i * p] (io::PreprocessedImage::pixel_values), any
  // device; tgt_sizes: per image (h, w) in patches with h * w = L_i. Throws std::invalid_argument
  // when a strip's shape does not match its tgt_size or `length` is too short.
  Prepared prepare(const std::vector<at::Tensor>& pixel_values, const std::vector<std::array<int64_t, 2>>& tgt_sizes,
                   int64_t length = 0) const;
  // -> [N, length, hidden] in the weights' dtype; rows past h_i * w_i are padding (finite,
  // meaningless) for the resampler to mask.
  at::Tensor forward(const Prepared& in) const;
  at::Tensor forward(const std::vector<at::Tensor>& pixel_values,
                     const std::vector<std::array<int64_t, 2>>& tgt_sizes) const {
    return forward(prepare(pixel_values, tgt_sizes));
  }

 private:
  struct Layer {
    at::Tensor ln1_weight, ln1_bias, ln2_weight, ln2_bias;  // [D]
    at::Tensor q_weight, q_bias, k_weight, k_bias;          // [D, D], [D]
    at::Tensor v_weight, v_bias, out_weight, out_bias;      // [D, D], [D]
    at::Tensor fc1_weight, fc1_bias;                        // [I, D], [I]
    at::Tensor fc2_weight, fc2_bias;                        // [D, I], [D]
  };
  struct Dims {
    int64_t hidden, heads, head_dim;
    double eps;
  };
  // x [N, L, D]; mask additive [N, 1, 1, L], none when nothing is padded. Static, so that a
  // checkpointed layer's recomputation holds copies rather than `this`.
  static at::Tensor layer_forward(const Dims& d, const Layer& layer, const at::Tensor& x,
                                  const std::optional<at::Tensor>& mask);

  Dims dims_;
  int64_t patch_size_, num_patches_per_side_;
  bool checkpoint_layers_;
  at::Tensor patch_weight_;     // [D, 3, p, p]
  at::Tensor patch_bias_;       // [D]
  at::Tensor position_weight_;  // [side * side, D]
  std::vector<Layer> layers_;
  at::Tensor post_ln_weight_, post_ln_bias_;  // [D]
};

}  // namespace cpm::core::model
