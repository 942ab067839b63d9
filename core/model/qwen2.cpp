// SPDX-License-Identifier: Apache-2.0
#include "model/qwen2.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/torch_compat.h"
#include "model/attention.h"
#include "model/checkpoint.h"
#include "model/fused_ops.h"

#if CPM_TORCH_VERSION_AT_LEAST(2, 8)
#include <ATen/ops/rms_norm.h>
#endif

namespace cpm::core::model {
namespace {

// [.., 2n] -> [-x2, x1]
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// rms_norm for the inference way: with `fused`, one kernel of model/fused_ops.h; else on CUDA
// with LibTorch >= 2.8 one ATen kernel (float32 inside, the result rounded to x's dtype) and then
// the weight, the reference's rounding in two kernels instead of eight.
at::Tensor inference_norm(const at::Tensor& x, const at::Tensor& weight, double eps, bool fused) {
  if (fused && fused::applies(weight)) return fused::rms_norm(x, weight, eps);
#if CPM_TORCH_VERSION_AT_LEAST(2, 8)
  if (x.is_cuda()) return weight * at::rms_norm(x, {x.size(-1)}, std::nullopt, eps);
#endif
  return rms_norm(x, weight, eps);
}

// RoPE as rotate_half computes it, in four kernels: x * cos + [x2, x1] * [-sin, sin] rounds
// exactly as x * cos + [-x2, x1] * [sin, sin] (negation is exact). x: [B, T, heads, Dh] (any
// strides); cos, signed_sin: [B, T, 1, Dh].
at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin) {
  const int64_t dh = x.size(3);
  const at::Tensor swapped =
      x.reshape({x.size(0), x.size(1), x.size(2), 2, dh / 2}).flip({3}).view(x.sizes());
  return (x * cos).add_(swapped.mul_(signed_sin));
}

// The additive attention mask for `key_mask` [B, Tk] (nonzero = a real token): [B, 1, 1, Tk], 0
// to keep and the lowest finite value of `dtype` on padding, as the reference's finfo(dtype).min
// (finite, so a query that sees only padding stays finite: it gets garbage, never NaN).
at::Tensor additive_mask(const at::Tensor& key_mask, c10::ScalarType dtype) {
  c10::Scalar lowest = std::numeric_limits<float>::lowest();
  if (dtype == at::kBFloat16) lowest = std::numeric_limits<c10::BFloat16>::lowest();
  if (dtype == at::kHalf) lowest = std::numeric_limits<c10::Half>::lowest();
  return at::zeros(key_mask.sizes(), key_mask.options().dtype(dtype))
      .masked_fill_(key_mask.eq(0), lowest)
      .unsqueeze(1)
      .unsqueeze(1);
}

// rows [N, out] += scaling * B (A x) for x [N, in], in place; nothing without LoRA. A single bf16
// row on CUDA goes through the fused GEMV (two launches without split-K).
void add_lora(at::Tensor& rows, const at::Tensor& x, const at::Tensor& lora_a, const at::Tensor& lora_b,
              double scaling) {
  if (!lora_a.defined()) return;
  const at::Tensor low = fused::gemv_applies(x, lora_a) ? fused::gemv(x, lora_a) : at::mm(x, lora_a.t());
  if (fused::gemv_applies(low, lora_b) && rows.is_contiguous()) {
    fused::gemv_add_(rows, low, lora_b, scaling);
  } else {
    rows.addmm_(low, lora_b.t(), /*beta=*/1, /*alpha=*/scaling);
  }
}

// The rows of `t` [B * T, n] that belong to batch rows [first, first + rows) of B, clipped to the
// batch (undefined when none do): a contiguous slice, so in-place updates reach `t`.
at::Tensor batch_rows(const at::Tensor& t, int64_t batch, int64_t first, int64_t rows) {
  const int64_t count = std::min(rows, batch - first);
  if (count <= 0) return {};
  const int64_t per_row = t.size(0) / batch;
  return t.narrow(0, first * per_row, count * per_row);
}

// The members' LoRA B [out_i, r_i] on the diagonal of one [sum out, sum r] matrix, zero elsewhere,
// so that B (A x) with the members' A's stacked gives each member's B_i (A_i x) in its own rows. A
// member without LoRA (undefined b) has zero rows and no columns.
at::Tensor block_diagonal(const std::vector<at::Tensor>& b, const std::vector<int64_t>& rows) {
  int64_t total_rows = 0, total_cols = 0;
  at::TensorOptions options;
  for (size_t i = 0; i < b.size(); ++i) {
    total_rows += rows[i];
    if (!b[i].defined()) continue;
    total_cols += b[i].size(1);
    options = b[i].options();
  }
  at::Tensor out = at::zeros({total_rows, total_cols}, options);
  int64_t row = 0, col = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    if (b[i].defined()) {
      out.narrow(0, row, rows[i]).narrow(1, col, b[i].size(1)).copy_(b[i]);
      col += b[i].size(1);
    }
    row += rows[i];
  }
  return out;
}

