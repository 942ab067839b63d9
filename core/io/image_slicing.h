// SPDX-License-Identifier: Apache-2.0
//
// MiniCPM-V image slicing and normalisation (MiniCPMVImageProcessor; spec minicpm-o-2_6.md section
// 5): one RGB image becomes a list [source, slice(0,0), slice(0,1), ..., slice(rows-1,cols-1)],
// each resized with Pillow's bicubic, normalised to float32 and laid out as a patch strip for the
// vision encoder.
//
// The size arithmetic mirrors the reference Python in double precision: Python's round() is
// round-half-even (std::nearbyint), int() truncates toward zero, and the first grid with the
// smallest aspect error wins. Image sizes are assumed to keep width * height below 2^53 (any
// decodable image does), where Python's exact integer division and double division agree.
//
// Thread-safe: pure functions.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "io/image_decode.h"
#include "io/model_config.h"

namespace cpm::core::io {

struct ImageSize {
  int width = 0;
  int height = 0;
  bool operator==(const ImageSize&) const = default;
};

// The slice grid, [cols, rows] in the reference's order ([m, n / m]).
struct SliceGrid {
  int cols = 0;
  int rows = 0;
  bool operator==(const SliceGrid&) const = default;
};

// max(round_half_even(length / patch_size) * patch_size, patch_size).
int ensure_divide(double length, int patch_size);

// The size whose area is about scale_resolution^2 at the same aspect ratio, each side a multiple of
// patch_size. Without allow_upscale, an image of at most scale_resolution^2 pixels keeps its size
// (rounded to patches). Sizes are doubles because get_refine_size passes fractional ones.
ImageSize find_best_resize(double width, double height, int scale_resolution, int patch_size,
                           bool allow_upscale);

// The grid to cut an image into, or nullopt when it needs no slicing (at most one slice's worth
// of pixels, or max_slice_nums 1).
std::optional<SliceGrid> get_sliced_grid(int width, int height, int scale_resolution,
                                         int max_slice_nums);

// The size the image is resized to before it is cut along `grid`: a whole number of slices of a
// find_best_resize'd size each.
ImageSize get_refine_size(int width, int height, SliceGrid grid, int scale_resolution,
                          int patch_size);

// The sizes slice_image produces, without touching pixels.
struct SlicePlan {
  std::optional<SliceGrid> grid;  // nullopt: the source image only
  ImageSize source;               // the first image
  // With a grid: the size the image is resized to before it is cut into grid.rows x grid.cols
  // slices of (refine.width / grid.cols) x (refine.height / grid.rows).
  ImageSize refine;
};

// The plan for a width x height image under `config` (scale_resolution, patch_size,
// max_slice_nums, slice_mode); without slice_mode the source keeps its size. INVALID_ARGUMENT for
// a bad config or size.
absl::StatusOr<SlicePlan> plan_slices(int width, int height, const PreprocessorConfig& config);

struct SlicedImage {
  std::optional<SliceGrid> grid;  // nullopt: the source image only
  std::vector<RgbImage> images;   // [source, slices row-major]
};

// The reference's get_sliced_images, following plan_slices: with slice_mode, the source resized by
// find_best_resize (upscaled too when there is no grid) and, with a grid, the refine-size image cut
// into rows x cols slices; without slice_mode, the image unchanged. INVALID_ARGUMENT for a bad
// config or an empty image.
absl::StatusOr<SlicedImage> slice_image(const RgbImage& image, const PreprocessorConfig& config);

// One image as the vision encoder's input strip, float32 [3, p, h * w * p] with p = patch_size,
// h = height / p, w = width / p (whole patches only; the slicer produces exact multiples):
//   x = (u8 / 255 - mean[c]) / std[c], float32 throughout as the reference's numpy code
//   strip[c, kh, (r * w + col) * p + kw] = x[c, r * p + kh, col * p + kw]
// INVALID_ARGUMENT when the image holds no whole patch.
absl::StatusOr<at::Tensor> to_patch_strip(const RgbImage& image, const PreprocessorConfig& config);

struct PreprocessedImage {
  std::optional<SliceGrid> grid;
  std::vector<ImageSize> sizes;                   // per image: its pixel size
  std::vector<at::Tensor> pixel_values;           // per image: float32 [3, p, h * w * p]
  std::vector<std::array<int64_t, 2>> tgt_sizes;  // per image: (h, w) in patches
};

// slice_image, then to_patch_strip for each image.
absl::StatusOr<PreprocessedImage> preprocess_image(const RgbImage& image,
                                                   const PreprocessorConfig& config);

}  // namespace cpm::core::io
