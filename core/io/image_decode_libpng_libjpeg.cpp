// SPDX-License-Identifier: Apache-2.0
//
// The backend without OpenCV: PNG through libpng, JPEG through libjpeg(-turbo), each read with no
// colour transform so Pillow's convert("RGB") rules can be applied here.
//
// Both libraries report fatal errors by longjmp. Every function that calls setjmp below holds no
// C++ object with a destructor and changes no local after setjmp that it reads afterwards: all
// state lives in a context struct owned by the caller, as the C and C++ rules for setjmp require.
#include <png.h>

#include <csetjmp>
#include <cstdio>  // jpeglib.h needs FILE
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "io/image_decode_backend.h"

extern "C" {
#include <jerror.h>
#include <jpeglib.h>
}

namespace cpm::core::io::internal {
namespace {

absl::Status invalid(const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat("image: ", message));
}

// PNG

struct PngContext {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::span<const uint8_t> bytes;
  size_t pos = 0;
  char error[200] = {};  // libpng's message for the last fatal error
  // IHDR and palette, read by png_read_header.
  png_uint_32 width = 0;
  png_uint_32 height = 0;
  int bit_depth = 0;
  int color_type = 0;
  png_colorp palette = nullptr;  // owned by libpng
  int palette_size = 0;
  size_t row_bytes = 0;

  ~PngContext() {
    if (png != nullptr) png_destroy_read_struct(&png, info != nullptr ? &info : nullptr, nullptr);
  }
};

void png_on_error(png_structp png, png_const_charp message) {
  auto* ctx = static_cast<PngContext*>(png_get_error_ptr(png));
  std::snprintf(ctx->error, sizeof(ctx->error), "%s", message);
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}

void png_read_from_memory(png_structp png, png_bytep out, size_t n) {
  auto* ctx = static_cast<PngContext*>(png_get_io_ptr(png));
  if (n > ctx->bytes.size() - ctx->pos) png_error(png, "unexpected end of data");
  std::memcpy(out, ctx->bytes.data() + ctx->pos, n);
  ctx->pos += n;
}

// Reads up to the first IDAT and sets the transforms: only interlace handling and unpacking of
// 1/2/4-bit samples to one byte each (values unscaled). 16-bit samples stay big-endian.
bool png_read_header(PngContext* ctx) {
  if (setjmp(png_jmpbuf(ctx->png))) return false;
  png_set_read_fn(ctx->png, ctx, png_read_from_memory);
  png_read_info(ctx->png, ctx->info);
  png_get_IHDR(ctx->png, ctx->info, &ctx->width, &ctx->height, &ctx->bit_depth, &ctx->color_type,
               nullptr, nullptr, nullptr);
  if (ctx->color_type == PNG_COLOR_TYPE_PALETTE &&
      png_get_PLTE(ctx->png, ctx->info, &ctx->palette, &ctx->palette_size) != PNG_INFO_PLTE) {
    png_error(ctx->png, "palette image without PLTE chunk");
  }
  if (ctx->bit_depth < 8) png_set_packing(ctx->png);
  png_set_interlace_handling(ctx->png);
  png_read_update_info(ctx->png, ctx->info);
  ctx->row_bytes = png_get_rowbytes(ctx->png, ctx->info);
  return true;
}

// Reads all rows, then the chunks up to IEND (a PNG cut after its pixel data is still truncated).
bool png_read_rows(PngContext* ctx, png_bytepp rows) {
  if (setjmp(png_jmpbuf(ctx->png))) return false;
  png_read_image(ctx->png, rows);
  png_read_end(ctx->png, nullptr);
  return true;
}

absl::StatusOr<RgbImage> decode_png(std::span<const uint8_t> bytes) {
  PngContext ctx;
  ctx.bytes = bytes;
  ctx.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_on_error, png_on_warning);
  if (ctx.png == nullptr) return absl::ResourceExhaustedError("image: libpng out of memory");
  ctx.info = png_create_info_struct(ctx.png);
  if (ctx.info == nullptr) return absl::ResourceExhaustedError("image: libpng out of memory");
  if (!png_read_header(&ctx)) return invalid(absl::StrCat("corrupt PNG: ", ctx.error));