// The keys and values attention sees after this step's k, v [B, Hkv, T, Dh] enter `cache` at
// layer `index`: written into the static cache's slots, or appended to the growing one.
std::pair<at::Tensor, at::Tensor> cached(KvCache* cache, size_t index, const at::Tensor& k, const at::Tensor& v) {
  if (cache == nullptr) return {k, v};
  if (cache->write_positions.defined()) {
    return {cache->keys[index].index_copy_(2, cache->write_positions, k),
            cache->values[index].index_copy_(2, cache->write_positions, v)};
  }
  if (cache->keys.size() <= index) {
    // Own copies: k and v may be views into a larger projection output.
    cache->keys.push_back(k.contiguous());
    cache->values.push_back(v.contiguous());
  } else {
    cache->keys[index] = at::cat({cache->keys[index], k}, 2);
    cache->values[index] = at::cat({cache->values[index], v}, 2);
  }
  return {cache->keys[index], cache->values[index]};
}

}  // namespace

std::vector<ParamSpec> qwen2_parameter_specs(const io::ModelConfig& c, const std::string& scope) {
  const int64_t d = c.hidden_size, inter = c.intermediate_size, dh = c.head_dim();
  const int64_t q_out = c.num_attention_heads * dh, kv_out = c.num_key_value_heads * dh;
  std::vector<ParamSpec> specs;
  add_spec(specs, scope, "model.embed_tokens.weight", {c.vocab_size, d});
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string layer = scope + ".model.layers." + std::to_string(i);
    add_spec(specs, layer, "self_attn.q_proj.weight", {q_out, d});
    add_spec(specs, layer, "self_attn.q_proj.bias", {q_out}, Init::kZeros);
    add_spec(specs, layer, "self_attn.k_proj.weight", {kv_out, d});
    add_spec(specs, layer, "self_attn.k_proj.bias", {kv_out}, Init::kZeros);
    add_spec(specs, layer, "self_attn.v_proj.weight", {kv_out, d});
    add_spec(specs, layer, "self_attn.v_proj.bias", {kv_out}, Init::kZeros);
    add_spec(specs, layer, "self_attn.o_proj.weight", {d, q_out});
    add_spec(specs, layer, "mlp.gate_proj.weight", {inter, d});
    add_spec(specs, layer, "mlp.up_proj.weight", {inter, d});
    add_spec(specs, layer, "mlp.down_proj.weight", {d, inter});
    add_spec(specs, layer, "input_layernorm.weight", {d}, Init::kOnes);
    add_spec(specs, layer, "post_attention_layernorm.weight", {d}, Init::kOnes);
  }
  add_spec(specs, scope, "model.norm.weight", {d}, Init::kOnes);
  if (!c.tie_word_embeddings) add_spec(specs, scope, "lm_head.weight", {c.vocab_size, d});
  return specs;
}

