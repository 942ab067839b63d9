// SPDX-License-Identifier: Apache-2.0
//
// The perceiver resampler under `resampler.` (spec section 4): one cross-attention from
// query_num learned queries to an image's vision features, whose keys carry a 2D sin-cos position
// of their patch, then ln_post and a raw projection matrix. No residual, no MLP. It turns every
// image, whatever its size, into query_num rows of the LLM's width.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/parameters.h"

namespace cpm::core::model {

// Every key of the resampler under `scope` ("resampler"): query [query_num, D], kv_proj.weight
// [D, kv_dim] (only when kv_dim != D; the reference uses an identity otherwise),
// attn.in_proj_{weight,bias} [3 D, D] / [3 D] (q, k, v packed in that order),
// attn.out_proj.{weight,bias}, ln_{q,kv,post}.{weight,bias} [D], proj [D, D]. Throws
// std::invalid_argument unless D is a multiple of num_heads and of 4 (the sin-cos table).
std::vector<ParamSpec> resampler_parameter_specs(int64_t embed_dim, int64_t kv_dim,
                                                 int64_t num_heads, int64_t query_num,
                                                 const std::string& scope);

// The keys' positions for an h x w image, row-major (the vision tower's patch order):
// [h * w, D] float32 on the CPU. Row r * w + c is (sin(c w_k), cos(c w_k), sin(r w_k), cos(r w_k))
// over k < D / 4, w_k = 1 / 10000^(k / (D / 4)): the COLUMN half first, as the reference's
// meshgrid(grid_w, grid_h) makes it. Any h and w (the reference grows its 70 x 70 table).
at::Tensor resampler_pos_embed(int64_t embed_dim, int64_t h, int64_t w);

// Holds tensor handles from the Parameters store, and a float32 sin-cos table on the weights'
// device. forward() is const and thread-safe for concurrent calls.
class Resampler {
 public:
  // Throws std::out_of_range when a weight is not in `params`, std::invalid_argument for sizes
  // resampler_parameter_specs rejects.
  Resampler(const Parameters& params, const std::string& scope, int64_t embed_dim,
            int64_t num_heads);

  // x: the vision tower's output [N, L, kv_dim]; tgt_sizes: per image (h, w) in patches, with
  // h * w <= L. Positions at and past h * w are padding and masked as keys. Returns
  // [N, query_num, D] in x's dtype. Throws std::invalid_argument on mismatched sizes.
  at::Tensor forward(const at::Tensor& x,
                     const std::vector<std::array<int64_t, 2>>& tgt_sizes) const;

  // What forward() computes from tgt_sizes for `length` vision rows: the keys' 2D sin-cos
  // positions [N, length, D] in the weights' dtype (zero on padding) and the key-padding mask
  // [N, 1, 1, length] (-inf on padding; undefined when nothing is padded). A captured training
  // step runs forward(x, Prepared) on copies of these.
  struct Prepared {
    at::Tensor positions, mask;
  };
  Prepared prepare(const std::vector<std::array<int64_t, 2>>& tgt_sizes, int64_t length) const;
  at::Tensor forward(const at::Tensor& x, const Prepared& in) const;

 private:

  int64_t embed_dim_, heads_, head_dim_;
  at::Tensor query_;                           // [Q, D]
  std::optional<at::Tensor> kv_proj_;          // [D, kv_dim]; none: identity (kv_dim == D)
  at::Tensor in_proj_weight_;  // [3D, D]: W_q, W_k, W_v stacked
  at::Tensor in_proj_bias_;    // [3D]
  at::Tensor out_weight_, out_bias_;           // [D, D], [D]
  at::Tensor ln_q_weight_, ln_q_bias_;         // [D]
  at::Tensor ln_kv_weight_, ln_kv_bias_;       // [D]
  at::Tensor ln_post_weight_, ln_post_bias_;   // [D]
  at::Tensor proj_;                            // [D, D], used as x @ proj
  // Rows (sin(p w_k), cos(p w_k)) for p < 70, the reference's initial table side: [70, D / 2]
  // float32. Larger images get a larger table for that call.
  at::Tensor sincos_;
};

}  // namespace cpm::core::model
