// SPDX-License-Identifier: Apache-2.0
//
// Encoded image bytes -> 8-bit RGB, matching what the reference Python pipeline sees:
// Pillow's `Image.open(f).convert("RGB")` (Debian 12's Pillow 9.4). Concretely:
//   - gray (1-, 2-, 4-, 8-bit) is replicated to 3 channels; 1/2/4-bit values are scaled to 0..255
//   - palette images are looked up (a transparency entry is ignored; an index past the palette's
//     end gives gray (i, i, i), Pillow's default palette ramp)
//   - alpha is dropped, never composited on a background
//   - 16-bit samples: RGB / RGBA / gray+alpha keep the high byte; plain 16-bit gray is clipped to
//     255 (Pillow opens it as 32-bit "I" and clips on conversion)
//   - CMYK / YCCK JPEG is taken as Adobe-inverted CMYK and converted with Pillow's integer formula
//     (libpng + libjpeg build only: OpenCV rounds CMYK differently, so that build rejects it)
//   - EXIF orientation is ignored, as Pillow's open() does; no ICC or gamma transform is applied
// Variants whose pixels OpenCV would not reproduce are rejected rather than decoded differently:
// 16-bit and reordered bit-field BMP, CMYK / YCbCr (other than JPEG-compressed) and RGB + alpha
// TIFF. One known divergence remains in the OpenCV build: a PNG palette index past the end of its
// PLTE (an invalid file) decodes as black there, as gray (i, i, i) in Pillow.
//
// Backends: OpenCV's codecs (PNG, JPEG, WebP, BMP, TIFF) when built with CPM_WITH_OPENCV, else
// libpng + libjpeg (PNG and JPEG only; other formats are rejected as unsupported in this build).
// The format is sniffed from magic bytes and the header is parsed here first, so size limits apply
// before any pixel is decoded. Every failure (empty, truncated, corrupt, oversized, unsupported)
// is INVALID_ARGUMENT with a one-line message; a partial image is never returned. Stricter than
// Pillow in two places: a PNG cut after its last pixel data (missing IEND) and a JPEG with more
// scans than DecodeLimits::max_jpeg_scans are rejected.
//
// Thread-safe: no shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace cpm::core::io {

// An 8-bit RGB image: rows top to bottom, pixels interleaved.
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // [height, width, 3], pixels[(y * width + x) * 3 + c]
};

enum class ImageFormat { kPng, kJpeg, kWebp, kBmp, kTiff };

// "png", "jpeg", "webp", "bmp", "tiff".
const char* image_format_name(ImageFormat format);

// What the header says, read without decoding pixels.
struct ImageHeader {
  ImageFormat format = ImageFormat::kPng;
  int64_t width = 0;
  int64_t height = 0;
  // Colour channels as stored: 1 (gray / palette), 2 (gray + alpha), 3, 4 (RGBA, or CMYK for JPEG).
  int channels = 0;
  int bits_per_sample = 8;
  int jpeg_scans = 0;  // JPEG only: SOS markers (1 for baseline, about 10 for progressive)
};

// Limits on untrusted input, checked before decoding.
struct DecodeLimits {
  // Largest encoded input. Default: 32 MiB.
  size_t max_encoded_bytes = size_t{32} << 20;
  // Largest width * height. Default: 50 megapixels (150 MB decoded; Pillow itself refuses images
  // above 179 MP). Formula crops are far below; this only stops decompression bombs.
  int64_t max_pixels = 50'000'000;
  // Most scans in a JPEG. Every progressive scan makes libjpeg walk all coefficient blocks again,
  // so a small file with thousands of tiny scans is a CPU bomb. Default: 500 (libjpeg-turbo's own
  // fuzzers use the same bound; real progressive JPEGs have about 10).
  int max_jpeg_scans = 500;
};

// Sniffs the format and parses the header: dimensions, channels, bit depth. For JPEG it also walks
// the marker structure to the EOI marker, so a truncated JPEG fails here. INVALID_ARGUMENT for an
// unknown format, a malformed or truncated header, a zero dimension, or a variant rejected above
// (and animated WebP, BigTIFF, BMP headers Pillow does not read). Does not apply DecodeLimits.
absl::StatusOr<ImageHeader> probe_image(std::span<const uint8_t> bytes);

// Decodes to RGB as described at the top of this file.
absl::StatusOr<RgbImage> decode_image(std::span<const uint8_t> bytes,
                                      const DecodeLimits& limits = {});

}  // namespace cpm::core::io