std::vector<std::vector<std::string>> qwen2_stacked_projections(const io::ModelConfig& c, const std::string& scope) {
  std::vector<std::vector<std::string>> groups;
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string layer = scope + ".model.layers." + std::to_string(i);
    for (const char* part : {".weight", ".bias"}) {
      groups.push_back({layer + ".self_attn.q_proj" + part, layer + ".self_attn.k_proj" + part,
                        layer + ".self_attn.v_proj" + part});
    }
    groups.push_back({layer + ".mlp.gate_proj.weight", layer + ".mlp.up_proj.weight"});
  }
  return groups;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

at::Tensor rope_inverse_frequencies(int64_t head_dim, double theta, c10::Device device) {
  // inv_freq[k] = theta^(-2k / head_dim), computed as the reference does: 1 / theta^(arange / dim).
  const at::Tensor exponent =
      at::arange(0, head_dim, 2, at::TensorOptions().dtype(at::kLong).device(device)).to(at::kFloat) / head_dim;
  return 1.0 / at::pow(theta, exponent);
}

std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& position_ids, const at::Tensor& inv_freq) {
  const at::Tensor freqs = position_ids.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [B, T, Dh/2]
  const at::Tensor emb = at::cat({freqs, freqs}, -1);                               // [B, T, Dh]
  return {emb.cos(), emb.sin()};
}

std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& position_ids, int64_t head_dim,
                                              double theta) {
  return rope_tables(position_ids, rope_inverse_frequencies(head_dim, theta, position_ids.device()));
}

std::vector<std::string> lora_capable_modules(const io::ModelConfig& c) {
  std::vector<std::string> names;
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string l = "llm.model.layers." + std::to_string(i);
    for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
      names.push_back(l + "." + m);
    }
  }
  return names;
}

bool Qwen2ForCausalLM::servable(const Linear& l) {
  // Tensors that require grad are being trained: the inference way must neither copy them (the
  // copy would go stale) nor write in place past autograd.
  const auto trained = [](const at::Tensor& t) { return t.defined() && t.requires_grad(); };
  if (trained(l.weight) || trained(l.bias) || trained(l.lora_a) || trained(l.lora_b)) return false;
  // LoRA in another dtype (float32 beside bf16 weights) keeps PEFT's casts: the training way.
  return !l.lora_a.defined() ||
         (l.lora_a.scalar_type() == l.weight.scalar_type() && l.lora_b.scalar_type() == l.weight.scalar_type());
}

Qwen2ForCausalLM::Linear Qwen2ForCausalLM::stacked(const std::vector<const Linear*>& members) {
  std::vector<at::Tensor> weights, biases, lora_a, lora_b;
  std::vector<int64_t> rows;
  for (const Linear* m : members) {
    if (!servable(*m)) return {};
    weights.push_back(m->weight);
    if (m->bias.defined()) biases.push_back(m->bias);
    if (m->lora_a.defined()) lora_a.push_back(m->lora_a);
    lora_b.push_back(m->lora_b);
    rows.push_back(m->weight.size(0));
  }
  TORCH_CHECK(biases.empty() || biases.size() == members.size(), "stacked projections: some have a bias, some not");
  Linear out{stacked_rows(weights), biases.empty() ? at::Tensor() : stacked_rows(biases), {}, {}};
  if (!lora_a.empty()) {
    out.lora_a = stacked_rows(lora_a);
    out.lora_b = block_diagonal(lora_b, rows);
  }
  return out;
}

