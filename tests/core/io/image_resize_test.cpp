// SPDX-License-Identifier: Apache-2.0
#include "io/image_resize.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "core/io/pillow_oracle.h"
#include "test_util.h"

namespace cpm::core::io {
namespace {

using ::testing::HasSubstr;

RgbImage make_image(int width, int height, std::vector<uint8_t> pixels) {
  return RgbImage{.width = width, .height = height, .pixels = std::move(pixels)};
}

// 300 seeded random shapes (24 named edge cases first: 1-pixel sides, single-pass resizes, the
// MiniCPM-V sizes), resized by Pillow 9.4 and by resize_bicubic: every byte must agree.
TEST(ImageResize, MatchesPillowBicubicOnRandomImages) {
  cpm::testing::TempDir dir;
  constexpr int kCases = 300;
  ASSERT_EQ(cpm::testing::run_pillow_script(
                "resize_reference.py",
                "'" + dir.path().string() + "' --seed 20241128 --count " + std::to_string(kCases)),
            "");
  std::ifstream cases(dir.file("cases.txt"));
  int checked = 0, mismatched_cases = 0, downscaled = 0, upscaled = 0;
  std::string first_mismatch;
  int index, in_w, in_h, out_w, out_h;
  while (cases >> index >> in_w >> in_h >> out_w >> out_h) {
    const std::string stem = dir.file(std::to_string(index));
    const RgbImage input = make_image(in_w, in_h, cpm::testing::read_bytes(stem + ".in"));
    const std::vector<uint8_t> want = cpm::testing::read_bytes(stem + ".out");
    ASSERT_EQ(want.size(), static_cast<size_t>(out_w) * out_h * 3) << stem;
    const absl::StatusOr<RgbImage> got = resize_bicubic(input, out_w, out_h);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->width, out_w);
    ASSERT_EQ(got->height, out_h);
    size_t differing = 0, first = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      if (got->pixels[i] != want[i] && differing++ == 0) first = i;
    }
    if (differing > 0 && mismatched_cases++ == 0) {
      std::ostringstream m;
      m << "case " << index << " " << in_w << "x" << in_h << " -> " << out_w << "x" << out_h << ": "
        << differing << " bytes differ, first at x=" << (first / 3) % out_w
        << " y=" << (first / 3) / out_w << " channel " << first % 3 << ": "
        << int{got->pixels[first]} << " vs Pillow " << int{want[first]};
      first_mismatch = m.str();
    }
    downscaled += out_w < in_w || out_h < in_h;
    upscaled += out_w > in_w || out_h > in_h;
    ++checked;
  }
  EXPECT_EQ(checked, kCases);
  EXPECT_EQ(mismatched_cases, 0) << "first mismatch: " << first_mismatch;
  std::cout << "[ resize  ] " << checked - mismatched_cases << "/" << checked
            << " resizes byte-identical to Pillow (" << downscaled << " shrink a side, " << upscaled
            << " grow a side)\n";
}

TEST(ImageResize, SameSizeIsACopy) {
  const RgbImage input = make_image(2, 1, {1, 2, 3, 4, 5, 6});
  const absl::StatusOr<RgbImage> out = resize_bicubic(input, 2, 1);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->pixels, input.pixels);
}

TEST(ImageResize, ConstantImageStaysConstant) {
  // The normalised taps sum to one, so a flat colour survives any resize exactly.
  const RgbImage input = make_image(7, 5, std::vector<uint8_t>(7 * 5 * 3, 200));
  for (auto [w, h] : {std::pair{1, 1}, std::pair{3, 11}, std::pair{50, 2}}) {
    const absl::StatusOr<RgbImage> out = resize_bicubic(input, w, h);
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(out->pixels, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3, 200));
  }
}

TEST(ImageResize, RejectsBadSizes) {
  const RgbImage input = make_image(2, 1, {1, 2, 3, 4, 5, 6});
  EXPECT_THAT(resize_bicubic(input, 0, 3).status().message(), HasSubstr("at least 1"));
  EXPECT_THAT(resize_bicubic(input, 3, -1).status().message(), HasSubstr("at least 1"));
  EXPECT_THAT(resize_bicubic(make_image(2, 2, {1, 2, 3}), 3, 3).status().message(),
              HasSubstr("not an RGB image"));
}

}  // namespace
}  // namespace cpm::core::io
