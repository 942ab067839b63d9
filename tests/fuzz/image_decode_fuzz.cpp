// SPDX-License-Identifier: Apache-2.0
//
// libFuzzer: any bytes as an encoded image. The decoder must answer with a complete RGB image or an
// INVALID_ARGUMENT, never crash, hang or read outside the buffer (ASan + UBSan watch). Small limits
// keep each input cheap: a header may claim any size, but only 1 megapixel is ever decoded.
#include <cstddef>
#include <cstdint>
#include <span>

#include "io/image_decode.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cpm::core::io::DecodeLimits limits;
  limits.max_encoded_bytes = size_t{1} << 20;
  limits.max_pixels = int64_t{1} << 20;
  limits.max_jpeg_scans = 64;
  const std::span<const uint8_t> bytes(data, size);
  const auto image = cpm::core::io::decode_image(bytes, limits);
  if (image.ok()) {
    // A decoded image is whole, within the limits, and the size its header announced.
    const int64_t pixels = int64_t{image->width} * image->height;
    if (image->width < 1 || image->height < 1 || pixels > limits.max_pixels ||
        image->pixels.size() != static_cast<size_t>(pixels) * 3) {
      __builtin_trap();
    }
    const auto header = cpm::core::io::probe_image(bytes);
    if (!header.ok() || header->width != image->width || header->height != image->height) {
      __builtin_trap();
    }
  } else if (image.status().code() != absl::StatusCode::kInvalidArgument &&
             image.status().code() != absl::StatusCode::kResourceExhausted) {
    __builtin_trap();  // RESOURCE_EXHAUSTED: libpng could not allocate its structs
  }
  return 0;
}