Qwen2ForCausalLM::Qwen2ForCausalLM(const Parameters& p, const std::string& scope,
                                   const io::ModelConfig& c, const RunOptions& options)
    : dims_{c.num_attention_heads, c.num_key_value_heads, c.head_dim(), c.rms_norm_eps, options,
            c.hidden_size % 8 == 0 && c.intermediate_size % 8 == 0 && c.head_dim() % 2 == 0} {
  const std::string model = scope + ".model";
  const auto linear = [&p](const std::string& module, bool bias) {
    Linear l{p.get(module + ".weight"), bias ? p.get(module + ".bias") : at::Tensor(), {}, {}};
    if (p.contains(lora_a_name(module))) {
      l.lora_a = p.get(lora_a_name(module));
      l.lora_b = p.get(lora_b_name(module));
    }
    return l;
  };
  embed_tokens_ = p.get(model + ".embed_tokens.weight");
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string l = model + ".layers." + std::to_string(i);
    layers_.push_back(Layer{p.get(l + ".input_layernorm.weight"),
                            p.get(l + ".post_attention_layernorm.weight"),
                            linear(l + ".self_attn.q_proj", true), linear(l + ".self_attn.k_proj", true),
                            linear(l + ".self_attn.v_proj", true), linear(l + ".self_attn.o_proj", false),
                            linear(l + ".mlp.gate_proj", false), linear(l + ".mlp.up_proj", false),
                            linear(l + ".mlp.down_proj", false), {}, {}, {}, {}, {}, {}, {}});
    Layer& w = layers_.back();
    w.qkv = stacked({&w.q, &w.k, &w.v});
    w.gate_up = stacked({&w.gate, &w.up});
    inference_ready_ = inference_ready_ && w.qkv.weight.defined() && w.gate_up.weight.defined() &&
                       servable(w.o) && servable(w.down);
  }
  norm_ = p.get(model + ".norm.weight");
  lm_head_ = c.tie_word_embeddings ? embed_tokens_ : p.get(scope + ".lm_head.weight");
  inv_freq_ = rope_inverse_frequencies(dims_.head_dim, c.rope_theta, embed_tokens_.device());
}

bool Qwen2ForCausalLM::can_mix(const Qwen2ForCausalLM& a) const {
  if (!inference_ready_ || !a.inference_ready_ || a.layers_.size() != layers_.size() || !a.norm_.is_same(norm_) ||
      !a.tables_.empty() || !tables_.empty()) {
    return false;
  }
  const auto same = [](const Linear& x, const Linear& y) {
    return x.weight.is_same(y.weight) && (x.bias.defined() ? x.bias.is_same(y.bias) : !y.bias.defined());
  };
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& b = layers_[i];
    const Layer& l = a.layers_[i];
    if (!b.input_norm.is_same(l.input_norm) || !b.post_norm.is_same(l.post_norm) || !l.segments.empty()) return false;
    for (auto [x, y] : {std::pair{&b.q, &l.q}, {&b.k, &l.k}, {&b.v, &l.v}, {&b.o, &l.o}, {&b.gate, &l.gate},
                        {&b.up, &l.up}, {&b.down, &l.down}}) {
      if (!same(*x, *y)) return false;
    }
  }
  return true;
}

Qwen2ForCausalLM Qwen2ForCausalLM::mixed(const std::vector<RowSegment>& segments) const {
  Qwen2ForCausalLM out = *this;
  out.identity_ = std::make_shared<const int>(0);
  int64_t first = 0;
  for (const RowSegment& s : segments) {
    const Qwen2ForCausalLM& m = *s.model;
    TORCH_CHECK(can_mix(m), "a mixed batch needs adapters of this base model that run the inference way");
    if (!m.embed_tokens_.is_same(embed_tokens_) || !m.lm_head_.is_same(lm_head_)) {
      out.tables_.push_back({first, s.rows, m.embed_tokens_, m.lm_head_});
    }
    for (size_t i = 0; i < layers_.size(); ++i) {
      const Layer& l = m.layers_[i];
      if (!l.qkv.lora_a.defined() && !l.o.lora_a.defined() && !l.gate_up.lora_a.defined() && !l.down.lora_a.defined()) {
        continue;
      }
      out.layers_[i].segments.push_back(
          {first, s.rows, m.dims_.options.lora_scaling, l.qkv, l.o, l.gate_up, l.down});
    }
    first += s.rows;
  }
  for (Layer& l : out.layers_) {
    l.qkv_stacked = stack(l.segments, &SegmentLora::qkv, first);
    l.o_stacked = stack(l.segments, &SegmentLora::o, first);
    l.gate_up_stacked = stack(l.segments, &SegmentLora::gate_up, first);
    l.down_stacked = stack(l.segments, &SegmentLora::down, first);
  }
  return out;
}

