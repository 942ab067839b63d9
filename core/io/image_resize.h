// SPDX-License-Identifier: Apache-2.0
//
// Pillow's `Image.resize(size, Image.BICUBIC)` on 8-bit RGB, ported bit for bit from Pillow 9.4's
// libImaging/Resample.c (ImagingResample): a horizontal pass over the rows the vertical pass will
// need, then a vertical pass; Keys' cubic kernel with a = -0.5 whose support widens by the
// downscale factor (antialiasing); per-output coefficients normalised to sum 1, then stored as
// fixed point with 22 fractional bits; each pass rounds and clips to 8 bits, so the intermediate
// image is 8-bit too. resize() without `reducing_gap` (the default, and what MiniCPM-V calls) does
// no box pre-reduction, so neither does this.
//
// Thread-safe: pure function.
#pragma once

#include "absl/status/statusor.h"
#include "io/image_decode.h"

namespace cpm::core::io {

// Resizes `image` to width x height. Same size returns a copy, as Pillow does. INVALID_ARGUMENT
// when a size is below 1 or the input is empty or inconsistent.
absl::StatusOr<RgbImage> resize_bicubic(const RgbImage& image, int width, int height);

}  // namespace cpm::core::io
