// SPDX-License-Identifier: Apache-2.0
#include "model/siglip.h"

#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

#include <map>
#include <stdexcept>

#include "core/model/vision_oracle.h"

namespace cpm::core::model {
namespace {

using Sizes = std::vector<std::array<int64_t, 2>>;

// A tiny tower with the real patch size and 70 x 70 position grid: the real bucketing.
io::VisionConfig tiny_config(int layers) {
  io::VisionConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 4;
  return c;
}

at::Tensor tgt_tensor(const Sizes& sizes) {
  std::vector<int64_t> flat;
  for (const auto& [h, w] : sizes) flat.insert(flat.end(), {h, w});
  return at::tensor(flat, at::kLong).view({static_cast<int64_t>(sizes.size()), 2});
}

// Random weights for every checkpoint layer and random pixels in [-1, 1] (the normalised range).
struct Case {
  Parameters params;
  testing::NamedTensors file;
  std::vector<at::Tensor> pixels;
};

Case random_case(const io::VisionConfig& c, const Sizes& sizes, uint64_t seed) {
  at::manual_seed(seed);
  Case k;
  testing::random_parameters(siglip_parameter_specs(c, c.num_hidden_layers, "vpm"), k.params,
                             k.file);
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int64_t p = c.patch_size;
    k.pixels.push_back(at::rand({3, p, sizes[i][0] * sizes[i][1] * p}) * 2 - 1);
    k.file.emplace_back("input.pixel_values." + std::to_string(i), k.pixels.back());
  }
  k.file.emplace_back("input.tgt_sizes", tgt_tensor(sizes));
  return k;
}

// The rows of real patches, [sum h*w, D]: the padded rows are unspecified.
at::Tensor valid_rows(const at::Tensor& out, const Sizes& sizes) {
  std::vector<at::Tensor> rows;
  for (size_t i = 0; i < sizes.size(); ++i) {
    rows.push_back(out[static_cast<int64_t>(i)].narrow(0, 0, sizes[i][0] * sizes[i][1]));
  }
  return at::cat(rows, 0);
}

// The tower on `layers_used` of the config's layers vs vision_reference.py, float32 on the CPU.
void expect_matches_reference(const std::string& what, const io::VisionConfig& c, int layers_used,
                              const Sizes& sizes, uint64_t seed) {
  const Case k = random_case(c, sizes, seed);
  const SiglipVisionTransformer vpm(k.params, "vpm", c, layers_used);
  const at::Tensor got = vpm.forward(k.pixels, sizes);
  testing::TempDir dir;
  const nlohmann::json config = {
      {"hidden_size", c.hidden_size},       {"num_attention_heads", c.num_attention_heads},
      {"patch_size", c.patch_size},         {"image_size", c.image_size},
      {"layer_norm_eps", c.layer_norm_eps}, {"layers_used", layers_used}};
  const at::Tensor want = testing::run_vision_reference(dir, "siglip", k.file, config);
  int64_t lmax = 0;
  for (const auto& [h, w] : sizes) lmax = std::max(lmax, h * w);
  ASSERT_EQ(got.sizes(),
            (at::IntArrayRef{static_cast<int64_t>(sizes.size()), lmax, c.hidden_size}));
  ASSERT_EQ(got.sizes(), want.sizes());
  const testing::Error e = testing::compare(what, valid_rows(got, sizes), valid_rows(want, sizes));
  EXPECT_LT(e.relative, 1e-4) << what;
}

TEST(Siglip, SpecsMatchTheCheckpointTableForTheRealModel) {
  const io::VisionConfig real;  // defaults are SigLIP-so400m's numbers
  const std::vector<ParamSpec> specs = siglip_parameter_specs(real, real.num_hidden_layers, "vpm");
  EXPECT_EQ(specs.size(), 3u + 27u * 16u + 2u);
  std::map<std::string, ParamSpec> by_name;
  int64_t params = 0;
  for (const ParamSpec& s : specs) {
    by_name[s.name] = s;
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    params += n;
  }
  ASSERT_EQ(by_name.size(), specs.size());  // no duplicates
  using Shape = std::vector<int64_t>;
  EXPECT_EQ(by_name["vpm.embeddings.patch_embedding.weight"].shape, (Shape{1152, 3, 14, 14}));
  EXPECT_EQ(by_name["vpm.embeddings.patch_embedding.bias"].shape, (Shape{1152}));
  EXPECT_EQ(by_name["vpm.embeddings.position_embedding.weight"].shape, (Shape{4900, 1152}));
  for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
    const std::string key = std::string("vpm.encoder.layers.26.self_attn.") + proj;
    EXPECT_EQ(by_name[key + ".weight"].shape, (Shape{1152, 1152})) << key;
    EXPECT_EQ(by_name[key + ".bias"].shape, (Shape{1152})) << key;
  }
  EXPECT_EQ(by_name["vpm.encoder.layers.0.mlp.fc1.weight"].shape, (Shape{4304, 1152}));
  EXPECT_EQ(by_name["vpm.encoder.layers.0.mlp.fc1.bias"].shape, (Shape{4304}));
  EXPECT_EQ(by_name["vpm.encoder.layers.13.mlp.fc2.weight"].shape, (Shape{1152, 4304}));
  EXPECT_EQ(by_name["vpm.encoder.layers.13.mlp.fc2.bias"].shape, (Shape{1152}));
  EXPECT_EQ(by_name["vpm.encoder.layers.5.layer_norm1.weight"].shape, (Shape{1152}));
  EXPECT_EQ(by_name["vpm.encoder.layers.5.layer_norm2.bias"].shape, (Shape{1152}));
  EXPECT_EQ(by_name["vpm.post_layernorm.weight"].shape, (Shape{1152}));
  EXPECT_EQ(by_name["vpm.post_layernorm.bias"].shape, (Shape{1152}));
  EXPECT_EQ(by_name.count("vpm.encoder.layers.27.mlp.fc1.weight"), 0u);
  EXPECT_EQ(params, 417'792'240);
  // Norm weights start at one, biases at zero, everything else random.
  for (const ParamSpec& s : specs) {
    const bool norm_weight = (s.name.find("layer_norm") != std::string::npos ||
                              s.name.find("layernorm") != std::string::npos) &&
                             s.name.ends_with(".weight");
    const Init want = s.name.ends_with(".bias") ? Init::kZeros
                      : norm_weight             ? Init::kOnes
                                                : Init::kNormal;
    EXPECT_EQ(s.init, want) << s.name;
  }
  // drop_vision_last_layer: 26 layers, the last one absent.
  const std::vector<ParamSpec> dropped = siglip_parameter_specs(real, 26, "vpm");
  EXPECT_EQ(dropped.size(), 3u + 26u * 16u + 2u);
  EXPECT_EQ(dropped.back().name, "vpm.post_layernorm.bias");
}

