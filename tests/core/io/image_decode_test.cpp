// SPDX-License-Identifier: Apache-2.0
#include "io/image_decode.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/build_info.h"
#include "core/io/pillow_oracle.h"
#include "test_util.h"

namespace cpm::core::io {
namespace {

using ::testing::HasSubstr;
using Bytes = std::vector<uint8_t>;

bool opencv_build() { return build_info().image_decoder == "opencv"; }

Bytes as_bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

// "", or where `got` first differs from Pillow's `want` and in how many bytes.
std::string compare_pixels(const RgbImage& got, const Bytes& want) {
  if (got.pixels.size() != want.size()) {
    return "size " + std::to_string(got.pixels.size()) + " vs " + std::to_string(want.size());
  }
  size_t differing = 0;
  size_t first = want.size();
  for (size_t i = 0; i < want.size(); ++i) {
    if (got.pixels[i] == want[i]) continue;
    if (differing++ == 0) first = i;
  }
  if (differing == 0) return "";
  const size_t pixel = first / 3;
  return std::to_string(differing) +
         " bytes differ; first at x=" + std::to_string(pixel % got.width) +
         " y=" + std::to_string(pixel / got.width) + " channel " + std::to_string(first % 3) +
         ": " + std::to_string(got.pixels[first]) + " vs Pillow " + std::to_string(want[first]);
}

// image_decode_cases.py's files, generated once per test process (ctest runs each TEST alone).
class PillowDecodeCases : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new cpm::testing::TempDir();
    const std::string args = "'" + dir_->path().string() + "' --formula-dir '" + formula_dir() +
                             "' --formula-count 40";
    error_ = cpm::testing::run_pillow_script("image_decode_cases.py", args);
    if (error_.empty()) {
      cases_ = nlohmann::json::parse(std::ifstream(dir_->file("manifest.json")))["cases"];
    }
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override { ASSERT_EQ(error_, ""); }

  // Real LaTeX_OCR formula crops, committed with the tests.
  static std::string formula_dir() {
    return std::string(CPM_TEST_SOURCE_DIR) + "/tests/data/images/formulas";
  }

  // Whether this build must reproduce Pillow's pixels for a case (else it must reject it).
  static bool expect_pixels(const nlohmann::json& c) {
    const std::string format = c["format"];
    if (!opencv_build() && format != "png" && format != "jpeg") return false;
    if (c["expect"] == "error") return false;
    return !(opencv_build() && c["opencv"] == "error");  // "differs" still decodes
  }

  static const nlohmann::json* find_case(const std::string& name) {
    for (const auto& c : cases_) {
      if (c["name"] == name) return &c;
    }
    return nullptr;
  }

  static inline cpm::testing::TempDir* dir_ = nullptr;
  static inline std::string error_;
  static inline nlohmann::json cases_;
};

TEST_F(PillowDecodeCases, EveryModeAndFormatMatchesPillowByteForByte) {
  int matched = 0;
  int rejected = 0;
  int known_divergent = 0;
  for (const auto& c : cases_) {
    const std::string name = c["name"];
    if (name.rfind("formula_", 0) == 0) continue;
    SCOPED_TRACE(name);
    const Bytes encoded = cpm::testing::read_bytes(c["file"]);
    const absl::StatusOr<RgbImage> image = decode_image(encoded);
    if (!expect_pixels(c)) {
      EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument)
          << "decoded, not rejected";
      const std::string format = c["format"];
      if (!opencv_build() && c["expect"] == "pixels" && format != "png" && format != "jpeg") {
        EXPECT_THAT(image.status().message(), HasSubstr("unsupported in this build"));
      }
      ++rejected;
      continue;
    }
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, c["width"].get<int>());
    EXPECT_EQ(image->height, c["height"].get<int>());
    if (opencv_build() && c["opencv"] == "differs") {
      ++known_divergent;  // decodes, but its pixels are documented to differ
      continue;
    }
    const std::string diff = compare_pixels(*image, cpm::testing::read_bytes(c["rgb"]));
    EXPECT_EQ(diff, "");
    // The header probe agrees with the decoded size.
    const absl::StatusOr<ImageHeader> header = probe_image(encoded);
    ASSERT_TRUE(header.ok()) << header.status();
    EXPECT_EQ(header->width, image->width);
    EXPECT_EQ(header->height, image->height);
    if (diff.empty()) ++matched;
  }
  // The generator's case list, minus what this build rejects: a shrinking count means cases were
  // lost, not passed.
  EXPECT_GE(matched, opencv_build() ? 70 : 45);
  std::cout << "[ decode  ] " << matched << " cases byte-identical to Pillow, " << rejected
            << " rejected as expected, " << known_divergent << " known to differ ("
            << build_info().image_decoder << ")\n";
}

