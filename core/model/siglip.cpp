// SPDX-License-Identifier: Apache-2.0
#include "model/siglip.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/bucketize.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/StringUtil.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "model/attention.h"
#include "model/checkpoint.h"

namespace cpm::core::model {
namespace {

// torch.finfo(dtype).min: the reference's additive mask value for padded keys.
double finfo_min(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return std::numeric_limits<float>::lowest();
    case at::kDouble:
      return std::numeric_limits<double>::lowest();
    case at::kBFloat16:
      return static_cast<float>(std::numeric_limits<c10::BFloat16>::lowest());
    case at::kHalf:
      return static_cast<float>(std::numeric_limits<c10::Half>::lowest());
    default:
      throw std::invalid_argument("vision tower: unsupported dtype " + c10::str(dtype));
  }
}

void check_inputs(const std::vector<at::Tensor>& pixel_values,
                  const std::vector<std::array<int64_t, 2>>& tgt_sizes, int64_t patch) {
  if (pixel_values.empty() || pixel_values.size() != tgt_sizes.size()) {
    throw std::invalid_argument("vision tower: " + std::to_string(pixel_values.size()) +
                                " images with " + std::to_string(tgt_sizes.size()) + " tgt_sizes");
  }
  for (size_t i = 0; i < pixel_values.size(); ++i) {
    const at::Tensor& s = pixel_values[i];
    const auto [h, w] = tgt_sizes[i];
    if (h <= 0 || w <= 0 || s.dim() != 3 || s.size(0) != 3 || s.size(1) != patch ||
        s.size(2) != h * w * patch) {
      throw std::invalid_argument(
          "vision tower: image " + std::to_string(i) + " has pixels " + c10::str(s.sizes()) +
          " for tgt_size (" + std::to_string(h) + ", " + std::to_string(w) + "), expected [3, " +
          std::to_string(patch) + ", " + std::to_string(h * w * patch) + "]");
    }
  }
}

}  // namespace

std::vector<ParamSpec> siglip_parameter_specs(const io::VisionConfig& c, int layers,
                                              const std::string& scope) {
  const int64_t d = c.hidden_size, inter = c.intermediate_size, p = c.patch_size;
  const int64_t side = c.image_size / c.patch_size;
  std::vector<ParamSpec> specs;
  add_spec(specs, scope, "embeddings.patch_embedding.weight", {d, 3, p, p});
  add_spec(specs, scope, "embeddings.patch_embedding.bias", {d}, Init::kZeros);
  add_spec(specs, scope, "embeddings.position_embedding.weight", {side * side, d});
  for (int i = 0; i < layers; ++i) {
    const std::string layer = scope + ".encoder.layers." + std::to_string(i);
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      add_spec(specs, layer, std::string("self_attn.") + proj + ".weight", {d, d});
      add_spec(specs, layer, std::string("self_attn.") + proj + ".bias", {d}, Init::kZeros);
    }
    add_spec(specs, layer, "layer_norm1.weight", {d}, Init::kOnes);
    add_spec(specs, layer, "layer_norm1.bias", {d}, Init::kZeros);
    add_spec(specs, layer, "mlp.fc1.weight", {inter, d});
    add_spec(specs, layer, "mlp.fc1.bias", {inter}, Init::kZeros);
    add_spec(specs, layer, "mlp.fc2.weight", {d, inter});
    add_spec(specs, layer, "mlp.fc2.bias", {d}, Init::kZeros);
    add_spec(specs, layer, "layer_norm2.weight", {d}, Init::kOnes);
    add_spec(specs, layer, "layer_norm2.bias", {d}, Init::kZeros);
  }
  add_spec(specs, scope, "post_layernorm.weight", {d}, Init::kOnes);
  add_spec(specs, scope, "post_layernorm.bias", {d}, Init::kZeros);
  return specs;
}

