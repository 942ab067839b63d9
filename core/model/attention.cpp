// SPDX-License-Identifier: Apache-2.0
#include "model/attention.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/repeat_interleave.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/triu.h>
#include <ATen/ops/zeros.h>

#include <limits>

#include "common/torch_compat.h"

#if CPM_TORCH_VERSION_AT_LEAST(2, 1)
#include <ATen/ops/scaled_dot_product_attention.h>
#endif

namespace cpm::core::model {
namespace {

at::Tensor expand_kv(const at::Tensor& kv, int64_t groups) {
  return groups == 1 ? kv : kv.repeat_interleave(groups, /*dim=*/1);
}

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& mask, bool causal, double scale) {
  const int64_t groups = q.size(1) / k.size(1);
  if (q.size(2) == 1 && groups > 1) {
    // A decode step: one query per head, which sees every key (causality is moot). The `groups`
    // query heads that share a key/value head become that head's rows, [B, Hkv, groups, D], so
    // the keys and values are read as they are instead of copied `groups` times.
    const int64_t b = q.size(0), kv_heads = k.size(1), tk = k.size(2);
    std::optional<at::Tensor> grouped_mask;
    if (mask) grouped_mask = mask->expand({b, q.size(1), 1, tk}).reshape({b, kv_heads, groups, tk});
    return attention(q.reshape({b, kv_heads, groups, q.size(3)}), k, v, grouped_mask, /*causal=*/false, scale)
        .view(q.sizes());
  }
  const at::Tensor key = expand_kv(k, groups);
  const at::Tensor value = expand_kv(v, groups);
  const int64_t tq = q.size(2), tk = key.size(2);
  std::optional<at::Tensor> bias = mask;
#if CPM_TORCH_VERSION_AT_LEAST(2, 1)
  // The fused kernels take causality as a flag; a single query (a decode step) sees every key.
  if (causal && !mask && tq == tk) {
    return at::scaled_dot_product_attention(q, key, value, std::nullopt, 0.0, /*is_causal=*/true, scale);
  }
#endif
  if (causal && tq > 1) {
    // -inf above the diagonal that ends at the last key: query i sees keys [0, i + tk - tq].
    at::Tensor c = at::triu(at::ones({tq, tk}, q.options().dtype(at::kBool)), /*diagonal=*/tk - tq + 1);
    at::Tensor additive = at::zeros({tq, tk}, q.options()).masked_fill(c, -std::numeric_limits<float>::infinity());
    bias = bias ? *bias + additive : additive;
  }
#if CPM_TORCH_VERSION_AT_LEAST(2, 1)
  return at::scaled_dot_product_attention(q, key, value, bias, /*dropout_p=*/0.0, /*is_causal=*/false,
                                          scale);
#else
  at::Tensor scores = at::matmul(q.to(at::kFloat), key.to(at::kFloat).transpose(-2, -1)) * scale;
  if (bias) scores = scores + bias->to(at::kFloat);
  return at::matmul(at::softmax(scores, -1), value.to(at::kFloat)).to(q.scalar_type());
#endif
}

}  // namespace cpm::core::model
