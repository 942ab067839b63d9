# SPDX-License-Identifier: Apache-2.0
"""MiniCPM-V slicing written from the spec (minicpm-o-2_6.md section 5) with Pillow, for
image_slicing_test.cpp.

/usr/bin/python3 slicing_reference.py OUT [--formula-dir DIR] writes
  OUT/sizes.json   {"cases": [{"w", "h", "s", "p", "n", "grid": [cols, rows] | null,
                               "source": [w, h], "refine": [w, h] | null}]}
                   the arithmetic alone, for a sweep of image sizes and slicing parameters;
  OUT/pixels.json  {"cases": [{"name", "input", "kind": "rgb" | "file", "w", "h", "grid",
                               "images": [{"w", "h", "rgb"}], "strip": path | null}]}
                   whole images sliced with Pillow: the input (raw RGB, or an encoded file that
                   Pillow opens and converts to RGB), each output image as raw RGB, and for some
                   the first image's normalised patch strip as little-endian float32.
Deterministic: fixed seeds.
"""
import argparse
import array
import json
import math
import os
import random
import struct

from PIL import Image


# ------------------------------------------------------------------ the spec, section 5


def ensure_divide(length, patch_size):
    return max(round(length / patch_size) * patch_size, patch_size)  # round(): half to even


def find_best_resize(size, scale_resolution, patch_size, allow_upscale=False):
    width, height = size
    if width * height > scale_resolution * scale_resolution or allow_upscale:
        r = width / height
        height = int(scale_resolution / math.sqrt(r))
        width = int(height * r)
    return ensure_divide(width, patch_size), ensure_divide(height, patch_size)


