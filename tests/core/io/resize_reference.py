# SPDX-License-Identifier: Apache-2.0
"""Random RGB images and Pillow's Image.resize(size, Image.BICUBIC) of each, for
image_resize_test.cpp.

/usr/bin/python3 resize_reference.py OUT --seed S --count N writes OUT/<i>.in and OUT/<i>.out (raw
RGB bytes, rows top to bottom) and OUT/cases.txt, one line per case: "i in_w in_h out_w out_h".
Seeded: the same arguments give the same files.
"""
import argparse
import os
import random

from PIL import Image


def random_size(rnd):
    """A side length: mostly moderate, sometimes tiny, sometimes larger."""
    kind = rnd.random()
    if kind < 0.1:
        return rnd.randint(1, 3)
    if kind < 0.8:
        return rnd.randint(4, 160)
    return rnd.randint(161, 420)


def shapes(rnd, count):
    """(in_w, in_h, out_w, out_h): the named edge cases first, then random ones."""
    fixed = [
        (1, 1, 1, 5), (1, 1, 7, 1), (1, 1, 9, 9), (5, 1, 1, 1), (1, 9, 1, 1), (1, 40, 3, 17),
        (40, 1, 17, 3), (2, 2, 3, 3), (3, 3, 2, 2), (400, 40, 518, 56), (800, 600, 518, 392),
        (800, 600, 448, 448), (360, 50, 1204, 168), (120, 50, 686, 294), (997, 13, 7, 2),
        (13, 997, 2, 7), (301, 211, 301, 97), (301, 211, 97, 211), (64, 64, 64, 65),
        (255, 3, 1, 1), (3, 255, 1, 1), (17, 19, 400, 410), (420, 420, 14, 14), (420, 5, 419, 6),
    ]
    for shape in fixed:
        yield shape
    for _ in range(count - len(fixed)):
        in_w, in_h = random_size(rnd), random_size(rnd)
        mode = rnd.random()
        if mode < 0.4:  # downscale
            out_w, out_h = rnd.randint(1, in_w), rnd.randint(1, in_h)
        elif mode < 0.7:  # upscale
            out_w, out_h = in_w + rnd.randint(0, 300), in_h + rnd.randint(0, 300)
        elif mode < 0.9:  # one side each way
            out_w, out_h = rnd.randint(1, in_w), in_h + rnd.randint(1, 200)
            if rnd.random() < 0.5:
                out_w, out_h = in_w + rnd.randint(1, 200), rnd.randint(1, in_h)
        else:  # one pass only
            out_w, out_h = (in_w, rnd.randint(1, 400)) if rnd.random() < 0.5 else (
                rnd.randint(1, 400), in_h)
        yield in_w, in_h, out_w, out_h


def content(rnd, w, h):
    """Noise (stresses the clipping of negative lobes) or smooth ramps with sharp edges."""
    if rnd.random() < 0.5:
        return rnd.randbytes(w * h * 3)
    px = bytearray(w * h * 3)
    fx, fy = rnd.randint(1, 9), rnd.randint(1, 9)
    for y in range(h):
        for x in range(w):
            i = (y * w + x) * 3
            px[i] = (x * fx * 7) % 256
            px[i + 1] = (y * fy * 5) % 256
            px[i + 2] = 255 if (x // 3 + y // 3) % 2 else 0
    return bytes(px)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rnd = random.Random(args.seed)
    lines = []
    for i, (in_w, in_h, out_w, out_h) in enumerate(shapes(rnd, args.count)):
        src = content(rnd, in_w, in_h)
        out = Image.frombytes("RGB", (in_w, in_h), src).resize((out_w, out_h), Image.BICUBIC)
        with open(os.path.join(args.out, f"{i}.in"), "wb") as f:
            f.write(src)
        with open(os.path.join(args.out, f"{i}.out"), "wb") as f:
            f.write(out.tobytes())
        lines.append(f"{i} {in_w} {in_h} {out_w} {out_h}\n")
    with open(os.path.join(args.out, "cases.txt"), "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()
