// SPDX-License-Identifier: Apache-2.0
#include "io/image_slicing.h"

#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "io/image_resize.h"

namespace cpm::core::io {
namespace {

// Upper bounds keep a malformed config from asking for gigapixel resizes (the model uses 448,
// 14 and 9).
constexpr int kMaxScaleResolution = 4096;
constexpr int kMaxSliceNums = 1024;

absl::Status check_config(const PreprocessorConfig& config) {
  if (config.patch_size < 1 || config.scale_resolution < config.patch_size ||
      config.scale_resolution > kMaxScaleResolution || config.max_slice_nums < 1 ||
      config.max_slice_nums > kMaxSliceNums) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "preprocessor config: patch_size %d, scale_resolution %d, max_slice_nums %d; need "
        "1 <= patch_size <= scale_resolution <= %d and 1 <= max_slice_nums <= %d",
        config.patch_size, config.scale_resolution, config.max_slice_nums, kMaxScaleResolution,
        kMaxSliceNums));
  }
  if (config.norm_mean.size() != 3 || config.norm_std.size() != 3) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "preprocessor config: norm_mean and norm_std need 3 values (RGB), got %d and %d",
        config.norm_mean.size(), config.norm_std.size()));
  }
  for (double s : config.norm_std) {
    if (s == 0.0) return absl::InvalidArgumentError("preprocessor config: norm_std holds a 0");
  }
  return absl::OkStatus();
}

absl::Status check_image(const RgbImage& image) {
  if (image.width < 1 || image.height < 1 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return absl::InvalidArgumentError(
        absl::StrFormat("preprocess: input %dx%d with %d bytes is not an RGB image", image.width,
                        image.height, image.pixels.size()));
  }
  return absl::OkStatus();
}

// Pillow's Image.crop for a box inside the image.
RgbImage crop(const RgbImage& image, int x0, int y0, int width, int height) {
  RgbImage out{.width = width,
               .height = height,
               .pixels = std::vector<uint8_t>(static_cast<size_t>(width) * height * 3)};
  for (int y = 0; y < height; ++y) {
    std::memcpy(out.pixels.data() + static_cast<size_t>(y) * width * 3,
                image.pixels.data() + (static_cast<size_t>(y0 + y) * image.width + x0) * 3,
                static_cast<size_t>(width) * 3);
  }
  return out;
}

}  // namespace

int ensure_divide(double length, int patch_size) {
  const double rounded = std::nearbyint(length / patch_size) * patch_size;
  return static_cast<int>(std::max(rounded, static_cast<double>(patch_size)));
}

ImageSize find_best_resize(double width, double height, int scale_resolution, int patch_size,
                           bool allow_upscale) {
  const double area = static_cast<double>(scale_resolution) * scale_resolution;
  if (width * height > area || allow_upscale) {
    const double r = width / height;
    height = static_cast<int>(scale_resolution / std::sqrt(r));
    width = static_cast<int>(height * r);
  }
  return {ensure_divide(width, patch_size), ensure_divide(height, patch_size)};
}

std::optional<SliceGrid> get_sliced_grid(int width, int height, int scale_resolution,
                                         int max_slice_nums) {
  const double log_ratio = std::log(static_cast<double>(width) / height);
  const double ratio = static_cast<double>(int64_t{width} * height) /
                       static_cast<double>(int64_t{scale_resolution} * scale_resolution);
  const int multiple =
      static_cast<int>(std::min(std::ceil(ratio), static_cast<double>(max_slice_nums)));
  if (multiple <= 1) return std::nullopt;
  SliceGrid best{1, 1};
  double min_error = std::numeric_limits<double>::infinity();
  for (int n : {multiple - 1, multiple, multiple + 1}) {
    if (n == 1 || n > max_slice_nums) continue;
    for (int m = 1; m <= n; ++m) {
      if (n % m != 0) continue;
      const double error = std::abs(log_ratio - std::log(static_cast<double>(m) / (n / m)));
      if (error < min_error) {
        best = {m, n / m};
        min_error = error;
      }
    }
  }
  return best;
}

ImageSize get_refine_size(int width, int height, SliceGrid grid, int scale_resolution,
                          int patch_size) {
  const int refine_width = ensure_divide(width, grid.cols);
  const int refine_height = ensure_divide(height, grid.rows);
  const ImageSize cell = find_best_resize(static_cast<double>(refine_width) / grid.cols,
                                          static_cast<double>(refine_height) / grid.rows,
                                          scale_resolution, patch_size, /*allow_upscale=*/true);
  return {cell.width * grid.cols, cell.height * grid.rows};
}

