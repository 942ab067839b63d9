// SPDX-License-Identifier: Apache-2.0
#include "io/image_decode.h"

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "io/image_decode_backend.h"

namespace cpm::core::io {
namespace {

constexpr uint8_t kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

uint32_t u16be(const uint8_t* p) { return (uint32_t{p[0]} << 8) | p[1]; }
uint32_t u32be(const uint8_t* p) { return (u16be(p) << 16) | u16be(p + 2); }
uint32_t u16le(const uint8_t* p) { return (uint32_t{p[1]} << 8) | p[0]; }
uint32_t u24le(const uint8_t* p) { return (uint32_t{p[2]} << 16) | u16le(p); }
uint32_t u32le(const uint8_t* p) { return (u16le(p + 2) << 16) | u16le(p); }

bool starts_with(std::span<const uint8_t> bytes, const void* magic, size_t n) {
  return bytes.size() >= n && std::memcmp(bytes.data(), magic, n) == 0;
}

absl::Status invalid(const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat("image: ", message));
}

absl::Status truncated(ImageFormat format, const std::string& where) {
  return invalid(absl::StrCat("truncated or corrupt ", image_format_name(format), " (", where,
                              "); send the complete file"));
}

// Bytes [offset, offset + n) lie inside `bytes` (overflow-safe).
bool in_bounds(std::span<const uint8_t> bytes, uint64_t offset, uint64_t n) {
  return offset <= bytes.size() && n <= bytes.size() - offset;
}

absl::StatusOr<ImageHeader> probe_png(std::span<const uint8_t> b) {
  // Signature, then the IHDR chunk: length 13, "IHDR", width, height, depth, colour type, ...
  if (b.size() < 8 + 8 + 13 + 4) return truncated(ImageFormat::kPng, "no complete IHDR chunk");
  if (u32be(&b[8]) != 13 || std::memcmp(&b[12], "IHDR", 4) != 0) {
    return invalid("corrupt PNG: the first chunk is not a 13-byte IHDR");
  }
  ImageHeader h;
  h.format = ImageFormat::kPng;
  h.width = u32be(&b[16]);
  h.height = u32be(&b[20]);
  h.bits_per_sample = b[24];
  const int color_type = b[25];
  const int depth = h.bits_per_sample;
  bool depth_ok = false;
  switch (color_type) {
    case 0:  // gray
      h.channels = 1;
      depth_ok = depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
      break;
    case 2:  // RGB
      h.channels = 3;
      depth_ok = depth == 8 || depth == 16;
      break;
    case 3:  // palette
      h.channels = 1;
      depth_ok = depth == 1 || depth == 2 || depth == 4 || depth == 8;
      break;
    case 4:  // gray + alpha
      h.channels = 2;
      depth_ok = depth == 8 || depth == 16;
      break;
    case 6:  // RGBA
      h.channels = 4;
      depth_ok = depth == 8 || depth == 16;
      break;
    default:
      break;
  }
  if (!depth_ok) {
    return invalid(
        absl::StrFormat("corrupt PNG: colour type %d with bit depth %d", color_type, depth));
  }
  return h;
}

bool is_jpeg_sof(uint8_t marker) {
  // SOF0..SOF15 are C0..CF, except DHT (C4), JPG (C8) and DAC (CC).
  return marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc;
}

// Walks the marker segments from SOI to EOI: the frame header gives the size and components, and
// reaching EOI proves the file is complete (Pillow rejects a JPEG cut anywhere before its end, even
// by one byte; libjpeg alone would pad the missing data with gray).
absl::StatusOr<ImageHeader> probe_jpeg(std::span<const uint8_t> b) {
  constexpr ImageFormat kJpeg = ImageFormat::kJpeg;
  ImageHeader h;
  h.format = kJpeg;
  bool have_frame = false;
  size_t pos = 2;  // after SOI
  while (true) {
    // Like libjpeg, skip stray bytes before a marker, then its fill bytes (FF FF ...).
    while (pos < b.size() && b[pos] != 0xff) ++pos;
    while (pos < b.size() && b[pos] == 0xff) ++pos;
    if (pos >= b.size()) return truncated(kJpeg, "no EOI marker");
    const uint8_t marker = b[pos++];
    if (marker == 0xd9) break;                                           // EOI
    if (marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue;  // TEM, RSTn: no length
    if (marker == 0x00 || marker == 0xd8) {
      return invalid(
          absl::StrFormat("corrupt JPEG: unexpected marker 0x%02X at byte %d", marker, pos - 1));
    }
    if (!in_bounds(b, pos, 2)) return truncated(kJpeg, "segment length cut off");
    const uint32_t length = u16be(&b[pos]);
    if (length < 2) return invalid("corrupt JPEG: segment length below 2");
    if (!in_bounds(b, pos, length)) return truncated(kJpeg, "segment cut off");
    if (is_jpeg_sof(marker) && !have_frame) {
      if (length < 8) return invalid("corrupt JPEG: short frame header");
      h.bits_per_sample = b[pos + 2];
      h.height = u16be(&b[pos + 3]);
      h.width = u16be(&b[pos + 5]);
      h.channels = b[pos + 7];
      have_frame = true;
    }
    pos += length;
    if (marker != 0xda) continue;
    // SOS: entropy-coded data follows, up to the next marker other than stuffing (FF 00) and RSTn.
    if (!have_frame) return invalid("corrupt JPEG: scan before the frame header");
    ++h.jpeg_scans;
    while (true) {
      const void* ff = pos < b.size() ? std::memchr(&b[pos], 0xff, b.size() - pos) : nullptr;
      if (ff == nullptr) return truncated(kJpeg, "no EOI marker after the scan data");
      pos = static_cast<const uint8_t*>(ff) - b.data();
      if (pos + 1 >= b.size()) return truncated(kJpeg, "no EOI marker after the scan data");
      const uint8_t next = b[pos + 1];
      if (next == 0x00 || (next >= 0xd0 && next <= 0xd7)) {
        pos += 2;
      } else if (next == 0xff) {
        pos += 1;
      } else {
        break;  // a marker: back to the segment loop
      }
    }
  }
  if (!have_frame || h.jpeg_scans == 0) return invalid("corrupt JPEG: no frame header or no scan");
  if (h.bits_per_sample != 8) {
    return invalid(absl::StrFormat(
        "unsupported JPEG: %d-bit samples (Pillow and libjpeg decode 8-bit JPEG only)",
        h.bits_per_sample));
  }
  if (h.channels != 1 && h.channels != 3 && h.channels != 4) {
    return invalid(absl::StrFormat(
        "unsupported JPEG: %d components (gray, YCbCr/RGB and CMYK/YCCK are supported)",
        h.channels));
  }
  return h;
}

// RIFF "WEBP" with one of three first chunks: VP8 (lossy), VP8L (lossless), VP8X (extended).
absl::StatusOr<ImageHeader> probe_webp(std::span<const uint8_t> b) {
  constexpr ImageFormat kWebp = ImageFormat::kWebp;
  if (b.size() < 30) return truncated(kWebp, "header cut off");  // VP8 and VP8X need 20..29
  if (uint64_t{u32le(&b[4])} + 8 > b.size()) return truncated(kWebp, "RIFF size past the end");
  ImageHeader h;
  h.format = kWebp;
  h.channels = 3;
  const uint8_t* chunk = &b[12];
  const uint8_t* data = &b[20];
  if (std::memcmp(chunk, "VP8 ", 4) == 0) {
    // Frame tag (3 bytes, bit 0 clear on a key frame), start code 9D 01 2A, 14-bit sizes.
    if ((data[0] & 1) != 0 || data[3] != 0x9d || data[4] != 0x01 || data[5] != 0x2a) {
      return invalid("corrupt WebP: bad VP8 key frame header");
    }
    h.width = u16le(data + 6) & 0x3fff;
    h.height = u16le(data + 8) & 0x3fff;
  } else if (std::memcmp(chunk, "VP8L", 4) == 0) {
    // Signature 0x2F, then bit-packed: 14 bits width - 1, 14 bits height - 1, 1 bit alpha.
    if (data[0] != 0x2f) return invalid("corrupt WebP: bad VP8L signature");
    const uint32_t bits = u32le(data + 1);
    h.width = (bits & 0x3fff) + 1;
    h.height = ((bits >> 14) & 0x3fff) + 1;
    if ((bits >> 28) & 1) h.channels = 4;
  } else if (std::memcmp(chunk, "VP8X", 4) == 0) {
    // Flags (alpha 0x10, animation 0x02), 3 reserved bytes, 24-bit canvas width - 1, height - 1.
    if (data[0] & 0x02) {
      return invalid("unsupported WebP: animated WebP; send a still image (PNG, JPEG or WebP)");
    }
    if (data[0] & 0x10) h.channels = 4;
    h.width = u24le(data + 4) + 1;
    h.height = u24le(data + 7) + 1;
  } else {
    return invalid("corrupt WebP: first chunk is not VP8, VP8L or VP8X");
  }
  return h;
}

// BITMAPFILEHEADER (14 bytes), then a DIB header whose size Pillow accepts: 12 (OS/2 v1),
// 40 (v3), 64 (OS/2 v2), 108 (v4), 124 (v5).
absl::StatusOr<ImageHeader> probe_bmp(std::span<const uint8_t> b) {
  constexpr ImageFormat kBmp = ImageFormat::kBmp;
  if (b.size() < 18) return truncated(kBmp, "header cut off");
  const uint32_t dib = u32le(&b[14]);
  if (dib != 12 && dib != 40 && dib != 64 && dib != 108 && dib != 124) {
    return invalid(absl::StrFormat("unsupported BMP: header size %d", dib));
  }
  if (!in_bounds(b, 14, dib)) return truncated(kBmp, "header cut off");
  ImageHeader h;
  h.format = kBmp;
  uint32_t compression = 0;
  if (dib == 12) {
    h.width = u16le(&b[18]);
    h.height = u16le(&b[20]);
    h.bits_per_sample = u16le(&b[24]);
  } else {
    h.width = static_cast<int32_t>(u32le(&b[18]));
    h.height = static_cast<int32_t>(u32le(&b[22]));  // negative: rows stored top-down
    if (h.height < 0) h.height = -h.height;
    h.bits_per_sample = u16le(&b[28]);
    compression = u32le(&b[30]);
  }
  const int bpp = h.bits_per_sample;
  h.channels = bpp <= 8 ? 1 : bpp == 32 ? 4 : 3;
  if (bpp == 16) {
    // Pillow expands 5-bit fields as v * 255 / 31; OpenCV shifts them (v << 3), a different image.
    return invalid("unsupported BMP: 16-bit pixels; send 24-bit BMP or PNG");
  }
  if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 24 && bpp != 32) {
    return invalid(absl::StrFormat("unsupported BMP: %d bits per pixel", bpp));
  }
  constexpr uint32_t kRgb = 0, kRle8 = 1, kRle4 = 2, kBitfields = 3;
  const bool compression_ok = compression == kRgb || (compression == kRle8 && bpp == 8) ||
                              (compression == kRle4 && bpp == 4) ||
                              (compression == kBitfields && bpp >= 24);
  if (!compression_ok) {
    return invalid(absl::StrFormat("unsupported BMP: compression %d with %d bits per pixel",
                                   compression, bpp));
  }
  if (compression == kBitfields) {
    // The masks follow the 40-byte header or sit inside the larger ones: file offset 54 either way.
    // Only the plain byte order (B, G, R[, A] in memory) decodes identically everywhere.
    if (!in_bounds(b, 54, 12)) return truncated(kBmp, "bit field masks cut off");
    if (u32le(&b[54]) != 0xff0000 || u32le(&b[58]) != 0xff00 || u32le(&b[62]) != 0xff) {
      return invalid("unsupported BMP: bit field masks other than 8-bit B, G, R; send PNG");
    }
  }
  return h;
}

// TIFF: byte order, 42, offset of the first IFD; the IFD holds the size and sample layout.
absl::StatusOr<ImageHeader> probe_tiff(std::span<const uint8_t> b) {
  constexpr ImageFormat kTiff = ImageFormat::kTiff;
  if (b.size() < 8) return truncated(kTiff, "header cut off");
  const bool little = b[0] == 'I';
  auto u16 = [&](uint64_t at) { return little ? u16le(&b[at]) : u16be(&b[at]); };
  auto u32 = [&](uint64_t at) { return little ? u32le(&b[at]) : u32be(&b[at]); };
  if (u16(2) == 43) return invalid("unsupported TIFF: BigTIFF; send a classic TIFF or PNG");
  const uint64_t ifd = u32(4);
  if (!in_bounds(b, ifd, 2)) return truncated(kTiff, "first IFD past the end");
  const uint32_t entries = u16(ifd);
  if (!in_bounds(b, ifd + 2, uint64_t{entries} * 12)) return truncated(kTiff, "IFD cut off");
  uint32_t compression = 1;  // none
  uint32_t photometric = 1;  // absent: treat as gray, as libtiff does for one sample
  ImageHeader h;
  h.format = kTiff;
  h.channels = 1;  // the TIFF defaults of SamplesPerPixel and BitsPerSample
  h.bits_per_sample = 1;
  for (uint32_t i = 0; i < entries; ++i) {
    const uint64_t e = ifd + 2 + uint64_t{i} * 12;
    const uint32_t tag = u16(e);
    const uint32_t type = u16(e + 2);
    const uint32_t count = u32(e + 4);
    // SHORT (3) or LONG (4); the first value is inline when it fits the 4-byte field.
    uint32_t value = 0;
    if (type == 3 && count <= 2) {
      value = u16(e + 8);
    } else if (type == 4 && count == 1) {
      value = u32(e + 8);
    } else if (type == 3) {
      const uint64_t at = u32(e + 8);
      if (!in_bounds(b, at, 2)) return truncated(kTiff, "tag value past the end");
      value = u16(at);
    } else {
      continue;
    }
    switch (tag) {
      case 256:
        h.width = value;
        break;
      case 257:
        h.height = value;
        break;
      case 258:
        h.bits_per_sample = static_cast<int>(value);
        break;
      case 259:
        compression = value;
        break;
      case 262:
        photometric = value;
        break;
      case 277:
        h.channels = static_cast<int>(value);
        break;
      default:
        break;
    }
  }
  // Gray, RGB, palette, and YCbCr inside JPEG compression (decoded to RGB by libjpeg for both
  // Pillow and OpenCV). OpenCV reads other colour spaces, and RGB with alpha, through libtiff's
  // RGBA interface, which premultiplies alpha and rounds CMYK differently from Pillow.
  constexpr uint32_t kYCbCr = 6, kJpegCompression = 7;
  if (photometric > 3 && !(photometric == kYCbCr && compression == kJpegCompression)) {
    return invalid(absl::StrFormat(
        "unsupported TIFF: photometric interpretation %d (gray, RGB, palette and JPEG YCbCr are "
        "supported); send PNG",
        photometric));
  }
  if (photometric == 2 && h.channels > 3) {
    return invalid("unsupported TIFF: RGB with alpha or extra samples; send PNG");
  }
  return h;
}

}  // namespace

