// SPDX-License-Identifier: Apache-2.0
//
// The vision tower against Hugging Face transformers' Idefics2VisionTransformer, the same SigLIP
// NaViT (tests/core/model/make_vision_goldens.py): a tiny random tower, three batches of images
// (unpadded, padded, k/70 bucket ties), float32.
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "model/siglip.h"
#include "core/model/golden_util.h"

namespace cpm::core::model {
namespace {

// [3, h*p, w*p] -> the reference's strip [3, p, h*w*p] (row-major patches).
at::Tensor to_strip(const at::Tensor& image, int64_t h, int64_t w, int64_t p) {
  return image.view({3, h, p, w, p}).permute({0, 2, 1, 3, 4}).reshape({3, p, h * w * p});
}

TEST(SiglipVsTransformers, MatchesIdefics2VisionTransformer) {
  auto ckpt = io::SafetensorsCheckpoint::open(CPM_TEST_SOURCE_DIR "/tests/data/model/siglip_tiny.safetensors");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const auto& meta = ckpt->file_of("vpm.post_layernorm.weight")->header().metadata;
  const auto config = nlohmann::json::parse(meta.at("config"));
  const auto batches = nlohmann::json::parse(meta.at("batches"));
  const io::VisionConfig vc = testing::vision_config_from(config);
  Parameters params;
  for (const ParamSpec& spec : siglip_parameter_specs(vc, vc.num_hidden_layers, "vpm")) {
    auto t = ckpt->tensor(spec.name);
    ASSERT_TRUE(t.ok()) << spec.name;
    ASSERT_EQ(t->sizes().vec(), spec.shape) << spec.name;
    params.set(spec.name, t->clone());
  }
  const SiglipVisionTransformer tower(params, "vpm", vc, vc.num_hidden_layers);
  double worst = 0;
  for (size_t b = 0; b < batches.size(); ++b) {
    std::vector<at::Tensor> strips;
    std::vector<std::array<int64_t, 2>> sizes;
    for (size_t i = 0; i < batches[b].size(); ++i) {
      const int64_t h = batches[b][i][0], w = batches[b][i][1];
      const at::Tensor image = *ckpt->tensor("golden." + std::to_string(b) + ".image." + std::to_string(i));
      strips.push_back(to_strip(image, h, w, vc.patch_size));
      sizes.push_back({h, w});
    }
    const at::Tensor out = tower.forward(strips, sizes);
    for (size_t i = 0; i < sizes.size(); ++i) {
      const at::Tensor want = *ckpt->tensor("golden." + std::to_string(b) + ".output." + std::to_string(i));
      const at::Tensor got = out[static_cast<int64_t>(i)].narrow(0, 0, sizes[i][0] * sizes[i][1]);
      const double rel = ((got - want).abs().max() / want.abs().max()).item<double>();
      worst = std::max(worst, rel);
      EXPECT_LT(rel, 1e-4) << "batch " << b << " image " << i;
    }
  }
  std::cout << "[ siglip  ] max relative error vs transformers Idefics2VisionTransformer: " << worst << "\n";
}

}  // namespace
}  // namespace cpm::core::model
