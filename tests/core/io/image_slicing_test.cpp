// SPDX-License-Identifier: Apache-2.0
#include "io/image_slicing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/io/pillow_oracle.h"
#include "test_util.h"

namespace cpm::core::io {
namespace {

using ::testing::HasSubstr;

PreprocessorConfig config_with(int scale_resolution, int patch_size, int max_slice_nums) {
  PreprocessorConfig c;
  c.scale_resolution = scale_resolution;
  c.patch_size = patch_size;
  c.max_slice_nums = max_slice_nums;
  return c;
}

std::string grid_text(const std::optional<SliceGrid>& g) {
  return g ? "[" + std::to_string(g->cols) + "," + std::to_string(g->rows) + "]" : "null";
}

// slicing_reference.py's output, generated once per test process.
class SlicingReference : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new cpm::testing::TempDir();
    std::string args = "'" + dir_->path().string() + "'";
    const std::string formulas =
        std::string(CPM_TEST_SOURCE_DIR) + "/../shared/data/latex_ocr_full_val/images";
    if (std::filesystem::is_directory(formulas)) args += " --formula-dir '" + formulas + "'";
    error_ = cpm::testing::run_pillow_script("slicing_reference.py", args);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override { ASSERT_EQ(error_, ""); }
  static nlohmann::json load(const std::string& name) {
    return nlohmann::json::parse(std::ifstream(dir_->file(name)))["cases"];
  }