TEST(Siglip, PositionIdsMatchPyTorchBucketingForEverySize) {
  // Every h and w in 1..140 (w = 141 - h): the exact k / 70 ties (h = 7, 14, 35, 70, 140) and
  // sides beyond the 70 x 70 grid.
  Sizes sizes;
  for (int64_t h = 1; h <= 140; ++h) sizes.push_back({h, 141 - h});
  int64_t lmax = 0;
  for (const auto& [h, w] : sizes) lmax = std::max(lmax, h * w);
  const at::Tensor got = navit_position_ids(sizes, 70, lmax);
  testing::TempDir dir;
  const at::Tensor want =
      testing::run_vision_reference(dir, "position_ids", {{"input.tgt_sizes", tgt_tensor(sizes)}},
                                    {{"num_patches_per_side", 70}});
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_TRUE(at::equal(got, want));
  // How often float32 bucketing differs from the closed form floor(70 r / h): the reason the spec
  // asks for arange + bucketize rather than a formula.
  const auto ids = got.accessor<int64_t, 2>();
  int64_t differs = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const auto [h, w] = sizes[i];
    for (int64_t r = 0; r < h; ++r) {
      for (int64_t col = 0; col < w; ++col) {
        differs += ids[static_cast<int64_t>(i)][r * w + col] != (70 * r / h) * 70 + 70 * col / w;
      }
    }
  }
  std::cout << "[ vision  ] position ids of " << sizes.size() << " sizes: " << differs
            << " differ from floor(70 r / h) * 70 + floor(70 c / w)\n";
  // A 35 x 14 image at row 1, column 1: 1/35 and 1/14 sit on the boundaries 2/70 and 5/70.
  const Sizes tie = {{35, 14}};
  const at::Tensor tie_ids = navit_position_ids(tie, 70, 35 * 14);
  EXPECT_EQ(tie_ids[0][0].item<int64_t>(), 0);
  std::cout << "[ vision  ] 35 x 14, patch (1, 1) -> position id "
            << tie_ids[0][14 + 1].item<int64_t>() << " (closed form " << 2 * 70 + 5 << ")\n";
}

TEST(Siglip, UnpaddedImagesMatchTheReference) {
  const io::VisionConfig c = tiny_config(2);
  // One image whose sides hit the k / 70 ties; two images of equal length (no mask, N > 1).
  expect_matches_reference("35 x 14", c, 2, {{35, 14}}, 1);
  expect_matches_reference("6 x 4 + 4 x 6", c, 2, {{6, 4}, {4, 6}}, 2);
}

TEST(Siglip, PaddedBatchMatchesTheReference) {
  // Lengths 35, 70, 98, 9, 1: zero-padded pixels, position 0 and masked keys past each h * w.
  expect_matches_reference("padded batch of 5", tiny_config(2), 2,
                           {{5, 7}, {35, 2}, {7, 14}, {3, 3}, {1, 1}}, 3);
}

