# SPDX-License-Identifier: Apache-2.0
"""Writes encoded test images and Pillow's decoding of each, for image_decode_test.cpp.

Run with Debian's interpreter (python3-pil, Pillow 9.4): /usr/bin/python3 image_decode_cases.py OUT
[--formula-dir DIR --formula-count N]. OUT gets one encoded file per case, `<name>.rgb` holding
Pillow's `Image.open(f).convert("RGB").tobytes()`, and manifest.json:
  {"cases": [{"name", "file", "format", "width", "height", "rgb" | null, "expect", "opencv"}]}
expect: "pixels" (the decoder must reproduce the .rgb bytes) or "error" (INVALID_ARGUMENT).
opencv: the expectation for the OpenCV build where it differs: "error" (rejected there, because
OpenCV cannot reproduce Pillow's pixels) or "differs" (decoded, with pixels known to differ from
Pillow's). Formats a build lacks are the C++ test's business.
Deterministic: fixed seeds, no time or platform input.
"""
import argparse
import io
import json
import os
import random
import struct
import warnings
import zlib

from PIL import Image


def noise_image(mode, size, seed):
    """Random pixels: the worst case for codecs and the best for catching channel mix-ups."""
    rnd = random.Random(seed)
    w, h = size
    if mode == "1":
        return Image.frombytes("1", size, rnd.randbytes((w + 7) // 8 * h))
    if mode == "P":
        im = Image.frombytes("P", size, rnd.randbytes(w * h))
        im.putpalette(rnd.randbytes(256 * 3))
        return im
    depth = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "I;16": 2, "I;16B": 2}[mode]
    return Image.frombytes(mode, size, rnd.randbytes(w * h * depth))


def smooth_image(mode, size, seed):
    """Gradients plus mild noise: what lossy codecs are meant for (chroma subsampling matters)."""
    rnd = random.Random(seed)
    w, h = size
    px = []
    for y in range(h):
        for x in range(w):
            px.append((x * 255 // max(w - 1, 1) + rnd.randrange(-8, 9)) % 256)
            px.append((y * 255 // max(h - 1, 1) + rnd.randrange(-8, 9)) % 256)
            px.append(((x + y) * 127 // max(w + h - 2, 1) + rnd.randrange(-8, 9)) % 256)
            px.append(rnd.randrange(256))
    rgba = Image.frombytes("RGBA", size, bytes(px))
    if mode == "RGBA":
        return rgba
    return rgba.convert("RGB").convert(mode)


# ------------------------------------------------------------ hand-made PNG, BMP and TIFF files


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(width, height, depth, color_type, rows, extra=b"", interlace=0):
    """rows: unfiltered scanlines (bytes); with interlace=1 they are split into Adam7 passes."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, interlace)
    if interlace:
        raw = adam7(width, height, depth, color_type, rows)
    else:
        raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra +
            png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def adam7(width, height, depth, color_type, rows):
    """Adam7 passes of byte-aligned (depth >= 8) scanlines, each line with filter byte 0."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    bpp = channels * depth // 8
    out = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                           (1, 0, 2, 2), (0, 1, 1, 2)):
        if x0 >= width:
            continue
        for y in range(y0, height, dy):
            line = b"".join(rows[y][x * bpp:(x + 1) * bpp] for x in range(x0, width, dx))
            out += b"\x00" + line
    return out


def bmp_file(width, height, bpp, pixel_rows, palette=b"", compression=0, masks=None, top_down=False,
             header_size=40):
    """pixel_rows: already padded rows, bottom-up unless top_down."""
    data = b"".join(pixel_rows)
    extra = b""
    if masks is not None and header_size == 40:
        extra = struct.pack("<III", *masks[:3])
    h = -height if top_down else height
    dib = struct.pack("<IiiHHIIiiII", header_size, width, h, 1, bpp, compression, len(data), 2835,
                      2835, len(palette) // 4, 0)
    if header_size > 40:
        tail = b""
        if masks is not None:
            tail = struct.pack("<IIII", *masks)
        dib += (tail + b"\x00" * header_size)[:header_size - 40]
    offset = 14 + len(dib) + len(extra) + len(palette)
    header = b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset)
    return header + dib + extra + palette + data


def tiff_file(width, height, bps, spp, photometric, data, big_endian=False):
    """One uncompressed strip: header, pixel data, the BitsPerSample array, then the IFD."""
    e = ">" if big_endian else "<"

    def entry(tag, kind, count, value):
        packed = struct.pack(e + "HH", value, 0) if kind == 3 else struct.pack(e + "I", value)
        return struct.pack(e + "HHI", tag, kind, count) + packed

    bps_array = struct.pack(e + "H" * spp, *([bps] * spp))
    ifd_offset = 8 + len(data) + len(bps_array)
    ifd_offset += ifd_offset % 2
    if spp == 1:
        bps_entry = entry(258, 3, 1, bps)
    else:  # three or more SHORTs do not fit the entry: an offset to the array
        bps_entry = struct.pack(e + "HHII", 258, 3, spp, 8 + len(data))
    entries = [entry(256, 4, 1, width), entry(257, 4, 1, height), bps_entry, entry(259, 3, 1, 1),
               entry(262, 3, 1, photometric), entry(273, 4, 1, 8), entry(277, 3, 1, spp),
               entry(278, 4, 1, height), entry(279, 4, 1, len(data))]
    ifd = struct.pack(e + "H", len(entries)) + b"".join(entries) + struct.pack(e + "I", 0)
    head = (b"MM\x00\x2a" if big_endian else b"II\x2a\x00") + struct.pack(e + "I", ifd_offset)
    body = data + bps_array
    return head + body + b"\x00" * (ifd_offset - 8 - len(body)) + ifd


def padded(row):
    return row + b"\x00" * (-len(row) % 4)


# ------------------------------------------------------------------ the cases


def cases(rnd):
    """Yields (name, format, bytes, expect, opencv_expect)."""

    def save(im, fmt, **kw):
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        return buf.getvalue()

    # PNG, every mode Pillow writes, plus transparency variants and odd sizes.
    for mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I"):
        im = noise_image("I;16" if mode == "I" else mode, (37, 23), rnd.randrange(1 << 30))
        if mode == "I":
            im = im.convert("I")
        yield f"png_{mode.replace(';', '')}", "png", save(im, "PNG"), "pixels", None
    p = noise_image("P", (29, 31), 7)
    yield "png_P_transparency_index", "png", save(p, "PNG", transparency=3), "pixels", None
    p.info["transparency"] = bytes(rnd.randrange(256) for _ in range(200))
    yield "png_P_transparency_table", "png", save(p, "PNG"), "pixels", None
    yield ("png_L_transparency", "png", save(noise_image("L", (16, 9), 8), "PNG", transparency=17),
           "pixels", None)
    yield ("png_RGB_transparency", "png",
           save(noise_image("RGB", (16, 9), 9), "PNG", transparency=(1, 2, 3)), "pixels", None)
    for size in ((1, 1), (1, 40), (40, 1), (257, 3)):
        yield (f"png_RGB_{size[0]}x{size[1]}", "png", save(noise_image("RGB", size, 10), "PNG"),
               "pixels", None)
    # PNG variants Pillow does not write: low bit depths, 16-bit colour, Adam7, short palettes.
    w, h = 19, 11
    for depth in (1, 2, 4):
        rows = [rnd.randbytes((w * depth + 7) // 8) for _ in range(h)]
        yield f"png_gray{depth}", "png", png_file(w, h, depth, 0, rows), "pixels", None
        plte = png_chunk(b"PLTE", rnd.randbytes(3 * (1 << depth)))
        yield f"png_palette{depth}", "png", png_file(w, h, depth, 3, rows, plte), "pixels", None
    for color_type, channels in ((0, 1), (2, 3), (4, 2), (6, 4)):
        rows = [rnd.randbytes(w * channels * 2) for _ in range(h)]
        yield (f"png_16bit_type{color_type}", "png", png_file(w, h, 16, color_type, rows),
               "pixels", None)
    for color_type, channels in ((0, 1), (2, 3), (4, 2), (6, 4)):
        rows = [rnd.randbytes(w * channels) for _ in range(h)]
        yield (f"png_adam7_type{color_type}", "png", png_file(w, h, 8, color_type, rows,
                                                                   interlace=1), "pixels", None)
    rows = [rnd.randbytes(w * 3 * 2) for _ in range(h)]
    yield "png_adam7_16bit_rgb", "png", png_file(w, h, 16, 2, rows, interlace=1), "pixels", None
    # Indices past a 5-entry palette (an invalid PNG): Pillow shows them as gray (i, i, i);
    # libpng's expansion inside OpenCV as black.
    rows = [bytes(rnd.randrange(12) for _ in range(w)) for _ in range(h)]
    plte = png_chunk(b"PLTE", rnd.randbytes(15))
    yield "png_palette_short", "png", png_file(w, h, 8, 3, rows, plte), "pixels", "differs"

    # JPEG: gray and colour with each chroma subsampling, progressive, optimised, MCU-edge sizes.
    rgb = smooth_image("RGB", (45, 31), 11)
    gray = smooth_image("L", (45, 31), 12)
    yield "jpeg_L", "jpeg", save(gray, "JPEG", quality=90), "pixels", None
    for sub in (0, 1, 2):
        yield (f"jpeg_RGB_sub{sub}", "jpeg", save(rgb, "JPEG", quality=90, subsampling=sub),
               "pixels", None)
    yield ("jpeg_RGB_progressive", "jpeg", save(rgb, "JPEG", quality=80, progressive=True),
           "pixels", None)
    yield "jpeg_RGB_optimize", "jpeg", save(rgb, "JPEG", quality=70, optimize=True), "pixels", None
    yield ("jpeg_RGB_noise_q100", "jpeg", save(noise_image("RGB", (17, 13), 13), "JPEG",
                                                quality=100), "pixels", None)
    for size in ((1, 1), (1, 33), (33, 1), (8, 8), (16, 17)):
        yield (f"jpeg_RGB_{size[0]}x{size[1]}", "jpeg", save(smooth_image("RGB", size, 14), "JPEG"),
               "pixels", None)
    # Pillow writes CMYK JPEG Adobe-style (inverted). OpenCV's CMYK conversion rounds differently.
    yield ("jpeg_CMYK", "jpeg", save(noise_image("CMYK", (21, 14), 15), "JPEG", quality=95),
           "pixels", "error")
    # EXIF orientation 6 (rotate): Pillow's open() ignores it, so must the decoder.
    exif = Image.Exif()
    exif[0x0112] = 6
    yield "jpeg_RGB_exif_rotated", "jpeg", save(rgb, "JPEG", exif=exif), "pixels", None

    # WebP: lossy and lossless, with and without alpha (transparent pixels keep their colour).
    rgba = smooth_image("RGBA", (33, 21), 16)
    yield "webp_RGB_lossy", "webp", save(rgb, "WEBP", quality=80), "pixels", None
    yield "webp_RGB_lossless", "webp", save(noise_image("RGB", (33, 21), 17), "WEBP",
                                             lossless=True), "pixels", None
    yield "webp_RGBA_lossy", "webp", save(rgba, "WEBP", quality=80), "pixels", None
    yield ("webp_RGBA_lossless", "webp", save(rgba, "WEBP", lossless=True, exact=True), "pixels",
           None)
    yield "webp_1x1", "webp", save(noise_image("RGB", (1, 1), 18), "WEBP"), "pixels", None
    frames = [smooth_image("RGB", (20, 10), s) for s in (19, 20)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=100)
    yield "webp_animated", "webp", buf.getvalue(), "error", None

    # BMP: what Pillow writes, then hand-made palette, top-down, bit-field and 16-bit files.
    for mode in ("1", "L", "P", "RGB", "RGBA"):
        yield f"bmp_{mode}", "bmp", save(noise_image(mode, (37, 23), 21), "BMP"), "pixels", None
    w, h = 13, 7
    pal = b"".join(rnd.randbytes(3) + b"\x00" for _ in range(16))
    rows = [padded(rnd.randbytes((w + 1) // 2)) for _ in range(h)]
    yield "bmp_4bit", "bmp", bmp_file(w, h, 4, rows, pal), "pixels", None
    rows = [padded(rnd.randbytes(w * 3)) for _ in range(h)]
    yield "bmp_24bit_top_down", "bmp", bmp_file(w, h, 24, rows, top_down=True), "pixels", None
    rows = [rnd.randbytes(w * 4) for _ in range(h)]
    masks = (0xFF0000, 0xFF00, 0xFF, 0xFF000000)
    yield ("bmp_32bit_bitfields_v5", "bmp", bmp_file(w, h, 32, rows, compression=3, masks=masks,
                                                      header_size=124), "pixels", None)
    yield ("bmp_32bit_bitfields_rgba_order", "bmp",
           bmp_file(w, h, 32, rows, compression=3, masks=(0xFF, 0xFF00, 0xFF0000, 0xFF000000),
                    header_size=124), "error", None)
    rows = [padded(rnd.randbytes(w * 2)) for _ in range(h)]
    yield "bmp_16bit", "bmp", bmp_file(w, h, 16, rows), "error", None
    # RLE8: an encoded run, an absolute run, end of line, end of bitmap.
    pal = b"".join(rnd.randbytes(3) + b"\x00" for _ in range(256))
    rle = b""
    for _ in range(h):
        rle += bytes([5, rnd.randrange(256)]) + bytes([0, 4]) + rnd.randbytes(4)
        rle += bytes([w - 9, rnd.randrange(256)]) + b"\x00\x00"
    rle += b"\x00\x01"
    yield "bmp_rle8", "bmp", bmp_file(w, h, 8, [rle], pal, compression=1), "pixels", None

    # TIFF: each mode Pillow writes, uncompressed and with the usual compressions.
    for mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B"):
        im = noise_image(mode, (37, 23), 22)
        expect = "error" if mode == "RGBA" else "pixels"
        yield f"tiff_{mode.replace(';', '')}", "tiff", save(im, "TIFF"), expect, None
    for compression in ("tiff_lzw", "tiff_adobe_deflate", "packbits"):
        yield (f"tiff_RGB_{compression}", "tiff", save(noise_image("RGB", (37, 23), 23), "TIFF",
                                                       compression=compression), "pixels", None)
    yield ("tiff_L_lzw", "tiff",
           save(noise_image("L", (37, 23), 24), "TIFF", compression="tiff_lzw"),
           "pixels", None)
    yield ("tiff_RGBA_deflate", "tiff", save(noise_image("RGBA", (37, 23), 25), "TIFF",
                                            compression="tiff_adobe_deflate"), "error", None)
    yield ("tiff_RGB_jpeg", "tiff", save(smooth_image("RGB", (48, 32), 26), "TIFF",
                                         compression="jpeg"), "pixels", None)
    yield ("tiff_YCbCr_jpeg", "tiff", save(smooth_image("RGB", (48, 32), 26).convert("YCbCr"),
                                           "TIFF", compression="jpeg"), "pixels", None)
    # Hand-made: MinIsWhite gray (inverted), 16-bit RGB in both byte orders.
    w, h = 19, 7
    yield ("tiff_miniswhite_1bit", "tiff",
           tiff_file(w, h, 1, 1, 0, rnd.randbytes((w + 7) // 8 * h)),
           "pixels", None)
    yield ("tiff_miniswhite_8bit", "tiff", tiff_file(w, h, 8, 1, 0, rnd.randbytes(w * h)), "pixels",
           None)
    for big_endian in (False, True):
        yield (f"tiff_RGB16_{'be' if big_endian else 'le'}", "tiff",
               tiff_file(w, h, 16, 3, 2, rnd.randbytes(w * h * 6), big_endian), "pixels", None)
    # OpenCV reads these through libtiff's RGBA interface: premultiplied alpha, CMYK rounded
    # differently. Rejected rather than decoded differently.
    yield "tiff_CMYK", "tiff", save(noise_image("CMYK", (37, 23), 27), "TIFF"), "error", None

    # Not a supported format at all.
    yield "gif", "gif", save(noise_image("P", (8, 8), 28), "GIF"), "error", None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--formula-dir")
    parser.add_argument("--formula-count", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # Pillow's advice on palettes with byte transparency
    os.makedirs(args.out, exist_ok=True)
    manifest = []
    ext = {"png": "png", "jpeg": "jpg", "webp": "webp", "bmp": "bmp", "tiff": "tif", "gif": "gif"}
    for name, fmt, data, expect, opencv in cases(random.Random(2024)):
        path = os.path.join(args.out, f"{name}.{ext[fmt]}")
        with open(path, "wb") as f:
            f.write(data)
        entry = {"name": name, "file": path, "format": fmt, "expect": expect, "opencv": opencv,
                 "width": 0, "height": 0, "rgb": None}
        try:
            im = Image.open(io.BytesIO(data))
            rgb = im.convert("RGB")
        except Exception as e:  # Pillow rejects it too: the decoder must not invent pixels
            if expect == "pixels":
                raise SystemExit(f"{name}: Pillow cannot decode it: {e}")
        else:
            entry["width"], entry["height"] = rgb.size
            entry["rgb"] = os.path.join(args.out, f"{name}.rgb")
            with open(entry["rgb"], "wb") as f:
                f.write(rgb.tobytes())
        manifest.append(entry)
    if args.formula_dir:
        names = sorted(n for n in os.listdir(args.formula_dir) if n.endswith(".png"))
        step = max(len(names) // max(args.formula_count, 1), 1)
        for n in names[::step][:args.formula_count]:
            path = os.path.join(args.formula_dir, n)
            rgb = Image.open(path).convert("RGB")
            out = os.path.join(args.out, f"formula_{n}.rgb")
            with open(out, "wb") as f:
                f.write(rgb.tobytes())
            manifest.append({"name": f"formula_{n}", "file": path, "format": "png",
                             "expect": "pixels", "opencv": None, "width": rgb.size[0],
                             "height": rgb.size[1], "rgb": out})
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"cases": manifest}, f, indent=1)


if __name__ == "__main__":
    main()