at::Tensor Qwen2ForCausalLM::per_segment(
    const at::Tensor& x, const at::Tensor& base_table, bool lm_head,
    const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& fn) const {
  const int64_t batch = x.size(0);
  std::vector<at::Tensor> parts;
  int64_t row = 0;
  for (const SegmentTables& s : tables_) {
    if (row >= batch) break;
    if (s.first > row) parts.push_back(fn(base_table, x.narrow(0, row, std::min(s.first, batch) - row)));
    row = std::min(s.first, batch);
    const int64_t count = std::min(s.rows, batch - row);
    if (count > 0) parts.push_back(fn(lm_head ? s.lm_head : s.embed_tokens, x.narrow(0, row, count)));
    row += std::max<int64_t>(count, 0);
  }
  if (row < batch) parts.push_back(fn(base_table, x.narrow(0, row, batch - row)));
  return parts.size() == 1 ? parts.front() : at::cat(parts, 0);
}

at::Tensor Qwen2ForCausalLM::embed(const at::Tensor& input_ids) const {
  // A mixed model's rows look their tokens up in their own tables ([B, T] ids: rows are dim 0).
  if (tables_.empty() || input_ids.dim() < 2) return at::embedding(embed_tokens_, input_ids);
  return per_segment(input_ids, embed_tokens_, false,
                     [](const at::Tensor& table, const at::Tensor& ids) { return at::embedding(table, ids); });
}

at::Tensor Qwen2ForCausalLM::project(const Dims& d, const at::Tensor& x, const Linear& l, const at::Tensor& keep) {
  const at::Tensor y = at::linear(x, l.weight, l.bias);
  if (!l.lora_a.defined()) return y;
  if (l.lora_a.scalar_type() == y.scalar_type() && !keep.defined()) {
    // Serving: everything in the model's dtype, three kernels.
    return y.add(at::linear(at::linear(x, l.lora_a), l.lora_b), d.options.lora_scaling);
  }
  at::Tensor in = x.to(l.lora_a.scalar_type());
  // Inverted dropout, as nn.Dropout: kept inputs scaled by 1 / (1 - p).
  if (keep.defined()) in = (in * keep) * (1.0 / (1.0 - d.options.lora_dropout));
  const at::Tensor delta = at::linear(at::linear(in, l.lora_a), l.lora_b) * d.options.lora_scaling;
  // PEFT adds in the adapter's dtype (promoting the base output) and rounds the sum back.
  return (y.to(delta.scalar_type()) + delta).to(y.scalar_type());
}

Qwen2ForCausalLM::LayerDropout Qwen2ForCausalLM::draw_dropout(const Dims& d, const Layer& w, const at::Tensor& x) {
  LayerDropout out;
  if (!d.options.training || d.options.lora_dropout <= 0) return out;
  const auto draw = [&](const Linear& l) {
    if (!l.lora_a.defined()) return at::Tensor();
    // PEFT gives every LoRA module its own nn.Dropout: q, k and v draw separate masks.
    return at::empty({x.size(0), x.size(1), l.weight.size(1)}, x.options().dtype(at::kBool))
        .bernoulli_(1.0 - d.options.lora_dropout);
  };
  out.q = draw(w.q);
  out.k = draw(w.k);
  out.v = draw(w.v);
  out.o = draw(w.o);
  out.gate = draw(w.gate);
  out.up = draw(w.up);
  out.down = draw(w.down);
  return out;
}

Qwen2ForCausalLM::StackedLora Qwen2ForCausalLM::stack(const std::vector<SegmentLora>& segments,
                                                      Linear SegmentLora::*member, int64_t rows) {
  std::vector<at::Tensor> a, b;
  for (const SegmentLora& s : segments) {
    if ((s.*member).lora_a.defined()) {
      a.push_back((s.*member).lora_a);
      b.push_back((s.*member).lora_b);
    }
  }
  if (a.size() < 2) return {};
  StackedLora out{at::cat(a, 0), at::cat(b, 1), {}};
  out.row_scale = at::zeros({rows, out.a.size(0)}, out.a.options());
  int64_t col = 0;
  for (const SegmentLora& s : segments) {
    const Linear& l = s.*member;
    if (!l.lora_a.defined()) continue;
    out.row_scale.narrow(0, s.first, s.rows).narrow(1, col, l.lora_a.size(0)).fill_(s.scaling);
    col += l.lora_a.size(0);
  }
  return out;
}