TEST_F(PillowDecodeCases, RealFormulaPngsMatchPillowByteForByte) {
  int matched = 0;
  for (const auto& c : cases_) {
    const std::string name = c["name"];
    if (name.rfind("formula_", 0) != 0) continue;
    SCOPED_TRACE(name);
    const absl::StatusOr<RgbImage> image = decode_image(cpm::testing::read_bytes(c["file"]));
    ASSERT_TRUE(image.ok()) << image.status();
    const std::string diff = compare_pixels(*image, cpm::testing::read_bytes(c["rgb"]));
    EXPECT_EQ(diff, "");
    if (diff.empty()) ++matched;
  }
  EXPECT_EQ(matched, 40);
}

TEST_F(PillowDecodeCases, TruncatedFilesAreRejectedAtEveryCut) {
  // A complete file per format and layout; each cut must be an error, never a partial image.
  int checked = 0;
  for (const char* name : {"png_RGB", "png_adam7_type2", "png_palette4", "jpeg_RGB_sub2",
                           "jpeg_RGB_progressive", "jpeg_L", "webp_RGB_lossy", "webp_RGBA_lossless",
                           "bmp_RGB", "bmp_4bit", "tiff_RGB", "tiff_RGB_tiff_lzw"}) {
    const nlohmann::json* c = find_case(name);
    ASSERT_NE(c, nullptr) << name;
    const Bytes full = cpm::testing::read_bytes((*c)["file"]);
    ASSERT_GT(full.size(), 64u);
    if (expect_pixels(*c)) {
      ASSERT_TRUE(decode_image(full).ok()) << name;
    }
    const size_t n = full.size();
    for (size_t cut : {size_t{1}, size_t{2}, size_t{8}, size_t{16}, size_t{30}, n / 4, n / 2,
                       3 * n / 4, n - 13, n - 2, n - 1}) {
      const Bytes part(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(cut));
      const absl::StatusOr<RgbImage> image = decode_image(part);
      EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument)
          << name << " cut to " << cut << " of " << n << " bytes decoded";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 12 * 11);
}

TEST_F(PillowDecodeCases, LimitsApplyBeforeDecoding) {
  const Bytes png = cpm::testing::read_bytes((*find_case("png_RGB"))["file"]);  // 37x23
  DecodeLimits limits;
  limits.max_pixels = 37 * 23;
  EXPECT_TRUE(decode_image(png, limits).ok());
  limits.max_pixels = 37 * 23 - 1;
  const absl::StatusOr<RgbImage> too_many = decode_image(png, limits);
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_many.status().message(), HasSubstr("37x23 exceeds the limit of 850 pixels"));
  limits = {};
  limits.max_encoded_bytes = png.size() - 1;
  EXPECT_THAT(decode_image(png, limits).status().message(), HasSubstr("byte limit"));
}

// --------------------------------------------------------------------- hand-made broken inputs

void expect_invalid(const Bytes& bytes, const std::string& message_part,
                    const DecodeLimits& limits = {}) {
  const absl::StatusOr<RgbImage> image = decode_image(bytes, limits);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(image.status().message(), HasSubstr(message_part));
}

void put_be32(Bytes& b, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<uint8_t>(v >> shift));
}

// A PNG signature and IHDR chunk (CRC not checked by the probe), nothing after.
Bytes png_header(uint32_t width, uint32_t height) {
  Bytes b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  put_be32(b, 13);
  for (char ch : std::string("IHDR")) b.push_back(static_cast<uint8_t>(ch));
  put_be32(b, width);
  put_be32(b, height);
  for (uint8_t v : {8, 2, 0, 0, 0}) b.push_back(v);
  put_be32(b, 0);  // CRC
  return b;
}

// SOI, a baseline frame header, `scans` empty scans, EOI: structurally complete, no real data.
Bytes jpeg_skeleton(uint16_t width, uint16_t height, int scans) {
  Bytes b = {0xff, 0xd8};
  auto hi = [](uint16_t v) { return static_cast<uint8_t>(v >> 8); };
  auto lo = [](uint16_t v) { return static_cast<uint8_t>(v); };
  // SOF0: length 17, 8-bit samples, the size, 3 components (id, sampling factors, table).
  const Bytes sof = {0xff, 0xc0, 0, 17, 8, hi(height), lo(height), hi(width), lo(width), 3};
  const Bytes components = {1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1};
  b.insert(b.end(), sof.begin(), sof.end());
  b.insert(b.end(), components.begin(), components.end());
  for (int i = 0; i < scans; ++i) {
    const Bytes sos = {0xff, 0xda, 0, 8, 1, 1, 0, 0, 63, 0, 0x12, 0x34};
    b.insert(b.end(), sos.begin(), sos.end());
  }
  b.push_back(0xff);
  b.push_back(0xd9);
  return b;
}

