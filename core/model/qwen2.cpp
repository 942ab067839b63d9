// SPDX-License-Identifier: Apache-2.0
#include "model/qwen2.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/full.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <limits>

#include "model/attention.h"
#include "model/checkpoint.h"

namespace cpm::core::model {
namespace {

// [.., 2n] -> [-x2, x1]
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
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

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& position_ids, int64_t head_dim,
                                              double theta) {
  // inv_freq[k] = theta^(-2k / head_dim), computed as the reference does: 1 / theta^(arange / dim).
  const auto f32 = position_ids.options().dtype(at::kFloat);
  const at::Tensor exponent = at::arange(0, head_dim, 2, position_ids.options().dtype(at::kLong)).to(at::kFloat) / head_dim;
  const at::Tensor inv_freq = 1.0 / at::pow(theta, exponent);                       // [Dh/2]
  const at::Tensor freqs = position_ids.to(f32).unsqueeze(-1) * inv_freq;            // [B, T, Dh/2]
  const at::Tensor emb = at::cat({freqs, freqs}, -1);                                // [B, T, Dh]
  return {emb.cos(), emb.sin()};
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

Qwen2ForCausalLM::Qwen2ForCausalLM(const Parameters& p, const std::string& scope,
                                   const io::ModelConfig& c, const RunOptions& options)
    : dims_{c.num_attention_heads, c.num_key_value_heads, c.head_dim(), c.rms_norm_eps, options},
      rope_theta_(c.rope_theta) {
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
                            linear(l + ".mlp.down_proj", false)});
  }
  norm_ = p.get(model + ".norm.weight");
  lm_head_ = c.tie_word_embeddings ? embed_tokens_ : p.get(scope + ".lm_head.weight");
}

at::Tensor Qwen2ForCausalLM::embed(const at::Tensor& input_ids) const {
  return at::embedding(embed_tokens_, input_ids);
}

at::Tensor Qwen2ForCausalLM::project(const Dims& d, const at::Tensor& x, const Linear& l) {
  const at::Tensor y = at::linear(x, l.weight, l.bias);
  if (!l.lora_a.defined()) return y;
  if (l.lora_a.scalar_type() == y.scalar_type() && !(d.options.training && d.options.lora_dropout > 0)) {
    // Serving: everything in the model's dtype, three kernels.
    return y.add(at::linear(at::linear(x, l.lora_a), l.lora_b), d.options.lora_scaling);
  }
  at::Tensor in = x.to(l.lora_a.scalar_type());
  if (d.options.training && d.options.lora_dropout > 0) in = at::dropout(in, d.options.lora_dropout, /*train=*/true);
  const at::Tensor delta = at::linear(at::linear(in, l.lora_a), l.lora_b) * d.options.lora_scaling;
  // PEFT adds in the adapter's dtype (promoting the base output) and rounds the sum back.
  return (y.to(delta.scalar_type()) + delta).to(y.scalar_type());
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
                                           size_t index, const std::optional<at::Tensor>& mask) {
  const int64_t b = x.size(0), t = x.size(1);
  const at::Tensor h = rms_norm(x, w.input_norm, d.eps);
  // [B, T, H*Dh] -> [B, H, T, Dh]
  at::Tensor q = project(d, h, w.q).view({b, t, d.heads, d.head_dim}).transpose(1, 2);
  at::Tensor k = project(d, h, w.k).view({b, t, d.kv_heads, d.head_dim}).transpose(1, 2);
  at::Tensor v = project(d, h, w.v).view({b, t, d.kv_heads, d.head_dim}).transpose(1, 2);
  const at::Tensor& c = cos;
  const at::Tensor& s = sin;
  q = q * c + rotate_half(q) * s;
  k = k * c + rotate_half(k) * s;
  if (cache != nullptr && cache->write_positions.defined()) {
    k = cache->keys[index].index_copy_(2, cache->write_positions, k);
    v = cache->values[index].index_copy_(2, cache->write_positions, v);
  } else if (cache != nullptr) {
    if (cache->keys.size() <= index) {
      cache->keys.push_back(k);
      cache->values.push_back(v);
    } else {
      k = cache->keys[index] = at::cat({cache->keys[index], k}, 2);
      v = cache->values[index] = at::cat({cache->values[index], v}, 2);
    }
  }
  const at::Tensor attn = attention(q, k, v, mask, /*causal=*/true,
                                    1.0 / std::sqrt(static_cast<double>(d.head_dim)));
  const at::Tensor merged = attn.transpose(1, 2).reshape({b, t, d.heads * d.head_dim});
  const at::Tensor x1 = x + project(d, merged, w.o);
  const at::Tensor h2 = rms_norm(x1, w.post_norm, d.eps);
  return x1 + project(d, at::silu(project(d, h2, w.gate)) * project(d, h2, w.up), w.down);
}

at::Tensor Qwen2ForCausalLM::hidden_states(const at::Tensor& inputs_embeds,
                                           const at::Tensor& position_ids, KvCache* cache,
                                           const std::optional<at::Tensor>& key_mask) const {
  // cos/sin [B, T, Dh] -> [B, 1, T, Dh], in the activations' dtype as the reference casts them;
  // once here rather than in every layer.
  auto [cos_f, sin_f] = rope_tables(position_ids, dims_.head_dim, rope_theta_);
  const at::Tensor cos = cos_f.unsqueeze(1).to(inputs_embeds.scalar_type());
  const at::Tensor sin = sin_f.unsqueeze(1).to(inputs_embeds.scalar_type());
  std::optional<at::Tensor> mask;
  if (key_mask) {
    // [B, Tk] -> additive [B, 1, 1, Tk]: the dtype's lowest finite value on padding (not -inf, so
    // a padded query row, which sees only padding, stays finite as in the reference).
    const at::Tensor lowest = at::full({}, std::numeric_limits<float>::lowest(), inputs_embeds.options().dtype(at::kFloat));
    mask = at::where(key_mask->eq(0), lowest, at::zeros_like(lowest))
               .to(inputs_embeds.scalar_type()).unsqueeze(1).unsqueeze(1);
  }
  at::Tensor x = inputs_embeds;
  const bool recompute = dims_.options.gradient_checkpointing && cache == nullptr && at::GradMode::is_enabled();
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& w = layers_[i];
    if (recompute) {
      // Everything by value: the backward pass may run after this model is gone.
      x = checkpointed(
          [d = dims_, w, cos, sin, mask, i](const at::Tensor& in) {
            return layer_forward(d, w, in, cos, sin, nullptr, i, mask);
          },
          x, trainable(w));
    } else {
      x = layer_forward(dims_, w, x, cos, sin, cache, i, mask);
    }
  }
  return rms_norm(x, norm_, dims_.eps);
}

at::Tensor Qwen2ForCausalLM::logits(const at::Tensor& hidden) const { return at::linear(hidden, lm_head_); }

}  // namespace cpm::core::model