void Qwen2ForCausalLM::add_segment_loras(at::Tensor& out, const at::Tensor& in,
                                         const std::vector<SegmentLora>& segments, Linear SegmentLora::*member,
                                         const StackedLora& stacked, int64_t batch) {
  if (stacked.a.defined()) {
    // Rows [0, n) of the batch have segments (the rest is padding on the base): [n * T, sum r],
    // each row's columns of other adapters zeroed and its own scaled, then expanded.
    const int64_t n = std::min(batch, stacked.row_scale.size(0));
    const at::Tensor x = batch_rows(in, batch, 0, n);
    at::Tensor low = at::mm(x, stacked.a.t());
    low.view({n, -1, low.size(1)}).mul_(stacked.row_scale.narrow(0, 0, n).unsqueeze(1));
    batch_rows(out, batch, 0, n).addmm_(low, stacked.b.t());
    return;
  }
  for (const SegmentLora& s : segments) {
    const Linear& l = s.*member;
    if (!l.lora_a.defined()) continue;
    at::Tensor rows = batch_rows(out, batch, s.first, s.rows);
    if (rows.defined()) add_lora(rows, batch_rows(in, batch, s.first, s.rows), l.lora_a, l.lora_b, s.scaling);
  }
}

std::vector<at::Tensor> Qwen2ForCausalLM::trainable(const Layer& w) {
  std::vector<at::Tensor> out;
  const auto add = [&out](const at::Tensor& t) {
    if (t.defined() && t.requires_grad()) out.push_back(t);
  };
  add(w.input_norm);
  add(w.post_norm);
  for (const Linear* l : {&w.q, &w.k, &w.v, &w.o, &w.gate, &w.up, &w.down}) {
    add(l->weight);
    add(l->bias);
    add(l->lora_a);
    add(l->lora_b);
  }
  return out;
}

at::Tensor Qwen2ForCausalLM::layer_forward(const Dims& d, const Layer& w, const at::Tensor& x,
                                           const at::Tensor& cos, const at::Tensor& sin, KvCache* cache,
                                           size_t index, const std::optional<at::Tensor>& mask,
                                           const LayerDropout& drop) {
  const int64_t b = x.size(0), t = x.size(1);
  const at::Tensor h = rms_norm(x, w.input_norm, d.eps);
  // [B, T, H*Dh] -> [B, H, T, Dh]
  at::Tensor q = project(d, h, w.q, drop.q).view({b, t, d.heads, d.head_dim}).transpose(1, 2);
  at::Tensor k = project(d, h, w.k, drop.k).view({b, t, d.kv_heads, d.head_dim}).transpose(1, 2);
  at::Tensor v = project(d, h, w.v, drop.v).view({b, t, d.kv_heads, d.head_dim}).transpose(1, 2);
  const at::Tensor& c = cos;
  const at::Tensor& s = sin;
  q = q * c + rotate_half(q) * s;
  k = k * c + rotate_half(k) * s;
  std::tie(k, v) = cached(cache, index, k, v);
  const at::Tensor attn = attention(q, k, v, mask, /*causal=*/true,
                                    1.0 / std::sqrt(static_cast<double>(d.head_dim)));
  const at::Tensor merged = attn.transpose(1, 2).reshape({b, t, d.heads * d.head_dim});
  const at::Tensor x1 = x + project(d, merged, w.o, drop.o);
  const at::Tensor h2 = rms_norm(x1, w.post_norm, d.eps);
  return x1 + project(d, at::silu(project(d, h2, w.gate, drop.gate)) * project(d, h2, w.up, drop.up), w.down,
                      drop.down);
}