def get_sliced_grid(size, max_slice_nums, scale_resolution):
    width, height = size
    log_ratio = math.log(width / height)
    multiple = min(math.ceil(width * height / (scale_resolution * scale_resolution)),
                   max_slice_nums)
    if multiple <= 1:
        return None
    candidates = [n for n in (multiple - 1, multiple, multiple + 1)
                  if n != 1 and n <= max_slice_nums]
    grids = [[m, n // m] for n in candidates for m in range(1, n + 1) if n % m == 0]
    best, min_error = [1, 1], float("inf")
    for grid in grids:
        error = abs(log_ratio - math.log(grid[0] / grid[1]))
        if error < min_error:
            best, min_error = grid, error
    return best


def get_refine_size(size, grid, scale_resolution, patch_size):
    width, height = size
    refine_width = ensure_divide(width, grid[0])
    refine_height = ensure_divide(height, grid[1])
    cell = find_best_resize((refine_width / grid[0], refine_height / grid[1]), scale_resolution,
                            patch_size, allow_upscale=True)
    return cell[0] * grid[0], cell[1] * grid[1]


def plan(size, s, p, n):
    grid = get_sliced_grid(size, n, s)
    if grid is None:
        return None, find_best_resize(size, s, p, allow_upscale=True), None
    return grid, find_best_resize(size, s, p), get_refine_size(size, grid, s, p)


def slice_image(image, s, p, n):
    """[source, slices row-major] as PIL images, and the grid."""
    grid, source_size, refine_size = plan(image.size, s, p, n)
    images = [image.resize(source_size, Image.BICUBIC)]
    if grid is not None:
        refine = image.resize(refine_size, Image.BICUBIC)
        cell_w, cell_h = int(refine.size[0] / grid[0]), int(refine.size[1] / grid[1])
        for y in range(0, refine.size[1], cell_h):
            for x in range(0, refine.size[0], cell_w):
                images.append(refine.crop((x, y, x + cell_w, y + cell_h)))
    return grid, images


def patch_strip(image, p, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
    """float32 [3, p, h*w*p], flattened: x = (u8/255 - mean)/std in float32 (each step rounded
    to float32, which double arithmetic followed by rounding reproduces exactly for one + - * /),
    strip[c, kh, (r*w + col)*p + kw] = x[c, r*p + kh, col*p + kw]."""
    f32 = lambda v: struct.unpack("f", struct.pack("f", v))[0]
    width, height = image.size
    h, w = height // p, width // p
    raw = image.tobytes()
    out = array.array("f")
    for c in range(3):
        lut = [f32(f32(f32(v / 255.0) - f32(mean[c])) / f32(std[c])) for v in range(256)]
        for kh in range(p):
            for r in range(h):
                row = (r * p + kh) * width * 3
                out.extend(lut[raw[row + x * 3 + c]] for x in range(w * p))
    return out


# ------------------------------------------------------------------ the cases


def size_cases():
    named = [(1, 1), (2, 3), (13, 7), (14, 14), (28, 28), (400, 40), (360, 50), (800, 600),
             (1344, 1344), (4000, 60), (150, 2), (5000, 5000), (448, 448), (449, 448), (896, 448),
             (60, 4000), (2, 150), (10000, 1), (1, 10000), (200705, 1), (3000, 2000),
             (1920, 1080), (1080, 1920), (640, 480), (100, 1000), (7000, 7000)]
    sweep = [1, 2, 7, 13, 14, 15, 27, 28, 29, 40, 99, 100, 223, 224, 225, 300, 447, 448, 449, 500,
             600, 671, 672, 673, 800, 895, 896, 897, 1000, 1343, 1344, 1345, 1500, 2000, 2500,
             3000, 4000, 5000]
    rnd = random.Random(448)
    randoms = [(int(math.exp(rnd.uniform(0, math.log(8000)))),
                int(math.exp(rnd.uniform(0, math.log(8000))))) for _ in range(500)]
    for size in named + [(w, h) for w in sweep for h in sweep] + randoms:
        yield size, 448, 14, 9
    for size in named + randoms[:100]:
        for n in (1, 2, 4, 6, 12):
            yield size, 448, 14, n
        for s, p in ((224, 14), (448, 16), (980, 14)):
            yield size, s, p, 9


def noise(size, seed):
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--formula-dir")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    sizes = []
    for (w, h), s, p, n in size_cases():
        grid, source, refine = plan((w, h), s, p, n)
        sizes.append({"w": w, "h": h, "s": s, "p": p, "n": n, "grid": grid,
                      "source": list(source), "refine": list(refine) if refine else None})
    with open(os.path.join(args.out, "sizes.json"), "w") as f:
        json.dump({"cases": sizes}, f)

    inputs = []  # (name, kind, path, PIL RGB image, write the strip)
    for name, size, seed, strip in (("noise_800x600", (800, 600), 1, False),
                                    ("noise_400x40", (400, 40), 2, True),
                                    ("noise_1344x1344", (1344, 1344), 3, False),
                                    ("noise_1x1", (1, 1), 4, True),
                                    ("noise_150x2", (150, 2), 5, False),
                                    ("noise_4000x60", (4000, 60), 6, False),
                                    ("noise_97x1203", (97, 1203), 7, False)):
        im = noise(size, seed)
        path = os.path.join(args.out, f"{name}.in")
        with open(path, "wb") as f:
            f.write(im.tobytes())
        inputs.append((name, "rgb", path, im, strip))
    # Encoded inputs the C++ side decodes itself: gray and RGBA (alpha dropped, not composited).
    rnd = random.Random(9)
    for name, mode in (("gray_png", "L"), ("rgba_png", "RGBA")):
        bands = len(mode)
        im = Image.frombytes(mode, (530, 97), rnd.randbytes(530 * 97 * bands))
        path = os.path.join(args.out, f"{name}.png")
        im.save(path)
        inputs.append((name, "file", path, Image.open(path).convert("RGB"), False))
    if args.formula_dir and os.path.isdir(args.formula_dir):
        for n in ("0.png", "1.png", "100.png"):
            path = os.path.join(args.formula_dir, n)
            inputs.append((f"formula_{n}", "file", path, Image.open(path).convert("RGB"),
                           n == "0.png"))

    pixels = []
    for name, kind, path, im, strip in inputs:
        grid, images = slice_image(im, 448, 14, 9)
        entry = {"name": name, "input": path, "kind": kind, "w": im.size[0], "h": im.size[1],
                 "grid": grid, "images": [], "strip": None}
        for i, out in enumerate(images):
            rgb = os.path.join(args.out, f"{name}.{i}.rgb")
            with open(rgb, "wb") as f:
                f.write(out.tobytes())
            entry["images"].append({"w": out.size[0], "h": out.size[1], "rgb": rgb})
        if strip:
            entry["strip"] = os.path.join(args.out, f"{name}.strip")
            with open(entry["strip"], "wb") as f:
                patch_strip(images[0], 14).tofile(f)
        pixels.append(entry)
    with open(os.path.join(args.out, "pixels.json"), "w") as f:
        json.dump({"cases": pixels}, f)


if __name__ == "__main__":
    main()
