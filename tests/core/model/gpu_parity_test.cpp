// SPDX-License-Identifier: Apache-2.0
//
// The model in bfloat16 on a CUDA device against the float32 goldens of transformers (label gpu;
// skipped without a GPU): within bfloat16 tolerance, and the same argmax at (nearly) every
// position.
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <gtest/gtest.h>

#include "common/device.h"
#include "io/safetensors.h"
#include "model/minicpmo.h"
#include "model/weight_loader.h"
#include "core/model/golden_util.h"

namespace cpm::core::model {
namespace {

struct Comparison {
  double rel = 0;        // max |got - want| / max |want|
  double argmax = 0;     // fraction of rows with the same argmax
};

Comparison compare(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kFloat).cpu(), w = want.to(at::kFloat);
  return {((g - w).abs().max() / w.abs().max()).item<double>(),
          g.argmax(-1).eq(w.argmax(-1)).to(at::kFloat).mean().item<double>()};
}

LoadOptions cuda_bf16() {
  LoadOptions o;
  o.dtype = at::kBFloat16;
  o.device = c10::Device(c10::DeviceType::CUDA, 0);
  return o;
}

TEST(GpuParity, Qwen2InBfloat16) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  auto ckpt = io::SafetensorsCheckpoint::open(CPM_TEST_SOURCE_DIR "/tests/data/model/qwen2_tiny.safetensors");
  ASSERT_TRUE(ckpt.ok());
  const io::ModelConfig c = testing::llm_config_from(testing::golden_meta(*ckpt, "golden.logits"));
  Parameters params;
  ASSERT_TRUE(load_parameters(*ckpt, testing::with_goldens(qwen2_parameter_specs(c, "llm"), *ckpt),
                              cuda_bf16(), params).ok());
  const Qwen2ForCausalLM llm(params, "llm", c);
  const c10::Device cuda(c10::DeviceType::CUDA, 0);
  const at::Tensor ids = ckpt->tensor("golden.input_ids")->to(cuda);
  const at::Tensor positions = ckpt->tensor("golden.position_ids")->to(cuda);
  const Comparison r = compare(llm.logits(llm.hidden_states(llm.embed(ids), positions)), *ckpt->tensor("golden.logits"));
  std::cout << "[ gpu     ] qwen2 bf16: max relative error " << r.rel << ", argmax agreement " << r.argmax << "\n";
  EXPECT_LT(r.rel, 3e-2);
  EXPECT_GE(r.argmax, 0.99);
}

TEST(GpuParity, WholePathInBfloat16) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  auto ckpt = io::SafetensorsCheckpoint::open(CPM_TEST_SOURCE_DIR "/tests/data/model/minicpmo_tiny.safetensors");
  ASSERT_TRUE(ckpt.ok());
  const auto meta = testing::golden_meta(*ckpt, "golden.logits");
  io::ModelConfig c = testing::llm_config_from(meta["llm"]);
  c.vision = testing::vision_config_from(meta["vision"]);
  Parameters params;
  ASSERT_TRUE(load_parameters(*ckpt, testing::with_goldens(minicpmo_parameter_specs(c), *ckpt), cuda_bf16(),
                              params).ok());
  const MiniCPMO model(params, c);
  std::vector<at::Tensor> strips;
  std::vector<std::array<int64_t, 2>> sizes;
  for (size_t i = 0; i < meta["sizes"].size(); ++i) {
    const int64_t h = meta["sizes"][i][0], w = meta["sizes"][i][1];
    const at::Tensor image = *ckpt->tensor("golden.image." + std::to_string(i));  // float32, CPU
    strips.push_back(image.view({3, h, 14, w, 14}).permute({0, 2, 1, 3, 4}).reshape({3, 14, h * w * 14}));
    sizes.push_back({h, w});
  }
  const c10::Device cuda(c10::DeviceType::CUDA, 0);
  const at::Tensor features = model.encode_images(strips, sizes);
  const Comparison rf = compare(features.reshape({-1, features.size(-1)}),
                                ckpt->tensor("golden.resampler")->reshape({-1, features.size(-1)}));
  std::vector<std::pair<int64_t, int64_t>> bound;
  for (const auto& b : meta["image_bound"]) bound.emplace_back(b[0].get<int64_t>(), b[1].get<int64_t>());
  const at::Tensor ids = ckpt->tensor("golden.input_ids")->to(cuda);
  const at::Tensor embeds = model.prompt_embeddings(ids, bound, features);
  const at::Tensor logits = model.llm().logits(
      model.llm().hidden_states(embeds, at::arange(ids.size(0), ids.options()).unsqueeze(0)))[0];
  const Comparison rl = compare(logits, *ckpt->tensor("golden.logits"));
  std::cout << "[ gpu     ] whole path bf16: resampler max relative error " << rf.rel << "; logits "
            << rl.rel << ", argmax agreement " << rl.argmax << " over " << logits.size(0) << " positions\n";
  EXPECT_LT(rf.rel, 5e-2);
  EXPECT_LT(rl.rel, 5e-2);
  EXPECT_GE(rl.argmax, 0.99);
}

}  // namespace
}  // namespace cpm::core::model