TEST(ImageDecode, RejectsEmptyInput) { expect_invalid({}, "empty input"); }

TEST(ImageDecode, RejectsGarbage) {
  std::mt19937 rng(7);
  for (int i = 0; i < 50; ++i) {
    Bytes b(1 + rng() % 300);
    for (auto& v : b) v = static_cast<uint8_t>(rng());
    if (b[0] == 0x89 || b[0] == 0xff || b[0] == 'R' || b[0] == 'B' || b[0] == 'I' || b[0] == 'M') {
      b[0] = 0;  // keep clear of the magic bytes: those cases follow
    }
    expect_invalid(b, "unknown format");
  }
  // Right magic, garbage behind it.
  for (const Bytes& magic :
       {Bytes{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'}, Bytes{0xff, 0xd8, 0xff},
        as_bytes(std::string("RIFF\x10\0\0\0WEBP", 12)), as_bytes("BM"),
        as_bytes(std::string("II*\0", 4)), as_bytes(std::string("MM\0*", 4))}) {
    for (int i = 0; i < 20; ++i) {
      Bytes b = magic;
      const size_t extra = rng() % 200;
      for (size_t k = 0; k < extra; ++k) b.push_back(static_cast<uint8_t>(rng()));
      const absl::StatusOr<RgbImage> image = decode_image(b);
      EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << b.size();
    }
  }
}

TEST(ImageDecode, RejectsUnsupportedFormats) {
  expect_invalid(as_bytes("GIF89a\x10\0\x10\0"), "unknown format (first bytes 47 49 46 38");
  expect_invalid(as_bytes(std::string("\0\0\0\x0cjP  \r\n\x87\n", 12)), "unknown format");  // JP2
  expect_invalid(as_bytes(std::string("II+\0\x08\0\0\0", 8)), "BigTIFF");
}

TEST(ImageDecode, RejectsA60MegapixelHeaderBeforeDecoding) {
  expect_invalid(png_header(10000, 6000), "10000x6000 exceeds the limit of 50000000 pixels");
  expect_invalid(jpeg_skeleton(8000, 7500, 1), "8000x7500 exceeds the limit");
  // Headers claiming 2^32 - 1 per side do not overflow the pixel count.
  expect_invalid(png_header(0x7fffffff, 0x7fffffff), "exceeds the limit");
  expect_invalid(png_header(0xffffffff, 1), "header gives the size");
  expect_invalid(png_header(0, 10), "header gives the size 0x10");
}

TEST(ImageDecode, RejectsJpegWithTooManyScans) {
  expect_invalid(jpeg_skeleton(16, 16, 501), "JPEG with 501 scans, above the limit of 500");
  DecodeLimits limits;
  limits.max_jpeg_scans = 2;
  expect_invalid(jpeg_skeleton(16, 16, 3), "3 scans", limits);
}

TEST(ImageDecode, RejectsJpegWithoutEndMarker) {
  Bytes b = jpeg_skeleton(16, 16, 1);
  b.resize(b.size() - 1);
  expect_invalid(b, "no EOI marker");
  const absl::StatusOr<ImageHeader> header = probe_image(jpeg_skeleton(320, 200, 1));
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->width, 320);
  EXPECT_EQ(header->height, 200);
  EXPECT_EQ(header->channels, 3);
  EXPECT_EQ(header->jpeg_scans, 1);
}

}  // namespace
}  // namespace cpm::core::io

namespace cpm::core::io {
namespace {

// Found by the fuzzer: a damaged WebP with "DICM" at byte 128. OpenCV's WebP decoder refuses its
// header, and cv::imdecode then gave it to the DICOM reader, which tried to allocate 3.7 GB. It
// must be a quick INVALID_ARGUMENT in every build.
TEST(ImageDecode, DamagedWebpWithADicomMarkerIsRejectedCheaply) {
  const auto bytes = cpm::testing::read_bytes(CPM_TEST_SOURCE_DIR "/tests/data/images/regress/webp-with-dicom-marker.bin");
  ASSERT_EQ(bytes.size(), 222u);
  const auto image = decode_image(bytes);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpm::core::io
