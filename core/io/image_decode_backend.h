// SPDX-License-Identifier: Apache-2.0
//
// The pixel decoder behind decode_image(). Exactly one backend is compiled into cpm_core:
// image_decode_opencv.cpp (CPM_WITH_OPENCV) or image_decode_libpng_libjpeg.cpp. Choosing the source
// file instead of #ifdefs keeps every other object identical between the two builds.
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "io/image_decode.h"

namespace cpm::core::io::internal {

// Decodes `bytes`, whose header `header` (from probe_image) has already passed the DecodeLimits,
// into RGB exactly as Pillow's convert("RGB") would (see image_decode.h). INVALID_ARGUMENT for
// corrupt data and for formats this build lacks.
absl::StatusOr<RgbImage> decode_pixels(std::span<const uint8_t> bytes, const ImageHeader& header);

}  // namespace cpm::core::io::internal