at::Tensor navit_position_ids(const std::vector<std::array<int64_t, 2>>& tgt_sizes,
                              int64_t num_patches_per_side, int64_t length) {
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  // k / side for k = 1..side-1: the Python reference's arange(1 / side, 1.0, 1 / side).
  const double inv_side = 1.0 / static_cast<double>(num_patches_per_side);
  const at::Tensor boundaries = at::arange(inv_side, 1.0, inv_side, f32);
  // Fractions r / n as arange(0, 1 - 1e-6, 1 / n), where the reference's 1 / n divides 1 by an
  // int32 tgt_sizes entry, which makes the step a float32.
  const auto buckets = [&](int64_t n) {
    const double step = static_cast<double>(1.0f / static_cast<float>(n));
    const at::Tensor fractions = at::arange(0.0, 1.0 - 1e-6, step, f32);
    if (fractions.size(0) != n) {
      throw std::logic_error("navit_position_ids: arange gave " +
                             std::to_string(fractions.size(0)) + " fractions for " +
                             std::to_string(n) + " patches");
    }
    return at::bucketize(fractions, boundaries, /*out_int32=*/false, /*right=*/true);  // [n]
  };
  at::Tensor ids = at::zeros({static_cast<int64_t>(tgt_sizes.size()), length},
                             at::TensorOptions().dtype(at::kLong));
  for (size_t i = 0; i < tgt_sizes.size(); ++i) {
    const auto [h, w] = tgt_sizes[i];
    // [h, 1] * side + [1, w] -> row-major [h * w], the strip's patch order.
    const at::Tensor image_ids =
        (buckets(h).unsqueeze(1) * num_patches_per_side + buckets(w).unsqueeze(0)).flatten();
    ids[static_cast<int64_t>(i)].narrow(0, 0, h * w).copy_(image_ids);
  }
  return ids;
}

SiglipVisionTransformer::SiglipVisionTransformer(const Parameters& p, const std::string& scope,
                                                 const io::VisionConfig& c, int layers, bool checkpoint_layers)
    : dims_{c.hidden_size, c.num_attention_heads, c.hidden_size / c.num_attention_heads, c.layer_norm_eps},
      patch_size_(c.patch_size),
      num_patches_per_side_(c.image_size / c.patch_size),
      checkpoint_layers_(checkpoint_layers),
      patch_weight_(p.get(scope + ".embeddings.patch_embedding.weight")),
      patch_bias_(p.get(scope + ".embeddings.patch_embedding.bias")),
      position_weight_(p.get(scope + ".embeddings.position_embedding.weight")),
      post_ln_weight_(p.get(scope + ".post_layernorm.weight")),
      post_ln_bias_(p.get(scope + ".post_layernorm.bias")) {
  if (c.hidden_act != "gelu_pytorch_tanh") {
    throw std::invalid_argument("vision tower: hidden_act '" + c.hidden_act +
                                "' is not supported (only gelu_pytorch_tanh)");
  }
  for (int i = 0; i < layers; ++i) {
    const std::string l = scope + ".encoder.layers." + std::to_string(i);
    layers_.push_back(
        Layer{p.get(l + ".layer_norm1.weight"), p.get(l + ".layer_norm1.bias"),
              p.get(l + ".layer_norm2.weight"), p.get(l + ".layer_norm2.bias"),
              p.get(l + ".self_attn.q_proj.weight"), p.get(l + ".self_attn.q_proj.bias"),
              p.get(l + ".self_attn.k_proj.weight"), p.get(l + ".self_attn.k_proj.bias"),
              p.get(l + ".self_attn.v_proj.weight"), p.get(l + ".self_attn.v_proj.bias"),
              p.get(l + ".self_attn.out_proj.weight"), p.get(l + ".self_attn.out_proj.bias"),
              p.get(l + ".mlp.fc1.weight"), p.get(l + ".mlp.fc1.bias"),
              p.get(l + ".mlp.fc2.weight"), p.get(l + ".mlp.fc2.bias")});
  }
}

at::Tensor SiglipVisionTransformer::layer_forward(const Dims& d, const Layer& w, const at::Tensor& x,
                                                  const std::optional<at::Tensor>& mask) {
  const int64_t n = x.size(0), l = x.size(1);
  const at::Tensor h = at::layer_norm(x, {d.hidden}, w.ln1_weight, w.ln1_bias, d.eps);
  // [N, L, D] -> [N, H, L, Dh]
  const auto heads = [&](const at::Tensor& weight, const at::Tensor& bias) {
    return at::linear(h, weight, bias).view({n, l, d.heads, d.head_dim}).transpose(1, 2);
  };
  const at::Tensor attn = attention(heads(w.q_weight, w.q_bias), heads(w.k_weight, w.k_bias),
                                    heads(w.v_weight, w.v_bias), mask, /*causal=*/false,
                                    1.0 / std::sqrt(static_cast<double>(d.head_dim)));
  const at::Tensor merged = attn.transpose(1, 2).reshape({n, l, d.hidden});
  const at::Tensor x1 = x + at::linear(merged, w.out_weight, w.out_bias);
  const at::Tensor h2 = at::layer_norm(x1, {d.hidden}, w.ln2_weight, w.ln2_bias, d.eps);
  return x1 + at::linear(at::gelu(at::linear(h2, w.fc1_weight, w.fc1_bias), "tanh"), w.fc2_weight,
                         w.fc2_bias);
}