const char* image_format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::kPng:
      return "png";
    case ImageFormat::kJpeg:
      return "jpeg";
    case ImageFormat::kWebp:
      return "webp";
    case ImageFormat::kBmp:
      return "bmp";
    case ImageFormat::kTiff:
      return "tiff";
  }
  return "unknown";
}

absl::StatusOr<ImageHeader> probe_image(std::span<const uint8_t> bytes) {
  if (bytes.empty()) {
    return invalid("empty input; send the bytes of a PNG, JPEG, WebP, BMP or TIFF");
  }
  absl::StatusOr<ImageHeader> header;
  if (starts_with(bytes, kPngSignature, 8)) {
    header = probe_png(bytes);
  } else if (starts_with(bytes, "\xff\xd8\xff", 3)) {
    header = probe_jpeg(bytes);
  } else if (starts_with(bytes, "RIFF", 4) && bytes.size() >= 12 &&
             std::memcmp(&bytes[8], "WEBP", 4) == 0) {
    header = probe_webp(bytes);
  } else if (starts_with(bytes, "BM", 2)) {
    header = probe_bmp(bytes);
  } else if (starts_with(bytes, "II*\0", 4) || starts_with(bytes, "MM\0*", 4) ||
             starts_with(bytes, "II+\0", 4) || starts_with(bytes, "MM\0+", 4)) {
    header = probe_tiff(bytes);
  } else {
    std::string head;
    for (size_t i = 0; i < bytes.size() && i < 8; ++i) {
      absl::StrAppendFormat(&head, "%s%02X", i == 0 ? "" : " ", bytes[i]);
    }
    return invalid(
        absl::StrCat("unknown format (first bytes ", head, "); send PNG, JPEG, WebP, BMP or TIFF"));
  }
  constexpr int64_t kMaxSide = 0x7fffffff;  // PNG's bound; RgbImage holds int sizes
  if (header.ok() && (header->width <= 0 || header->height <= 0 || header->width > kMaxSide ||
                      header->height > kMaxSide)) {
    return invalid(absl::StrFormat("corrupt %s: header gives the size %dx%d",
                                   image_format_name(header->format), header->width,
                                   header->height));
  }
  return header;
}

