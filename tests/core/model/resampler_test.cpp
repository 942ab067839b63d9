// SPDX-License-Identifier: Apache-2.0
#include "model/resampler.h"

#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <stdexcept>

#include "core/model/vision_oracle.h"

namespace cpm::core::model {
namespace {

using Sizes = std::vector<std::array<int64_t, 2>>;

at::Tensor tgt_tensor(const Sizes& sizes) {
  std::vector<int64_t> flat;
  for (const auto& [h, w] : sizes) flat.insert(flat.end(), {h, w});
  return at::tensor(flat, at::kLong).view({static_cast<int64_t>(sizes.size()), 2});
}

// A resampler with 128-wide heads (embed_dim / 128 of them, as MiniCPM-o builds it).
struct Case {
  int64_t embed_dim, kv_dim, query_num;
  Parameters params;
  testing::NamedTensors file;
  at::Tensor x;  // [N, max h*w, kv_dim]
};

Case random_case(int64_t embed_dim, int64_t kv_dim, int64_t query_num, const Sizes& sizes,
                 uint64_t seed) {
  at::manual_seed(seed);
  Case k{embed_dim, kv_dim, query_num, {}, {}, {}};
  testing::random_parameters(
      resampler_parameter_specs(embed_dim, kv_dim, embed_dim / 128, query_num, "resampler"),
      k.params, k.file);
  int64_t lmax = 0;
  for (const auto& [h, w] : sizes) lmax = std::max(lmax, h * w);
  k.x = at::randn({static_cast<int64_t>(sizes.size()), lmax, kv_dim});
  k.file.emplace_back("input.x", k.x);
  k.file.emplace_back("input.tgt_sizes", tgt_tensor(sizes));
  return k;
}

void expect_matches_reference(const std::string& what, int64_t embed_dim, int64_t kv_dim,
                              int64_t query_num, const Sizes& sizes, uint64_t seed) {
  const Case k = random_case(embed_dim, kv_dim, query_num, sizes, seed);
  const Resampler resampler(k.params, "resampler", embed_dim, embed_dim / 128);
  const at::Tensor got = resampler.forward(k.x, sizes);
  ASSERT_EQ(got.sizes(),
            (at::IntArrayRef{static_cast<int64_t>(sizes.size()), query_num, embed_dim}));
  testing::TempDir dir;
  const at::Tensor want = testing::run_vision_reference(
      dir, "resampler", k.file,
      {{"embed_dim", embed_dim}, {"num_heads", embed_dim / 128}, {"kv_dim", kv_dim}});
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LT(testing::compare(what, got, want).relative, 1e-4) << what;
}

TEST(Resampler, SpecsMatchTheCheckpointTableForTheRealModel) {
  const std::vector<ParamSpec> specs = resampler_parameter_specs(3584, 1152, 28, 64, "resampler");
  using Shape = std::vector<int64_t>;
  const std::map<std::string, std::pair<Shape, Init>> want = {
      {"resampler.query", {{64, 3584}, Init::kNormal}},
      {"resampler.kv_proj.weight", {{3584, 1152}, Init::kNormal}},
      {"resampler.attn.in_proj_weight", {{10752, 3584}, Init::kNormal}},
      {"resampler.attn.in_proj_bias", {{10752}, Init::kZeros}},
      {"resampler.attn.out_proj.weight", {{3584, 3584}, Init::kNormal}},
      {"resampler.attn.out_proj.bias", {{3584}, Init::kZeros}},
      {"resampler.ln_q.weight", {{3584}, Init::kOnes}},
      {"resampler.ln_q.bias", {{3584}, Init::kZeros}},
      {"resampler.ln_kv.weight", {{3584}, Init::kOnes}},
      {"resampler.ln_kv.bias", {{3584}, Init::kZeros}},
      {"resampler.ln_post.weight", {{3584}, Init::kOnes}},
      {"resampler.ln_post.bias", {{3584}, Init::kZeros}},
      {"resampler.proj", {{3584, 3584}, Init::kNormal}},
  };
  std::map<std::string, std::pair<Shape, Init>> got;
  int64_t params = 0;
  for (const ParamSpec& s : specs) {
    got[s.name] = {s.shape, s.init};
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    params += n;
  }
  EXPECT_EQ(got.size(), specs.size());  // no duplicates
  EXPECT_EQ(got, want);
  EXPECT_EQ(params, 68'619'264);
  // kv_dim == embed_dim: the reference's kv_proj is an identity, with no weight.
  EXPECT_EQ(resampler_parameter_specs(256, 256, 2, 8, "r").size(), want.size() - 1);
  EXPECT_THROW(resampler_parameter_specs(3584, 1152, 27, 64, "resampler"), std::invalid_argument);
}

TEST(Resampler, PositionTableMatchesNumpyColumnHalfFirst) {
  // The real width, a side beyond 70 (the reference grows its table), and a tiny width.
  for (const auto& [d, h, w] :
       std::vector<std::array<int64_t, 3>>{{3584, 3, 80}, {256, 72, 5}, {8, 4, 3}}) {
    const at::Tensor got = resampler_pos_embed(d, h, w);
    ASSERT_EQ(got.sizes(), (at::IntArrayRef{h * w, d}));
    testing::TempDir dir;
    const at::Tensor want =
        testing::run_vision_reference(dir, "pos_embed", {}, {{"embed_dim", d}, {"h", h}, {"w", w}});
    const std::string what = "sin-cos table D=" + std::to_string(d) + " " + std::to_string(h) +
                             " x " + std::to_string(w);
    // The angles reach ~80 rad in float32, so sin/cos of numpy and ATen may differ by a few ulp
    // of the angle.
    EXPECT_LT(testing::compare(what, got, want).max_abs, 2e-5) << what;
  }
  // Row 0, column 1: the first half encodes the column (sin(1 * w_0) = sin 1), the second the row.
  const at::Tensor t = resampler_pos_embed(8, 2, 2);
  EXPECT_NEAR(t[1][0].item<double>(), std::sin(1.0), 1e-6);
  EXPECT_NEAR(t[1][4].item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(t[2][0].item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(t[2][4].item<double>(), std::sin(1.0), 1e-6);
}

TEST(Resampler, SingleImageMatchesTheReference) {
  expect_matches_reference("one 4 x 5 image, D 128", 128, 48, 8, {{4, 5}}, 11);
}

TEST(Resampler, PaddedBatchMatchesTheReference) {
  // Lengths 35, 70, 98, 9: the key padding mask past each h * w; 7, 14, 35 sides.
  expect_matches_reference("padded batch, D 256", 256, 64, 16, {{5, 7}, {35, 2}, {7, 14}, {3, 3}},
                           12);
}

TEST(Resampler, SidesBeyondSeventyGrowTheTable) {
  expect_matches_reference("sides 75 and 80", 256, 32, 8, {{2, 75}, {80, 1}, {3, 3}}, 13);
}

TEST(Resampler, IdentityKvProjWhenKvDimEqualsEmbedDim) {
  expect_matches_reference("kv_dim == embed_dim", 128, 128, 8, {{3, 4}, {2, 2}}, 14);
}

TEST(Resampler, Bfloat16WeightsTrackFloat32) {
  const Sizes sizes = {{5, 7}, {3, 3}};
  const Case k = random_case(256, 64, 16, sizes, 16);
  Parameters bf16;
  for (const auto& [name, t] : k.params.all()) bf16.set(name, t.to(at::kBFloat16));
  const at::Tensor want = Resampler(k.params, "resampler", 256, 2).forward(k.x, sizes);
  const at::Tensor got = Resampler(bf16, "resampler", 256, 2).forward(k.x.to(at::kBFloat16), sizes);
  ASSERT_EQ(got.scalar_type(), at::kBFloat16);
  EXPECT_LT(testing::compare("bfloat16 vs float32", got.to(at::kFloat), want).relative, 5e-2);
}

TEST(Resampler, RowsPastTheLongestImageAreIgnored) {
  // The vision tower may hand over more rows than the longest image (a chunked batch padded to a
  // global length): they are masked like any padding.
  const Sizes sizes = {{3, 4}, {2, 5}};
  const Case k = random_case(128, 32, 8, sizes, 15);
  const Resampler resampler(k.params, "resampler", 128, 1);
  const at::Tensor longer = at::cat({k.x, 1e3 * at::randn({2, 5, 32})}, 1);
  EXPECT_TRUE(
      at::allclose(resampler.forward(longer, sizes), resampler.forward(k.x, sizes), 1e-5, 1e-6));
  EXPECT_THROW(resampler.forward(k.x, {{3, 5}, {2, 5}}), std::invalid_argument);
  EXPECT_THROW(resampler.forward(k.x, {{3, 4}}), std::invalid_argument);
}

}  // namespace
}  // namespace cpm::core::model