  static inline cpm::testing::TempDir* dir_ = nullptr;
  static inline std::string error_;
};

TEST_F(SlicingReference, GridAndSizesMatchTheSpecEverywhere) {
  // 26 named sizes, a 38 x 38 sweep around the 14 / 448 boundaries, 500 random sizes up to 8000,
  // all at the default parameters; named and 100 random ones also with max_slice_nums 1, 2, 4, 6,
  // 12 and (scale_resolution, patch_size) (224, 14), (448, 16), (980, 14).
  int checked = 0, sliced = 0, mismatches = 0;
  std::string first_mismatch;
  for (const auto& c : load("sizes.json")) {
    const int w = c["w"], h = c["h"];
    const PreprocessorConfig config = config_with(c["s"], c["p"], c["n"]);
    const absl::StatusOr<SlicePlan> plan = plan_slices(w, h, config);
    ASSERT_TRUE(plan.ok()) << plan.status();
    const std::string want_grid =
        c["grid"].is_null() ? "null" : "[" + c["grid"][0].dump() + "," + c["grid"][1].dump() + "]";
    const ImageSize want_source{c["source"][0], c["source"][1]};
    const ImageSize want_refine =
        c["refine"].is_null() ? ImageSize{} : ImageSize{c["refine"][0], c["refine"][1]};
    if (grid_text(plan->grid) != want_grid || plan->source != want_source ||
        plan->refine != want_refine) {
      if (mismatches++ == 0) {
        first_mismatch = std::to_string(w) + "x" + std::to_string(h) + " s=" + c["s"].dump() +
                         " p=" + c["p"].dump() + " n=" + c["n"].dump() + ": grid " +
                         grid_text(plan->grid) + " vs " + want_grid + ", source " +
                         std::to_string(plan->source.width) + "x" +
                         std::to_string(plan->source.height) + " vs " + c["source"].dump() +
                         ", refine " + std::to_string(plan->refine.width) + "x" +
                         std::to_string(plan->refine.height) + " vs " + c["refine"].dump();
      }
    }
    sliced += plan->grid.has_value();
    ++checked;
  }
  EXPECT_EQ(checked, 2978);
  EXPECT_EQ(mismatches, 0) << "first mismatch: " << first_mismatch;
  std::cout << "[ slicing ] " << checked - mismatches << "/" << checked
            << " size cases agree with the spec (" << sliced << " sliced)\n";
}

// Pillow's slices, compared as bytes; the float strip rounded back to 8 bits must give them again,
// at the positions the patch layout puts them.
TEST_F(SlicingReference, SlicedPixelsAndStripsMatchPillow) {
  const PreprocessorConfig config;  // 448, 14, 9, mean = std = 0.5
  int images_checked = 0, strips_checked = 0;
  for (const auto& c : load("pixels.json")) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::vector<uint8_t> input = cpm::testing::read_bytes(c["input"]);
    RgbImage image;
    if (c["kind"] == "rgb") {
      image = RgbImage{.width = c["w"], .height = c["h"], .pixels = input};
    } else {
      absl::StatusOr<RgbImage> decoded = decode_image(input);
      ASSERT_TRUE(decoded.ok()) << decoded.status();
      image = std::move(*decoded);
    }
    const absl::StatusOr<SlicedImage> sliced = slice_image(image, config);
    ASSERT_TRUE(sliced.ok()) << sliced.status();
    const absl::StatusOr<PreprocessedImage> pre = preprocess_image(image, config);
    ASSERT_TRUE(pre.ok()) << pre.status();
    const std::string want_grid =
        c["grid"].is_null() ? "null" : "[" + c["grid"][0].dump() + "," + c["grid"][1].dump() + "]";
    EXPECT_EQ(grid_text(sliced->grid), want_grid);
    EXPECT_EQ(grid_text(pre->grid), want_grid);
    ASSERT_EQ(sliced->images.size(), c["images"].size());
    ASSERT_EQ(pre->pixel_values.size(), c["images"].size());
    for (size_t i = 0; i < sliced->images.size(); ++i) {
      const RgbImage& got = sliced->images[i];
      const auto& want = c["images"][i];
      ASSERT_EQ(got.width, want["w"].get<int>()) << "image " << i;
      ASSERT_EQ(got.height, want["h"].get<int>()) << "image " << i;
      const std::vector<uint8_t> pillow = cpm::testing::read_bytes(want["rgb"]);
      ASSERT_TRUE(got.pixels == pillow) << "image " << i << " pixels differ from Pillow's";

      const int64_t h = got.height / 14, w = got.width / 14;
      EXPECT_EQ(pre->tgt_sizes[i], (std::array<int64_t, 2>{h, w}));
      const at::Tensor& strip = pre->pixel_values[i];
      ASSERT_EQ(strip.sizes(), (std::vector<int64_t>{3, 14, h * w * 14}));
      ASSERT_EQ(strip.scalar_type(), at::kFloat);
      const float* x = strip.data_ptr<float>();
      int64_t wrong = 0;
      for (int64_t ch = 0; ch < 3; ++ch) {
        for (int64_t kh = 0; kh < 14; ++kh) {
          for (int64_t r = 0; r < h; ++r) {
            for (int64_t col = 0; col < w; ++col) {
              for (int64_t kw = 0; kw < 14; ++kw) {
                const float v = x[(ch * 14 + kh) * h * w * 14 + (r * w + col) * 14 + kw];
                const long u8 = std::lround((v * 0.5f + 0.5f) * 255.0f);
                const size_t at = ((r * 14 + kh) * got.width + col * 14 + kw) * 3 + ch;
                wrong += u8 != pillow[at];
              }
            }
          }
        }
      }
      EXPECT_EQ(wrong, 0) << "image " << i << ": strip values that do not round back";
      ++images_checked;
    }
    if (!c["strip"].is_null()) {
      // The reference's float32 strip of the first image, bit for bit.
      const std::vector<uint8_t> want = cpm::testing::read_bytes(c["strip"]);
      const at::Tensor& strip = pre->pixel_values[0];
      ASSERT_EQ(want.size(), static_cast<size_t>(strip.numel()) * 4);
      EXPECT_EQ(std::memcmp(want.data(), strip.data_ptr<float>(), want.size()), 0);
      ++strips_checked;
    }
  }
  EXPECT_GE(images_checked, 25);  // 28 with the three formula crops
  EXPECT_GE(strips_checked, 2);
  std::cout << "[ slicing ] " << images_checked << " sliced images identical to Pillow's, "
            << strips_checked << " float32 strips bit-identical\n";
}

TEST(ImageSlicing, SpecExamples) {
  const PreprocessorConfig config;
  absl::StatusOr<SlicePlan> plan = plan_slices(800, 600, config);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(grid_text(plan->grid), "[2,2]");
  EXPECT_EQ(plan->source, (ImageSize{518, 392}));
  EXPECT_EQ(plan->refine, (ImageSize{1036, 784}));  // 4 slices of 518x392
  plan = plan_slices(1344, 1344, config);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(grid_text(plan->grid), "[3,3]");
  EXPECT_EQ(plan->source, (ImageSize{448, 448}));
  EXPECT_EQ(plan->refine, (ImageSize{1344, 1344}));  // 9 slices of 448x448: 10 images
  // A one-row formula: no grid, upscaled.
  plan = plan_slices(400, 40, config);
  ASSERT_TRUE(plan.ok());
  EXPECT_FALSE(plan->grid.has_value());
  EXPECT_EQ(plan->source, (ImageSize{1414, 140}));
}

TEST(ImageSlicing, EnsureDivideRoundsHalfToEven) {
  EXPECT_EQ(ensure_divide(21, 14), 28);  // 1.5 -> 2
  EXPECT_EQ(ensure_divide(35, 14), 28);  // 2.5 -> 2, not 3
  EXPECT_EQ(ensure_divide(49, 14), 56);  // 3.5 -> 4
  EXPECT_EQ(ensure_divide(7, 14), 14);   // 0.5 -> 0, then at least one patch
  EXPECT_EQ(ensure_divide(1, 14), 14);
}