void Qwen2ForCausalLM::layer_inference(const Dims& d, const Layer& w, at::Tensor& x, const Rope& rope,
                                       KvCache* cache, size_t index, const std::optional<at::Tensor>& mask,
                                       bool fused) {
  const int64_t b = x.size(0), t = x.size(1), dim = x.size(2);
  const int64_t q_out = d.heads * d.head_dim, kv_out = d.kv_heads * d.head_dim;
  const double scaling = d.options.lora_scaling;
  at::Tensor rows = x.view({b * t, dim});  // the residual stream, updated in place
  // A single row (batch-1 decoding) multiplies by the weights with the fused GEMV.
  const auto gemv = [fused](const at::Tensor& in, const at::Tensor& weight) {
    return fused && fused::gemv_applies(in, weight);
  };

  // [N, q_out + 2 kv_out]: q, k and v side by side in one output.
  const at::Tensor h = inference_norm(x, w.input_norm, d.eps, fused).view({b * t, dim});
  at::Tensor qkv = gemv(h, w.qkv.weight)   ? fused::gemv(h, w.qkv.weight, w.qkv.bias)
                   : w.qkv.bias.defined() ? at::addmm(w.qkv.bias, h, w.qkv.weight.t())
                                          : at::mm(h, w.qkv.weight.t());
  add_lora(qkv, h, w.qkv.lora_a, w.qkv.lora_b, scaling);
  add_segment_loras(qkv, h, w.segments, &SegmentLora::qkv, w.qkv_stacked, b);
  at::Tensor q, k, v;  // [B, heads, T, Dh]
  if (!rope.signed_sin.defined()) {
    // One kernel: q and k rotated, k and v written into their cache slots.
    q = fused::rope_into_cache(qkv, rope.cos, rope.sin, d.heads, d.kv_heads, cache->keys[index],
                               cache->values[index], cache->write_positions)
            .transpose(1, 2);
    k = cache->keys[index];
    v = cache->values[index];
  } else {
    // q and k rotated together: [B, T, H + Hkv, Dh]; then [B, heads, T, Dh] views.
    const at::Tensor qk = rotate(qkv.narrow(1, 0, q_out + kv_out).view({b, t, d.heads + d.kv_heads, d.head_dim}),
                                 rope.cos.unsqueeze(2), rope.signed_sin.unsqueeze(2));
    q = qk.narrow(2, 0, d.heads).transpose(1, 2);
    std::tie(k, v) =
        cached(cache, index, qk.narrow(2, d.heads, d.kv_heads).transpose(1, 2),
               qkv.narrow(1, q_out + kv_out, kv_out).view({b, t, d.kv_heads, d.head_dim}).transpose(1, 2));
  }
  const at::Tensor attn = attention(q, k, v, mask, /*causal=*/true,
                                    1.0 / std::sqrt(static_cast<double>(d.head_dim)));  // [B, H, T, Dh]
  const at::Tensor merged = attn.transpose(1, 2).reshape({b * t, q_out});
  if (gemv(merged, w.o.weight)) {
    fused::gemv_add_(rows, merged, w.o.weight);
  } else {
    rows.addmm_(merged, w.o.weight.t());
  }
  add_lora(rows, merged, w.o.lora_a, w.o.lora_b, scaling);
  add_segment_loras(rows, merged, w.segments, &SegmentLora::o, w.o_stacked, b);

  // [N, 2I]: gate and up side by side.
  const at::Tensor h2 = inference_norm(x, w.post_norm, d.eps, fused).view({b * t, dim});
  at::Tensor gate_up = gemv(h2, w.gate_up.weight) ? fused::gemv(h2, w.gate_up.weight) : at::mm(h2, w.gate_up.weight.t());
  add_lora(gate_up, h2, w.gate_up.lora_a, w.gate_up.lora_b, scaling);
  add_segment_loras(gate_up, h2, w.segments, &SegmentLora::gate_up, w.gate_up_stacked, b);
  const int64_t inter = gate_up.size(1) / 2;
  const at::Tensor act = fused ? fused::silu_mul(gate_up)
                               : at::silu(gate_up.narrow(1, 0, inter)).mul_(gate_up.narrow(1, inter, inter));
  if (gemv(act, w.down.weight)) {
    fused::gemv_add_(rows, act, w.down.weight);
  } else {
    rows.addmm_(act, w.down.weight.t());
  }
  add_lora(rows, act, w.down.lora_a, w.down.lora_b, scaling);
  add_segment_loras(rows, act, w.segments, &SegmentLora::down, w.down_stacked, b);
}