  const size_t width = ctx.width;
  const size_t height = ctx.height;
  std::vector<uint8_t> raw(ctx.row_bytes * height);
  std::vector<png_bytep> rows(height);
  for (size_t y = 0; y < height; ++y) rows[y] = raw.data() + y * ctx.row_bytes;
  if (!png_read_rows(&ctx, rows.data())) return invalid(absl::StrCat("corrupt PNG: ", ctx.error));

  // Pillow's palette is 256 entries, initialised to a gray ramp, the PLTE entries on top.
  uint8_t palette[256][3];
  for (int i = 0; i < 256; ++i) {
    palette[i][0] = palette[i][1] = palette[i][2] = static_cast<uint8_t>(i);
  }
  for (int i = 0; i < ctx.palette_size && i < 256; ++i) {
    palette[i][0] = ctx.palette[i].red;
    palette[i][1] = ctx.palette[i].green;
    palette[i][2] = ctx.palette[i].blue;
  }
  // Gray below 8 bits: Pillow's "1", "L;2", "L;4" unpackers scale the largest value to 255.
  const int gray_scale = 255 / ((1 << ctx.bit_depth) - 1);
  const int samples = png_get_channels(ctx.png, ctx.info);
  const size_t stride = ctx.bit_depth == 16 ? 2 : 1;  // bytes per sample; the high byte comes first

  RgbImage image{.width = static_cast<int>(width),
                 .height = static_cast<int>(height),
                 .pixels = std::vector<uint8_t>(width * height * 3)};
  uint8_t* out = image.pixels.data();
  for (size_t y = 0; y < height; ++y) {
    const uint8_t* in = rows[y];
    for (size_t x = 0; x < width; ++x, in += samples * stride, out += 3) {
      switch (ctx.color_type) {
        case PNG_COLOR_TYPE_GRAY:
          if (stride == 2) {
            // Pillow opens 16-bit gray as 32-bit "I"; convert("RGB") clips it to 255.
            const uint32_t v = (uint32_t{in[0]} << 8) | in[1];
            out[0] = out[1] = out[2] = static_cast<uint8_t>(v > 255 ? 255 : v);
          } else {
            out[0] = out[1] = out[2] = static_cast<uint8_t>(in[0] * gray_scale);
          }
          break;
        case PNG_COLOR_TYPE_GRAY_ALPHA:
          out[0] = out[1] = out[2] = in[0];
          break;
        case PNG_COLOR_TYPE_PALETTE:
          std::memcpy(out, palette[in[0]], 3);
          break;
        default:  // RGB, RGBA: the high byte of each 16-bit sample, alpha dropped
          out[0] = in[0];
          out[1] = in[stride];
          out[2] = in[2 * stride];
          break;
      }
    }
  }
  return image;
}

// JPEG

struct JpegContext {
  jpeg_decompress_struct cinfo = {};
  jpeg_error_mgr err = {};
  std::jmp_buf jump = {};
  bool created = false;
  bool hit_end_of_data = false;  // libjpeg padded missing data with a fake EOI
  char error[JMSG_LENGTH_MAX] = {};

  ~JpegContext() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

JpegContext* jpeg_context(j_common_ptr cinfo) {
  return static_cast<JpegContext*>(cinfo->client_data);
}

void jpeg_on_error(j_common_ptr cinfo) {
  JpegContext* ctx = jpeg_context(cinfo);
  (*cinfo->err->format_message)(cinfo, ctx->error);
  std::longjmp(ctx->jump, 1);
}

// Warnings (corrupt entropy data and the like) are ignored, as Pillow ignores them; running out of
// data is not, since Pillow rejects a truncated JPEG.
void jpeg_on_message(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    jpeg_context(cinfo)->hit_end_of_data = true;
  }
}