TEST(ImageSlicing, FirstMinimumWinsOnTies) {
  // A square of 2 slices' area: [1,2] and [2,1] are equally far from ratio 1; [1,2] comes first.
  const std::optional<SliceGrid> grid = get_sliced_grid(500, 500, 448, 9);
  ASSERT_TRUE(grid.has_value());
  EXPECT_EQ(*grid, (SliceGrid{1, 2}));
  EXPECT_FALSE(get_sliced_grid(800, 600, 448, 1).has_value());  // max_slice_nums 1: never sliced
}

TEST(ImageSlicing, PatchStripLayout) {
  // 28 wide, 42 high: h = 3, w = 2 patches; each pixel holds its own coordinates.
  RgbImage image{.width = 28, .height = 42, .pixels = std::vector<uint8_t>(28 * 42 * 3)};
  for (int y = 0; y < 42; ++y) {
    for (int x = 0; x < 28; ++x) {
      uint8_t* p = &image.pixels[(y * 28 + x) * 3];
      p[0] = static_cast<uint8_t>(x);
      p[1] = static_cast<uint8_t>(y);
      p[2] = static_cast<uint8_t>(x + y);
    }
  }
  const absl::StatusOr<at::Tensor> strip = to_patch_strip(image, PreprocessorConfig{});
  ASSERT_TRUE(strip.ok()) << strip.status();
  ASSERT_EQ(strip->sizes(), (std::vector<int64_t>{3, 14, 3 * 2 * 14}));
  const float* s = strip->data_ptr<float>();
  auto at = [&](int c, int kh, int l, int kw) { return s[(c * 14 + kh) * 84 + l * 14 + kw]; };
  auto value = [](int u8) { return (static_cast<float>(u8) / 255.0f - 0.5f) / 0.5f; };
  // Patch l = r * w + col = 2 * 2 + 1 = 5 is rows 28..41, columns 14..27.
  EXPECT_EQ(at(0, 3, 5, 4), value(14 + 4));
  EXPECT_EQ(at(1, 3, 5, 4), value(28 + 3));
  EXPECT_EQ(at(2, 13, 0, 13), value(13 + 13));
  EXPECT_EQ(value(0), -1.0f);
  EXPECT_EQ(value(255), 1.0f);
}

TEST(ImageSlicing, WithoutSliceModeTheImageIsUsedAsIs) {
  PreprocessorConfig config;
  config.slice_mode = false;
  RgbImage image{.width = 30, .height = 20, .pixels = std::vector<uint8_t>(30 * 20 * 3, 9)};
  const absl::StatusOr<PreprocessedImage> pre = preprocess_image(image, config);
  ASSERT_TRUE(pre.ok()) << pre.status();
  EXPECT_FALSE(pre->grid.has_value());
  ASSERT_EQ(pre->pixel_values.size(), 1u);
  // Whole patches only, as the reference's unfold: 1 x 2 of them; the rest is dropped.
  EXPECT_EQ(pre->tgt_sizes[0], (std::array<int64_t, 2>{1, 2}));
  EXPECT_EQ(pre->pixel_values[0].sizes(), (std::vector<int64_t>{3, 14, 28}));
  image = RgbImage{.width = 13, .height = 20, .pixels = std::vector<uint8_t>(13 * 20 * 3)};
  EXPECT_THAT(preprocess_image(image, config).status().message(), HasSubstr("no whole 14x14"));
}

TEST(ImageSlicing, RejectsBadConfigAndImages) {
  const RgbImage image{.width = 2, .height = 2, .pixels = std::vector<uint8_t>(12)};
  PreprocessorConfig config;
  config.patch_size = 0;
  EXPECT_THAT(slice_image(image, config).status().message(), HasSubstr("1 <= patch_size"));
  config = {};
  config.scale_resolution = 100000;
  EXPECT_THAT(plan_slices(2, 2, config).status().message(), HasSubstr("scale_resolution <= 4096"));
  config = {};
  config.norm_std = {0.5, 0.0, 0.5};
  EXPECT_THAT(preprocess_image(image, config).status().message(), HasSubstr("norm_std"));
  config = {};
  config.norm_mean = {0.5};
  EXPECT_THAT(preprocess_image(image, config).status().message(), HasSubstr("3 values"));
  EXPECT_THAT(slice_image(RgbImage{}, PreprocessorConfig{}).status().message(),
              HasSubstr("not an RGB image"));
  EXPECT_EQ(plan_slices(0, 5, PreprocessorConfig{}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpm::core::io
