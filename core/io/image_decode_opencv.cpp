// SPDX-License-Identifier: Apache-2.0
//
// The OpenCV backend: cv::imdecode with IMREAD_UNCHANGED (no colour conversion, no EXIF rotation,
// 16-bit kept), then Pillow's convert("RGB") rules applied here.
#include <climits>
#include <cstring>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "io/image_decode_backend.h"

namespace cpm::core::io::internal {
namespace {

absl::Status invalid(const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat("image: ", message));
}

// OpenCV's exception text spans lines ("OpenCV(4.6.0) file:line: error: (-215) ..."): keep one.
std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

}  // namespace

absl::StatusOr<RgbImage> decode_pixels(std::span<const uint8_t> bytes, const ImageHeader& header) {
  const char* name = image_format_name(header.format);
  if (header.format == ImageFormat::kJpeg && header.channels == 4) {
    // OpenCV converts CMYK as (255 - c) * k >> 8; Pillow divides by 255 with rounding: the pixels
    // would differ.
    return invalid(
        "unsupported JPEG: CMYK in this build (OpenCV's CMYK conversion differs from "
        "Pillow's); send an RGB JPEG or PNG");
  }
  if (bytes.size() > static_cast<size_t>(INT_MAX)) return invalid("input above 2 GiB");
  // cv::imdecode picks its decoder by signature: when the decoder of the sniffed format rejects a
  // damaged header, OpenCV tries the others, and its DICOM reader (GDCM) claims any buffer with
  // "DICM" at offset 128 and then allocates whatever the garbage says (3.7 GB for a 222-byte input
  // found by the fuzzer). Every other OpenCV decoder keys on offset 0, which the sniffing already
  // fixed, so refusing that one marker keeps imdecode on the sniffed format's decoder.
  if (bytes.size() >= 132 && std::memcmp(bytes.data() + 128, "DICM", 4) == 0) {
    return invalid(absl::StrCat("corrupt ", name, ": it carries a DICOM marker at byte 128"));
  }
  cv::Mat mat;
  try {
    const cv::Mat buffer(1, static_cast<int>(bytes.size()), CV_8UC1,
                         const_cast<uint8_t*>(bytes.data()));
    mat = cv::imdecode(buffer, cv::IMREAD_UNCHANGED | cv::IMREAD_IGNORE_ORIENTATION);
  } catch (const cv::Exception& e) {
    return invalid(absl::StrCat("corrupt ", name, ": ", first_line(e.what())));
  }
  if (mat.empty()) {
    return invalid(absl::StrCat("corrupt or truncated ", name, ": OpenCV could not decode it"));
  }
  const int depth = mat.depth();
  const int channels = mat.channels();
  if (mat.dims != 2 || (depth != CV_8U && depth != CV_16U) ||
      (channels != 1 && channels != 3 && channels != 4)) {
    return invalid(absl::StrFormat("unsupported %s: %d channels of OpenCV depth %d; send 8-bit RGB",
                                   name, channels, depth));
  }
  RgbImage image{.width = mat.cols,
                 .height = mat.rows,
                 .pixels = std::vector<uint8_t>(static_cast<size_t>(mat.cols) * mat.rows * 3)};
  for (int y = 0; y < mat.rows; ++y) {
    uint8_t* out = image.pixels.data() + static_cast<size_t>(y) * mat.cols * 3;
    if (depth == CV_8U) {
      const uint8_t* in = mat.ptr<uint8_t>(y);
      for (int x = 0; x < mat.cols; ++x, in += channels, out += 3) {
        if (channels == 1) {
          out[0] = out[1] = out[2] = in[0];
        } else {  // BGR or BGRA: alpha dropped
          out[0] = in[2];
          out[1] = in[1];
          out[2] = in[0];
        }
      }
    } else {
      // 16-bit gray becomes Pillow's 32-bit "I", which convert("RGB") clips to 255; 16-bit colour
      // (RGB, RGBA, and gray + alpha, which OpenCV expands to four channels) keeps the high byte.
      const uint16_t* in = mat.ptr<uint16_t>(y);
      for (int x = 0; x < mat.cols; ++x, in += channels, out += 3) {
        if (channels == 1) {
          out[0] = out[1] = out[2] = static_cast<uint8_t>(in[0] > 255 ? 255 : in[0]);
        } else {
          out[0] = static_cast<uint8_t>(in[2] >> 8);
          out[1] = static_cast<uint8_t>(in[1] >> 8);
          out[2] = static_cast<uint8_t>(in[0] >> 8);
        }
      }
    }
  }
  return image;
}

}  // namespace cpm::core::io::internal