TEST(Siglip, DropVisionLastLayerRunsOneLayerFewer) {
  io::ModelConfig m;
  m.vision = tiny_config(3);
  m.drop_vision_last_layer = true;
  ASSERT_EQ(m.vision_layers_used(), 2);
  // The checkpoint holds all 3 layers; the reference applies layers[:-1].
  expect_matches_reference("drop_vision_last_layer", m.vision, m.vision_layers_used(),
                           {{4, 9}, {6, 5}}, 4);
  const Case k = random_case(m.vision, {{4, 9}}, 4);
  const at::Tensor two =
      SiglipVisionTransformer(k.params, "vpm", m.vision, 2).forward(k.pixels, {{4, 9}});
  const at::Tensor three =
      SiglipVisionTransformer(k.params, "vpm", m.vision, 3).forward(k.pixels, {{4, 9}});
  EXPECT_GT((two - three).abs().max().item<double>(), 1e-2);
}

TEST(Siglip, Bfloat16WeightsTrackFloat32) {
  // The GPU dtype, on the CPU: float32 pixels are cast to the weights' dtype, the padding mask
  // holds bfloat16's finfo.min, and the output is bfloat16.
  const io::VisionConfig c = tiny_config(2);
  const Sizes sizes = {{5, 7}, {3, 3}};
  const Case k = random_case(c, sizes, 6);
  Parameters bf16;
  for (const auto& [name, t] : k.params.all()) bf16.set(name, t.to(at::kBFloat16));
  const at::Tensor want = SiglipVisionTransformer(k.params, "vpm", c, 2).forward(k.pixels, sizes);
  const at::Tensor got = SiglipVisionTransformer(bf16, "vpm", c, 2).forward(k.pixels, sizes);
  ASSERT_EQ(got.scalar_type(), at::kBFloat16);
  const testing::Error e = testing::compare(
      "bfloat16 vs float32", valid_rows(got, sizes).to(at::kFloat), valid_rows(want, sizes));
  EXPECT_LT(e.relative, 5e-2);
}

// Recomputing each layer in the backward pass (the recipe's gradient checkpointing, which the
// trainer turns on for the vision tower) gives the gradients of the plain backward pass, with a
// padded image in the batch; more patch slots than the longest image (the trainer's shape
// buckets) leave the real rows and the gradients as they were.
TEST(Siglip, CheckpointedLayersGiveTheSameGradients) {
  const io::VisionConfig c = tiny_config(2);
  const Sizes sizes = {{5, 7}, {3, 3}};
  std::vector<at::Tensor> grads[2];
  at::Tensor outputs[2];
  for (int checkpointing = 0; checkpointing < 2; ++checkpointing) {
    Case k = random_case(c, sizes, 8);
    for (auto& [name, t] : k.params.all()) t.requires_grad_(true);
    const SiglipVisionTransformer vpm(k.params, "vpm", c, 2, checkpointing == 1);
    // The plain run on the images' own length, the checkpointed one on 13 more padded slots.
    outputs[checkpointing] = vpm.forward(vpm.prepare(k.pixels, sizes, checkpointing == 1 ? 35 + 13 : 0));
    valid_rows(outputs[checkpointing], sizes).pow(2).sum().backward();
    for (const auto& [name, t] : k.params.all()) {
      ASSERT_TRUE(t.grad().defined()) << name;
      grads[checkpointing].push_back(t.grad().clone());
    }
  }
  EXPECT_TRUE(at::allclose(valid_rows(outputs[0], sizes), valid_rows(outputs[1], sizes), 1e-5, 1e-6));
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (size_t i = 0; i < grads[0].size(); ++i) {
    // Padding adds zero terms to the weight gradients' sums: rounding, nothing more.
    EXPECT_LE((grads[0][i] - grads[1][i]).abs().max().item<double>(),
              1e-5 * grads[0][i].abs().max().item<double>() + 1e-6)
        << i;
  }
}

TEST(Siglip, RejectsPixelsThatDoNotMatchTheirSize) {
  const io::VisionConfig c = tiny_config(1);
  const Case k = random_case(c, {{2, 3}}, 5);
  const SiglipVisionTransformer vpm(k.params, "vpm", c, 1);
  EXPECT_THROW(vpm.forward(k.pixels, {{3, 3}}), std::invalid_argument);
  EXPECT_THROW(vpm.forward(k.pixels, {{2, 3}, {1, 1}}), std::invalid_argument);
  EXPECT_THROW(vpm.forward({at::rand({3, 16, 6 * 16})}, {{2, 3}}), std::invalid_argument);
  EXPECT_NO_THROW(vpm.forward(k.pixels, {{2, 3}}));
}

}  // namespace
}  // namespace cpm::core::model