absl::StatusOr<RgbImage> decode_image(std::span<const uint8_t> bytes, const DecodeLimits& limits) {
  if (bytes.size() > limits.max_encoded_bytes) {
    return invalid(absl::StrFormat("%d bytes exceed the %d-byte limit; send a smaller file",
                                   bytes.size(), limits.max_encoded_bytes));
  }
  CPM_ASSIGN_OR_RETURN(const ImageHeader header, probe_image(bytes));
  // Divide rather than multiply: a header may claim up to 2^32 - 1 in each dimension.
  if (header.width > limits.max_pixels / header.height) {
    return invalid(absl::StrFormat("%dx%d exceeds the limit of %d pixels; send a smaller image",
                                   header.width, header.height, limits.max_pixels));
  }
  if (header.format == ImageFormat::kJpeg && header.jpeg_scans > limits.max_jpeg_scans) {
    return invalid(absl::StrFormat("JPEG with %d scans, above the limit of %d", header.jpeg_scans,
                                   limits.max_jpeg_scans));
  }
  CPM_ASSIGN_OR_RETURN(RgbImage image, internal::decode_pixels(bytes, header));
  if (image.width != header.width || image.height != header.height ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return invalid(absl::StrFormat("corrupt %s: decoded %dx%d, header says %dx%d",
                                   image_format_name(header.format), image.width, image.height,
                                   header.width, header.height));
  }
  return image;
}

}  // namespace cpm::core::io
