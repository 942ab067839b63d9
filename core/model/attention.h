// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace cpm::core::model {

// softmax(q k^T * scale + mask) v, with the softmax in float32 as the reference's eager paths do.
//   q: [B, H, Tq, D]; k, v: [B, Hkv, Tk, D] with H a multiple of Hkv (grouped-query attention:
//   each key/value head serves H / Hkv query heads); mask: additive, broadcastable to
//   [B, H, Tq, Tk] (0 to keep, a large negative number to drop), or none; `causal` adds the
//   lower-triangular mask (query i sees keys <= i + Tk - Tq). Returns [B, H, Tq, D].
// On LibTorch 2.x this is at::scaled_dot_product_attention (flash / memory-efficient kernels on
// CUDA); on 1.13 the explicit math above. A single query (a decode step) attends per key/value
// head, its query heads as rows, without copying keys and values for each query head.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& mask, bool causal, double scale);

}  // namespace cpm::core::model