SiglipVisionTransformer::Prepared SiglipVisionTransformer::prepare(
    const std::vector<at::Tensor>& pixel_values, const std::vector<std::array<int64_t, 2>>& tgt_sizes,
    int64_t length) const {
  check_inputs(pixel_values, tgt_sizes, patch_size_);
  const int64_t n = static_cast<int64_t>(pixel_values.size()), p = patch_size_;
  int64_t lmax = 0;
  for (const auto& [h, w] : tgt_sizes) lmax = std::max(lmax, h * w);
  if (length == 0) length = lmax;
  if (length < lmax) {
    throw std::invalid_argument("vision tower: " + std::to_string(length) + " patch slots for an image of " +
                                std::to_string(lmax));
  }
  const auto options = patch_weight_.options();
  Prepared out;
  // The reference pads every strip with zeros on the right to the longest and casts the pixels to
  // the weights' dtype.
  out.pixels = at::zeros({n, 3, p, length * p}, options);
  for (int64_t i = 0; i < n; ++i) {
    out.pixels[i].narrow(-1, 0, pixel_values[i].size(2)).copy_(pixel_values[i]);
  }
  out.position_ids = navit_position_ids(tgt_sizes, num_patches_per_side_, length).to(options.device());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = tgt_sizes[i][0] * tgt_sizes[i][1];
    if (len == length) continue;
    if (!out.mask.defined()) out.mask = at::zeros({n, 1, 1, length}, options);
    out.mask[i].narrow(-1, len, length - len).fill_(finfo_min(patch_weight_.scalar_type()));
  }
  return out;
}

at::Tensor SiglipVisionTransformer::forward(const Prepared& in) const {
  const int64_t n = in.pixels.size(0), p = patch_size_, length = in.position_ids.size(1);
  // Conv2d with kernel = stride = p is a matmul over the p x p patches, taken in the weight's
  // (channel, row, column) order: [N, 3, p, L, p] -> [N, L, 3, p, p] -> [N, L, 3 p p].
  const at::Tensor patches =
      in.pixels.view({n, 3, p, length, p}).permute({0, 3, 1, 2, 4}).reshape({n, length, 3 * p * p});
  at::Tensor x = at::linear(patches, patch_weight_.reshape({dims_.hidden, 3 * p * p}), patch_bias_);
  x = x + at::index_select(position_weight_, 0, in.position_ids.flatten()).view({n, length, dims_.hidden});
  std::optional<at::Tensor> mask;
  if (in.mask.defined()) mask = in.mask;
  const bool recompute = checkpoint_layers_ && at::GradMode::is_enabled();
  for (const Layer& layer : layers_) {
    if (!recompute) {
      x = layer_forward(dims_, layer, x, mask);
      continue;
    }
    std::vector<at::Tensor> trained;
    for (const at::Tensor* t : {&layer.ln1_weight, &layer.ln1_bias, &layer.ln2_weight, &layer.ln2_bias, &layer.q_weight,
                                &layer.q_bias, &layer.k_weight, &layer.k_bias, &layer.v_weight, &layer.v_bias,
                                &layer.out_weight, &layer.out_bias, &layer.fc1_weight, &layer.fc1_bias,
                                &layer.fc2_weight, &layer.fc2_bias}) {
      if (t->requires_grad()) trained.push_back(*t);
    }
    x = checkpointed([d = dims_, layer, mask](const at::Tensor& y) { return layer_forward(d, layer, y, mask); }, x,
                     trained);
  }
  return at::layer_norm(x, {dims_.hidden}, post_ln_weight_, post_ln_bias_, dims_.eps);
}

}  // namespace cpm::core::model
