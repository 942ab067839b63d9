// SPDX-License-Identifier: Apache-2.0
#include "model/resampler.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/zeros.h>
#include <c10/util/StringUtil.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "model/attention.h"

namespace cpm::core::model {
namespace {

// The reference builds its LayerNorms with eps 1e-6, whatever the config says.
constexpr double kLayerNormEps = 1e-6;
// The reference's initial sin-cos table is 70 x 70 (max_size).
constexpr int64_t kInitialTableSide = 70;

// The head size; throws unless embed_dim splits into num_heads heads and four sin-cos quarters.
int64_t checked_head_dim(int64_t embed_dim, int64_t num_heads) {
  if (embed_dim <= 0 || num_heads <= 0 || embed_dim % num_heads != 0 || embed_dim % 4 != 0) {
    throw std::invalid_argument("resampler: embed_dim " + std::to_string(embed_dim) +
                                " must be a positive multiple of 4 and of num_heads " +
                                std::to_string(num_heads));
  }
  return embed_dim / num_heads;
}

// (sin(p w_k), cos(p w_k)) for p = 0..n-1 and k < D / 4, w_k = 1 / 10000^(k / (D / 4)), all in
// float32 as the reference's numpy code computes it: [n, D / 2] on the CPU.
at::Tensor sincos_1d(int64_t embed_dim, int64_t n) {
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const int64_t quarter = embed_dim / 4;
  const at::Tensor omega =
      1.0 / at::pow(10000.0, at::arange(quarter, f32) / static_cast<double>(quarter));  // [D/4]
  const at::Tensor angles = at::arange(n, f32).unsqueeze(1) * omega.unsqueeze(0);       // [n, D/4]
  return at::cat({at::sin(angles), at::cos(angles)}, 1);
}

// The 2D table's rows for an h x w image from a 1D table of at least max(h, w) rows:
// [h * w, D], entry r * w + c = (table[c], table[r]).
at::Tensor pos_from_1d(const at::Tensor& table, int64_t h, int64_t w) {
  const int64_t half = table.size(1);
  const at::Tensor columns = table.narrow(0, 0, w).unsqueeze(0).expand({h, w, half});
  const at::Tensor rows = table.narrow(0, 0, h).unsqueeze(1).expand({h, w, half});
  return at::cat({columns, rows}, -1).reshape({h * w, 2 * half});
}

}  // namespace

std::vector<ParamSpec> resampler_parameter_specs(int64_t embed_dim, int64_t kv_dim,
                                                 int64_t num_heads, int64_t query_num,
                                                 const std::string& scope) {
  checked_head_dim(embed_dim, num_heads);
  const int64_t d = embed_dim;
  std::vector<ParamSpec> specs;
  add_spec(specs, scope, "query", {query_num, d});
  if (kv_dim != d) add_spec(specs, scope, "kv_proj.weight", {d, kv_dim});
  add_spec(specs, scope, "attn.in_proj_weight", {3 * d, d});
  add_spec(specs, scope, "attn.in_proj_bias", {3 * d}, Init::kZeros);
  add_spec(specs, scope, "attn.out_proj.weight", {d, d});
  add_spec(specs, scope, "attn.out_proj.bias", {d}, Init::kZeros);
  for (const char* ln : {"ln_q", "ln_kv", "ln_post"}) {
    add_spec(specs, scope, std::string(ln) + ".weight", {d}, Init::kOnes);
    add_spec(specs, scope, std::string(ln) + ".bias", {d}, Init::kZeros);
  }
  add_spec(specs, scope, "proj", {d, d});
  return specs;
}

at::Tensor resampler_pos_embed(int64_t embed_dim, int64_t h, int64_t w) {
  return pos_from_1d(sincos_1d(embed_dim, std::max(h, w)), h, w);
}

Resampler::Resampler(const Parameters& p, const std::string& scope, int64_t embed_dim,
                     int64_t num_heads)
    : embed_dim_(embed_dim), heads_(num_heads), head_dim_(checked_head_dim(embed_dim, num_heads)) {
  query_ = p.get(scope + ".query");
  if (p.contains(scope + ".kv_proj.weight")) kv_proj_ = p.get(scope + ".kv_proj.weight");
  in_proj_weight_ = p.get(scope + ".attn.in_proj_weight");
  in_proj_bias_ = p.get(scope + ".attn.in_proj_bias");
  out_weight_ = p.get(scope + ".attn.out_proj.weight");
  out_bias_ = p.get(scope + ".attn.out_proj.bias");
  ln_q_weight_ = p.get(scope + ".ln_q.weight");
  ln_q_bias_ = p.get(scope + ".ln_q.bias");
  ln_kv_weight_ = p.get(scope + ".ln_kv.weight");
  ln_kv_bias_ = p.get(scope + ".ln_kv.bias");
  ln_post_weight_ = p.get(scope + ".ln_post.weight");
  ln_post_bias_ = p.get(scope + ".ln_post.bias");
  proj_ = p.get(scope + ".proj");
  sincos_ = sincos_1d(embed_dim_, kInitialTableSide).to(query_.device());
}

Resampler::Prepared Resampler::prepare(const std::vector<std::array<int64_t, 2>>& tgt_sizes, int64_t length) const {
  int64_t side = 0;
  for (const auto& [h, w] : tgt_sizes) side = std::max({side, h, w});
  // Images beyond the cached table (extreme aspect ratios) get a larger one for this call; the
  // values do not depend on the table's size.
  const at::Tensor table = side <= sincos_.size(0) ? sincos_ : sincos_1d(embed_dim_, side).to(query_.device());
  const int64_t n = static_cast<int64_t>(tgt_sizes.size());
  Prepared out;
  out.positions = at::zeros({n, length, embed_dim_}, query_.options());
  for (int64_t i = 0; i < n; ++i) {
    const auto [h, w] = tgt_sizes[static_cast<size_t>(i)];
    // The reference casts each image's float32 positions to x's dtype, then pads with zeros.
    out.positions[i].narrow(0, 0, h * w).copy_(pos_from_1d(table, h, w));
    if (h * w == length) continue;
    if (!out.mask.defined()) out.mask = at::zeros({n, 1, 1, length}, query_.options());
    out.mask[i].narrow(-1, h * w, length - h * w).fill_(-std::numeric_limits<double>::infinity());
  }
  return out;
}

at::Tensor Resampler::forward(const at::Tensor& x,
                              const std::vector<std::array<int64_t, 2>>& tgt_sizes) const {
  if (x.dim() != 3 || x.size(0) != static_cast<int64_t>(tgt_sizes.size()) || tgt_sizes.empty()) {
    throw std::invalid_argument("resampler: input " + c10::str(x.sizes()) + " for " +
                                std::to_string(tgt_sizes.size()) + " tgt_sizes");
  }
  const int64_t l = x.size(1);
  for (const auto& [h, w] : tgt_sizes) {
    if (h <= 0 || w <= 0 || h * w > l) {
      throw std::invalid_argument("resampler: tgt_size (" + std::to_string(h) + ", " +
                                  std::to_string(w) + ") does not fit " + std::to_string(l) +
                                  " vision rows");
    }
  }
  return forward(x, prepare(tgt_sizes, l));
}

at::Tensor Resampler::forward(const at::Tensor& x, const Prepared& in) const {
  const int64_t n = x.size(0), l = x.size(1), nq = query_.size(0);
  const at::Tensor values = at::layer_norm(kv_proj_ ? at::linear(x, *kv_proj_) : x, {embed_dim_},
                                           ln_kv_weight_, ln_kv_bias_, kLayerNormEps);  // [N, L, D]
  const at::Tensor keys = values + in.positions;                                       // [N, L, D]
  const at::Tensor q = at::layer_norm(query_, {embed_dim_}, ln_q_weight_, ln_q_bias_,
                                      kLayerNormEps);  // [Q, D]
  // nn.MultiheadAttention's packed projection: in_proj_weight.chunk(3) is (W_q, W_k, W_v). Split
  // per call: views made once would go stale for autograd when training updates the weight in place.
  const std::vector<at::Tensor> w = in_proj_weight_.chunk(3, 0), b = in_proj_bias_.chunk(3, 0);
  // The same queries for every image: [1, H, Q, Dh] expanded to [N, H, Q, Dh].
  const at::Tensor q_heads = at::linear(q, w[0], b[0])
                                 .view({1, nq, heads_, head_dim_})
                                 .transpose(1, 2)
                                 .expand({n, heads_, nq, head_dim_})
                                 .contiguous();
  // [N, L, D] -> [N, H, L, Dh]
  const auto split = [&](const at::Tensor& t, const at::Tensor& weight, const at::Tensor& bias) {
    return at::linear(t, weight, bias).view({n, l, heads_, head_dim_}).transpose(1, 2);
  };
  std::optional<at::Tensor> mask;
  if (in.mask.defined()) mask = in.mask;
  const at::Tensor attn =
      attention(q_heads, split(keys, w[1], b[1]), split(values, w[2], b[2]), mask,
                /*causal=*/false, 1.0 / std::sqrt(static_cast<double>(head_dim_)));
  const at::Tensor out = at::linear(attn.transpose(1, 2).reshape({n, nq, embed_dim_}), out_weight_,
                                    out_bias_);  // [N, Q, D]
  return at::matmul(
      at::layer_norm(out, {embed_dim_}, ln_post_weight_, ln_post_bias_, kLayerNormEps), proj_);
}

}  // namespace cpm::core::model
