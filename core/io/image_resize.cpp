// SPDX-License-Identifier: Apache-2.0
#include "io/image_resize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/strings/str_format.h"

namespace cpm::core::io {
namespace {

// Fixed-point fraction bits: 8 bits of pixel, 2 bits of headroom for coefficient sums above 1 or
// below 0, in a 32-bit int.
constexpr int kPrecisionBits = 32 - 8 - 2;

// Keys' cubic convolution kernel, a = -0.5, support 2.
double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
constexpr double kBicubicSupport = 2.0;

// The input window and fixed-point weights of one output pixel along one axis.
struct Taps {
  int first = 0;                 // first input index
  std::vector<int32_t> weights;  // one per input index from `first`
};

// precompute_coeffs + normalize_coeffs_8bpc. Pillow keeps a dense out_size x ksize table; the
// taps are stored per output pixel instead, so a huge downscale (ksize in the millions) costs
// memory in proportion to the input, not to out_size * ksize. The values are the same.
std::vector<Taps> precompute_taps(int in_size, int out_size) {
  // Pillow receives the box edges (0, in_size) as float: sizes above 2^24 round there, so here.
  const double scale = static_cast<double>(static_cast<float>(in_size)) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = kBicubicSupport * filter_scale;
  const double inv_filter_scale = 1.0 / filter_scale;
  std::vector<Taps> taps(out_size);
  std::vector<double> k;
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    // Pillow rounds the window edges with (int)(v + 0.5), truncating toward zero.
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    k.assign(xmax, 0.0);
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = bicubic_filter((x + xmin - center + 0.5) * inv_filter_scale);
      k[x] = w;
      ww += w;
    }
    Taps& t = taps[xx];
    t.first = xmin;
    t.weights.resize(xmax);
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? k[x] / ww : k[x];
      // Round half away from zero into the fixed-point format.
      t.weights[x] = v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                           : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
    }
  }
  return taps;
}

// Pillow's clip8: drop the fraction bits (arithmetic shift), clamp to 0..255.
uint8_t clip8(int32_t v) {
  const int32_t shifted = v >> kPrecisionBits;
  return static_cast<uint8_t>(shifted < 0 ? 0 : shifted > 255 ? 255 : shifted);
}

// Sums start at one half in fixed point, so the truncating shift in clip8 rounds to nearest.
constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);

// Horizontal pass over input rows [row0, row0 + rows): out is [rows, out_width, 3].
void resample_horizontal(const RgbImage& in, int row0, int rows, const std::vector<Taps>& taps,
                         std::vector<uint8_t>& out) {
  const int out_width = static_cast<int>(taps.size());
  out.resize(static_cast<size_t>(rows) * out_width * 3);
  for (int yy = 0; yy < rows; ++yy) {
    const uint8_t* src = in.pixels.data() + static_cast<size_t>(row0 + yy) * in.width * 3;
    uint8_t* dst = out.data() + static_cast<size_t>(yy) * out_width * 3;
    for (int xx = 0; xx < out_width; ++xx, dst += 3) {
      const Taps& t = taps[xx];
      const uint8_t* s = src + static_cast<size_t>(t.first) * 3;
      int32_t ss0 = kHalf, ss1 = kHalf, ss2 = kHalf;
      for (size_t x = 0; x < t.weights.size(); ++x, s += 3) {
        const int32_t w = t.weights[x];
        ss0 += s[0] * w;
        ss1 += s[1] * w;
        ss2 += s[2] * w;
      }
      dst[0] = clip8(ss0);
      dst[1] = clip8(ss1);
      dst[2] = clip8(ss2);
    }
  }
}

// Vertical pass: `in` is [.., width, 3] whose row 0 is input row `row0` of the taps.
void resample_vertical(const uint8_t* in, int width, int row0, const std::vector<Taps>& taps,
                       uint8_t* out) {
  const size_t stride = static_cast<size_t>(width) * 3;
  for (size_t yy = 0; yy < taps.size(); ++yy) {
    const Taps& t = taps[yy];
    const uint8_t* rows = in + static_cast<size_t>(t.first - row0) * stride;
    uint8_t* dst = out + yy * stride;
    for (size_t i = 0; i < stride; ++i) {
      int32_t ss = kHalf;
      const uint8_t* s = rows + i;
      for (size_t y = 0; y < t.weights.size(); ++y, s += stride) ss += *s * t.weights[y];
      dst[i] = clip8(ss);
    }
  }
}

}  // namespace

absl::StatusOr<RgbImage> resize_bicubic(const RgbImage& image, int width, int height) {
  if (width < 1 || height < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("resize: target size %dx%d; both sides must be at least 1", width, height));
  }
  if (image.width < 1 || image.height < 1 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return absl::InvalidArgumentError(
        absl::StrFormat("resize: input %dx%d with %d bytes is not an RGB image", image.width,
                        image.height, image.pixels.size()));
  }
  if (width == image.width && height == image.height) return image;

  const std::vector<Taps> taps_x = precompute_taps(image.width, width);
  const std::vector<Taps> taps_y = precompute_taps(image.height, height);
  RgbImage out;
  out.width = width;
  out.height = height;
  if (height == image.height) {
    resample_horizontal(image, 0, image.height, taps_x, out.pixels);
    return out;
  }
  // The horizontal pass covers only the input rows that some output row reads.
  const uint8_t* rows = image.pixels.data();
  int row_first = 0;
  std::vector<uint8_t> temp;
  if (width != image.width) {
    row_first = taps_y.front().first;
    const int row_last = taps_y.back().first + static_cast<int>(taps_y.back().weights.size());
    resample_horizontal(image, row_first, row_last - row_first, taps_x, temp);
    rows = temp.data();
  }
  out.pixels.resize(static_cast<size_t>(width) * height * 3);
  resample_vertical(rows, width, row_first, taps_y, out.pixels.data());
  return out;
}

}  // namespace cpm::core::io