bool jpeg_read_header_into(JpegContext* ctx, std::span<const uint8_t> bytes) {
  if (setjmp(ctx->jump)) return false;
  jpeg_create_decompress(&ctx->cinfo);
  ctx->created = true;
  jpeg_mem_src(&ctx->cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&ctx->cinfo, TRUE);
  // Pillow leaves libjpeg's defaults (ISLOW DCT, fancy upsampling) and asks for these spaces.
  switch (ctx->cinfo.num_components) {
    case 1:
      ctx->cinfo.out_color_space = JCS_GRAYSCALE;
      break;
    case 4:
      ctx->cinfo.out_color_space = JCS_CMYK;
      break;
    default:
      ctx->cinfo.out_color_space = JCS_RGB;
      break;
  }
  jpeg_start_decompress(&ctx->cinfo);
  return true;
}

bool jpeg_read_rows(JpegContext* ctx, uint8_t* out, size_t row_bytes) {
  if (setjmp(ctx->jump)) return false;
  while (ctx->cinfo.output_scanline < ctx->cinfo.output_height) {
    JSAMPROW row = out + ctx->cinfo.output_scanline * row_bytes;
    jpeg_read_scanlines(&ctx->cinfo, &row, 1);
  }
  jpeg_finish_decompress(&ctx->cinfo);
  return true;
}

// Pillow's integer a * b / 255 with rounding (MULDIV255 in libImaging).
uint32_t mul_div_255(uint32_t a, uint32_t b) {
  const uint32_t t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

absl::StatusOr<RgbImage> decode_jpeg(std::span<const uint8_t> bytes) {
  JpegContext ctx;
  ctx.cinfo.client_data = &ctx;
  ctx.cinfo.err = jpeg_std_error(&ctx.err);
  ctx.err.error_exit = jpeg_on_error;
  ctx.err.emit_message = jpeg_on_message;
  if (!jpeg_read_header_into(&ctx, bytes)) {
    return invalid(absl::StrCat("corrupt JPEG: ", ctx.error));
  }

  const size_t width = ctx.cinfo.output_width;
  const size_t height = ctx.cinfo.output_height;
  const size_t components = ctx.cinfo.output_components;
  std::vector<uint8_t> raw(width * height * components);
  if (!jpeg_read_rows(&ctx, raw.data(), width * components)) {
    return invalid(absl::StrCat("corrupt JPEG: ", ctx.error));
  }
  if (ctx.hit_end_of_data) return invalid("truncated JPEG: data ends inside the image");

  RgbImage image{.width = static_cast<int>(width),
                 .height = static_cast<int>(height),
                 .pixels = std::vector<uint8_t>(width * height * 3)};
  uint8_t* out = image.pixels.data();
  const uint8_t* in = raw.data();
  for (size_t i = 0; i < width * height; ++i, out += 3, in += components) {
    if (components == 1) {
      out[0] = out[1] = out[2] = in[0];
    } else if (components == 3) {
      std::memcpy(out, in, 3);
    } else {
      // Pillow reads JPEG CMYK as Adobe-inverted ("CMYK;I": c = 255 - raw), then converts with
      // nk = 255 - k, out = nk - c * nk / 255; with c = 255 - raw that is nk = raw k.
      const uint32_t nk = in[3];
      for (int c = 0; c < 3; ++c) out[c] = static_cast<uint8_t>(nk - mul_div_255(255 - in[c], nk));
    }
  }
  return image;
}

}  // namespace

absl::StatusOr<RgbImage> decode_pixels(std::span<const uint8_t> bytes, const ImageHeader& header) {
  switch (header.format) {
    case ImageFormat::kPng:
      return decode_png(bytes);
    case ImageFormat::kJpeg:
      return decode_jpeg(bytes);
    case ImageFormat::kWebp:
    case ImageFormat::kBmp:
    case ImageFormat::kTiff:
      break;
  }
  return invalid(absl::StrCat("unsupported in this build: ", image_format_name(header.format),
                              " needs the OpenCV decoder (CPM_WITH_OPENCV=ON); send PNG or JPEG"));
}

}  // namespace cpm::core::io::internal
