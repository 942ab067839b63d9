// SPDX-License-Identifier: Apache-2.0
//
// The fused CUDA kernels (model/fused_ops.h) against the ATen ops they replace, in bfloat16 on the
// GPU (label gpu; skipped without a GPU or without the kernels in the build): the elementwise ones
// bit for bit, the GEMV within float32-summation rounding, and the Qwen2 decoder's inference way
// with and without them.
#include <ATen/TensorOperators.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include "common/device.h"
#include "core/model/golden_util.h"
#include "io/safetensors.h"
#include "model/fused_ops.h"
#include "model/qwen2.h"
#include "model/weight_loader.h"

namespace cpm::core::model {
namespace {

const c10::Device kCuda(c10::DeviceType::CUDA, 0);

at::TensorOptions bf16() { return at::TensorOptions().dtype(at::kBFloat16).device(kCuda); }

bool skip() { return !cuda_available() || !fused::built(); }

// Elements of a and b (same shape) that differ, and the largest difference relative to b's largest.
std::pair<int64_t, double> difference(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor af = a.to(at::kFloat), bf = b.to(at::kFloat);
  return {af.ne(bf).sum().item<int64_t>(), ((af - bf).abs().max() / bf.abs().max()).item<double>()};
}

TEST(FusedOps, RmsNormRoundsAsQwen2Does) {
  if (skip()) GTEST_SKIP() << "no CUDA device or no fused kernels";
  const at::Tensor x = at::randn({5, 3584}, bf16()) * 3, w = at::randn({3584}, bf16());
  const at::Tensor want = rms_norm(x, w, 1e-6);  // model/qwen2.h: the reference's float32 path
  const auto [differ, rel] = difference(fused::rms_norm(x, w, 1e-6), want);
  std::cout << "[ fused   ] rms_norm: " << differ << " of " << want.numel() << " differ, max " << rel << "\n";
  // The sum of squares is added in another order, which may move a value across a rounding edge.
  EXPECT_LE(differ, want.numel() / 1000);
  EXPECT_LT(rel, 1e-2);
}

TEST(FusedOps, RopeIntoCacheEqualsRotateHalfAndIndexCopy) {
  if (skip()) GTEST_SKIP() << "no CUDA device or no fused kernels";
  const int64_t b = 2, t = 3, heads = 4, kv_heads = 2, dh = 128, capacity = 16;
  // qkv rows with a stride wider than their width, as a narrow view of a larger output.
  const at::Tensor qkv = at::randn({b * t, (heads + 2 * kv_heads) * dh + 8}, bf16()).narrow(1, 0, (heads + 2 * kv_heads) * dh);
  const at::Tensor angle = at::randn({b, t, dh / 2}, at::TensorOptions().device(kCuda)) * 10;
  const at::Tensor cos = at::cat({angle, angle}, -1).cos().to(at::kBFloat16);
  const at::Tensor sin = at::cat({angle, angle}, -1).sin().to(at::kBFloat16);
  const at::Tensor positions = at::arange(5, 5 + t, at::TensorOptions().dtype(at::kLong).device(kCuda));
  at::Tensor keys = at::zeros({b, kv_heads, capacity, dh}, bf16()), values = at::zeros_like(keys);

  const at::Tensor q = fused::rope_into_cache(qkv, cos, sin, heads, kv_heads, keys, values, positions);

  // The reference: x * cos + rotate_half(x) * sin, each op rounded to bf16.
  const auto rope = [&](const at::Tensor& x) {  // x [B, T, n, Dh]
    const at::Tensor rotated = at::cat({-x.narrow(-1, dh / 2, dh / 2), x.narrow(-1, 0, dh / 2)}, -1);
    return x * cos.unsqueeze(2) + rotated * sin.unsqueeze(2);
  };
  const at::Tensor heads_view = qkv.reshape({b, t, heads + 2 * kv_heads, dh});
  EXPECT_TRUE(q.equal(rope(heads_view.narrow(2, 0, heads))));
  const at::Tensor want_k = rope(heads_view.narrow(2, heads, kv_heads)).transpose(1, 2);  // [B, Hkv, T, Dh]
  const at::Tensor want_v = heads_view.narrow(2, heads + kv_heads, kv_heads).transpose(1, 2);
  EXPECT_TRUE(keys.index_select(2, positions).equal(want_k));
  EXPECT_TRUE(values.index_select(2, positions).equal(want_v));
  // Nothing else written.
  EXPECT_EQ(keys.ne(0).sum().item<int64_t>(), want_k.ne(0).sum().item<int64_t>());
  EXPECT_EQ(values.ne(0).sum().item<int64_t>(), want_v.ne(0).sum().item<int64_t>());
}

TEST(FusedOps, SiluMulEqualsAten) {
  if (skip()) GTEST_SKIP() << "no CUDA device or no fused kernels";
  const int64_t inter = 18944;
  const at::Tensor gate_up = at::randn({3, 2 * inter}, bf16()) * 4;
  const at::Tensor want = at::silu(gate_up.narrow(1, 0, inter)) * gate_up.narrow(1, inter, inter);
  EXPECT_TRUE(fused::silu_mul(gate_up).equal(want));
}

TEST(FusedOps, GemvEqualsAddmmUpToSummationOrder) {
  if (skip()) GTEST_SKIP() << "no CUDA device or no fused kernels";
  // 1001 rows: a partial last block. The weight is a view with a row stride wider than K.
  const at::Tensor w = at::randn({1001, 3584 + 64}, bf16()).narrow(1, 0, 3584);
  const at::Tensor x = at::randn({1, 3584}, bf16()), bias = at::randn({1001}, bf16());
  ASSERT_TRUE(fused::gemv_applies(x, w));
  // float32 products summed in float64: both kernels are within rounding of it.
  const at::Tensor exact = at::addmm(bias.to(at::kDouble), x.to(at::kDouble), w.to(at::kDouble).t());
  const auto [differ, rel] = difference(fused::gemv(x, w, bias), exact.to(at::kBFloat16));
  const auto [cublas_differ, cublas_rel] = difference(at::addmm(bias, x, w.t()), exact.to(at::kBFloat16));
  std::cout << "[ fused   ] gemv vs exact: " << differ << " of 1001 differ, max " << rel << "; cuBLAS: "
            << cublas_differ << ", max " << cublas_rel << "\n";
  EXPECT_LT(rel, 1e-2);

  // out += x w^T, as addmm_ with beta 1 (the residual add folded in); and scaled, as LoRA's expand.
  for (const double scale : {1.0, 0.25}) {
    at::Tensor out = at::randn({1, 1001}, bf16());
    const at::Tensor want = at::addmm(out.to(at::kDouble), x.to(at::kDouble), w.to(at::kDouble).t(), 1, scale);
    fused::gemv_add_(out, x, w, scale);
    EXPECT_LT(difference(out, want.to(at::kBFloat16)).second, 1e-2) << "scale " << scale;
  }

  // Two rows or a K not divisible by 8 are not its shapes.
  EXPECT_FALSE(fused::gemv_applies(at::randn({2, 3584}, bf16()), w));
  EXPECT_FALSE(fused::gemv_applies(at::randn({1, 3583}, bf16()), at::randn({8, 3583}, bf16())));
}

// The tiny Qwen2 in bf16, prompt and then one decode step into a static cache (the path of a
// batch-1 decode graph), with the kernels and without: the same next tokens, logits within bf16
// rounding.
TEST(FusedOps, Qwen2DecodesAsWithoutThem) {
  if (skip()) GTEST_SKIP() << "no CUDA device or no fused kernels";
  auto ckpt = io::SafetensorsCheckpoint::open(CPM_TEST_SOURCE_DIR "/tests/data/model/qwen2_tiny.safetensors");
  ASSERT_TRUE(ckpt.ok());
  const io::ModelConfig c = testing::llm_config_from(testing::golden_meta(*ckpt, "golden.logits"));
  LoadOptions options;
  options.dtype = at::kBFloat16;
  options.device = kCuda;
  Parameters params;
  ASSERT_TRUE(load_parameters(*ckpt, testing::with_goldens(qwen2_parameter_specs(c, "llm"), *ckpt), options, params).ok());
  const Qwen2ForCausalLM llm(params, "llm", c);
  const at::Tensor ids = ckpt->tensor("golden.input_ids")->narrow(0, 0, 1).to(kCuda);  // [1, T]: batch 1
  const int64_t t = ids.size(1), capacity = t + 8;
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(kCuda);

  const auto run = [&](bool fused_kernels) {
    fused::set_enabled(fused_kernels);
    // The prompt into a growing cache, copied into static buffers as serve/static_decode.h does.
    KvCache grown, cache;
    const at::Tensor prompt = llm.logits(llm.hidden_states(llm.embed(ids), at::arange(t, long_options).unsqueeze(0), &grown));
    for (int i = 0; i < c.num_hidden_layers; ++i) {
      cache.keys.push_back(at::zeros({1, c.num_key_value_heads, capacity, c.head_dim()}, bf16()));
      cache.values.push_back(at::zeros_like(cache.keys.back()));
      cache.keys.back().narrow(2, 0, t).copy_(grown.keys[i]);
      cache.values.back().narrow(2, 0, t).copy_(grown.values[i]);
    }
    at::Tensor key_mask = at::zeros({1, capacity}, long_options);
    key_mask.narrow(1, 0, t + 1).fill_(1);
    cache.write_positions = at::full({1}, t, long_options);
    const at::Tensor next = prompt.select(1, t - 1).argmax(-1, /*keepdim=*/true);  // [1, 1]
    const at::Tensor step =
        llm.logits(llm.hidden_states(llm.embed(next), cache.write_positions.unsqueeze(0), &cache, key_mask));
    fused::set_enabled(true);
    return std::make_tuple(prompt, step, cache.keys.back().clone());
  };
  const auto [prompt_fused, step_fused, keys_fused] = run(true);
  const auto [prompt_aten, step_aten, keys_aten] = run(false);
  const auto [prompt_differ, prompt_rel] = difference(prompt_fused, prompt_aten);
  const auto [step_differ, step_rel] = difference(step_fused, step_aten);
  std::cout << "[ fused   ] tiny qwen2: prompt logits max relative difference " << prompt_rel << ", decode step "
            << step_rel << "; last layer's keys " << difference(keys_fused, keys_aten).second << "\n";
  EXPECT_LT(prompt_rel, 3e-2);
  EXPECT_LT(step_rel, 3e-2);
  EXPECT_TRUE(prompt_fused.argmax(-1).equal(prompt_aten.argmax(-1)));
  EXPECT_TRUE(step_fused.argmax(-1).equal(step_aten.argmax(-1)));
  EXPECT_LT(difference(keys_fused, keys_aten).second, 3e-2);
}

}  // namespace
}  // namespace cpm::core::model