at::Tensor Qwen2ForCausalLM::hidden_states(const at::Tensor& inputs_embeds,
                                           const at::Tensor& position_ids, KvCache* cache,
                                           const std::optional<at::Tensor>& key_mask) const {
  // cos/sin [B, T, Dh] in the activations' dtype, as the reference casts them; once here rather
  // than in every layer.
  const c10::ScalarType dtype = inputs_embeds.scalar_type();
  auto [cos_f, sin_f] = rope_tables(position_ids, inv_freq_);
  const at::Tensor cos = cos_f.to(dtype), sin = sin_f.to(dtype);
  std::optional<at::Tensor> mask;
  if (key_mask) mask = additive_mask(*key_mask, dtype);
  const bool recording = at::GradMode::is_enabled() && inputs_embeds.requires_grad();
  if (inference_ready_ && !dims_.options.training && !recording) {
    const bool fused = dims_.fusable && fused::applies(inputs_embeds);
    Rope rope{cos, sin, {}};
    // The fused rotation writes a static cache and takes a table per batch row; else ATen's runs.
    if (!fused || cache == nullptr || !cache->write_positions.defined() || cos.size(0) != inputs_embeds.size(0)) {
      const int64_t half = dims_.head_dim / 2;
      rope.signed_sin = at::cat({-sin.narrow(-1, 0, half), sin.narrow(-1, half, half)}, -1);
    }
    at::Tensor x = inputs_embeds.clone(at::MemoryFormat::Contiguous);  // updated in place
    for (size_t i = 0; i < layers_.size(); ++i) layer_inference(dims_, layers_[i], x, rope, cache, i, mask, fused);
    return inference_norm(x, norm_, dims_.eps, fused);
  }
  TORCH_CHECK(tables_.empty() && (layers_.empty() || layers_.front().segments.empty()),
              "a model mixing adapters runs for inference only");
  at::Tensor x = inputs_embeds;
  const bool recompute = dims_.options.gradient_checkpointing && cache == nullptr && at::GradMode::is_enabled();
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& w = layers_[i];
    const LayerDropout drop = draw_dropout(dims_, w, x);
    if (recompute) {
      // Everything by value: the backward pass may run after this model is gone.
      x = checkpointed(
          [d = dims_, w, cos = cos.unsqueeze(1), sin = sin.unsqueeze(1), mask, i, drop](const at::Tensor& in) {
            return layer_forward(d, w, in, cos, sin, nullptr, i, mask, drop);
          },
          x, trainable(w));
    } else {
      x = layer_forward(dims_, w, x, cos.unsqueeze(1), sin.unsqueeze(1), cache, i, mask, drop);
    }
  }
  return rms_norm(x, norm_, dims_.eps);
}

at::Tensor Qwen2ForCausalLM::logits(const at::Tensor& hidden) const {
  // hidden [B, (T,) D]: a mixed model's rows through their own lm_head.
  if (tables_.empty() || hidden.dim() < 2) {
    // One row (batch-1 decoding): the fused GEMV reads the [V, D] table once, without split-K.
    if (hidden.numel() == hidden.size(-1) && fused::gemv_applies(hidden.reshape({1, -1}), lm_head_)) {
      std::vector<int64_t> sizes = hidden.sizes().vec();
      sizes.back() = lm_head_.size(0);
      return fused::gemv(hidden.reshape({1, -1}), lm_head_).view(sizes);
    }
    return at::linear(hidden, lm_head_);
  }
  return per_segment(hidden, lm_head_, true,
                     [](const at::Tensor& head, const at::Tensor& h) { return at::linear(h, head); });
}

}  // namespace cpm::core::model