absl::StatusOr<SlicePlan> plan_slices(int width, int height, const PreprocessorConfig& config) {
  CPM_RETURN_IF_ERROR(check_config(config));
  if (width < 1 || height < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "preprocess: image size %dx%d; both sides must be at least 1", width, height));
  }
  SlicePlan plan;
  if (!config.slice_mode) {
    plan.source = {width, height};
    return plan;
  }
  const int s = config.scale_resolution;
  const int p = config.patch_size;
  plan.grid = get_sliced_grid(width, height, s, config.max_slice_nums);
  // Without a grid the source is also upscaled, to about s^2 pixels.
  plan.source = find_best_resize(width, height, s, p, /*allow_upscale=*/!plan.grid.has_value());
  if (plan.grid) plan.refine = get_refine_size(width, height, *plan.grid, s, p);
  return plan;
}

absl::StatusOr<SlicedImage> slice_image(const RgbImage& image, const PreprocessorConfig& config) {
  CPM_RETURN_IF_ERROR(check_image(image));
  CPM_ASSIGN_OR_RETURN(const SlicePlan plan, plan_slices(image.width, image.height, config));
  SlicedImage out;
  out.grid = plan.grid;
  if (!config.slice_mode) {
    out.images.push_back(image);
    return out;
  }
  CPM_ASSIGN_OR_RETURN(RgbImage source,
                       resize_bicubic(image, plan.source.width, plan.source.height));
  out.images.push_back(std::move(source));
  if (!plan.grid) return out;

  CPM_ASSIGN_OR_RETURN(const RgbImage refine,
                       resize_bicubic(image, plan.refine.width, plan.refine.height));
  // The refine size is a whole number of cells, so the reference's range() steps give exactly
  // rows x cols crops.
  const int cell_width = refine.width / plan.grid->cols;
  const int cell_height = refine.height / plan.grid->rows;
  for (int r = 0; r < plan.grid->rows; ++r) {
    for (int c = 0; c < plan.grid->cols; ++c) {
      out.images.push_back(crop(refine, c * cell_width, r * cell_height, cell_width, cell_height));
    }
  }
  return out;
}

absl::StatusOr<at::Tensor> to_patch_strip(const RgbImage& image, const PreprocessorConfig& config) {
  CPM_RETURN_IF_ERROR(check_config(config));
  CPM_RETURN_IF_ERROR(check_image(image));
  const int p = config.patch_size;
  const int64_t h = image.height / p;
  const int64_t w = image.width / p;
  if (h == 0 || w == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "preprocess: a %dx%d image holds no whole %dx%d patch", image.width, image.height, p, p));
  }
  // Every u8 value maps to one float per channel; a table keeps the float32 arithmetic exactly
  // the reference's: (x / 255 - mean) / std.
  float lut[3][256];
  for (int c = 0; c < 3; ++c) {
    const float mean = static_cast<float>(config.norm_mean[c]);
    const float stdev = static_cast<float>(config.norm_std[c]);
    for (int v = 0; v < 256; ++v) lut[c][v] = (static_cast<float>(v) / 255.0f - mean) / stdev;
  }
  const int64_t length = h * w * p;  // strip width
  at::Tensor strip = at::empty({3, p, length}, at::kFloat);
  float* out = strip.data_ptr<float>();
  const size_t row_stride = static_cast<size_t>(image.width) * 3;
  for (int c = 0; c < 3; ++c) {
    for (int kh = 0; kh < p; ++kh) {
      float* dst = out + (static_cast<int64_t>(c) * p + kh) * length;
      for (int64_t r = 0; r < h; ++r) {
        const uint8_t* src = image.pixels.data() + static_cast<size_t>(r * p + kh) * row_stride + c;
        // Patches (r, 0..w-1) are consecutive in the strip, and so are their pixels of row kh.
        for (int64_t x = 0; x < w * p; ++x) dst[(r * w) * p + x] = lut[c][src[x * 3]];
      }
    }
  }
  return strip;
}

absl::StatusOr<PreprocessedImage> preprocess_image(const RgbImage& image,
                                                   const PreprocessorConfig& config) {
  CPM_ASSIGN_OR_RETURN(SlicedImage sliced, slice_image(image, config));
  PreprocessedImage out;
  out.grid = sliced.grid;
  for (const RgbImage& im : sliced.images) {
    CPM_ASSIGN_OR_RETURN(at::Tensor strip, to_patch_strip(im, config));
    out.sizes.push_back({im.width, im.height});
    out.pixel_values.push_back(std::move(strip));
    out.tgt_sizes.push_back({im.height / config.patch_size, im.width / config.patch_size});
  }
  return out;
}

}  // namespace cpm::core::io
