# SPDX-License-Identifier: Apache-2.0
"""cpm-tool preprocess end to end: a checkpoint directory holding only config.json and
preprocessor_config.json, real and generated images, the JSON it prints, the tensors it dumps and
its exit codes. Expected sizes come from tests/core/io/slicing_reference.py (the spec written with
Pillow). Run by ctest with CPM_BIN_DIR set; needs Debian's python3-pil.
"""
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import unittest

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "core", "io"))
import slicing_reference as ref  # noqa: E402

FORMULA = os.path.join(HERE, "..", "..", "..", "shared", "data", "latex_ocr_full_val", "images",
                       "0.png")


def tool():
    return os.path.join(os.environ.get("CPM_BIN_DIR", "build/bin"), "cpm-tool")


def expected_json(size, max_slice_nums=9):
    grid, source, refine = ref.plan(size, 448, 14, max_slice_nums)
    sizes = [source]
    if grid is not None:
        sizes += [(refine[0] // grid[0], refine[1] // grid[1])] * (grid[0] * grid[1])
    return {"grid": grid,
            "images": [{"width": w, "height": h, "tgt_size": [h // 14, w // 14]} for w, h in sizes]}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    return header, data[8 + n:]


class PreprocessCommand(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.model = os.path.join(self.dir.name, "model")
        os.mkdir(self.model)
        self.write_configs(max_slice_nums=9)

    def tearDown(self):
        self.dir.cleanup()

    def write_configs(self, max_slice_nums):
        with open(os.path.join(self.model, "config.json"), "w") as f:
            json.dump({"architectures": ["MiniCPMO"], "model_type": "minicpmo",
                       "max_slice_nums": max_slice_nums, "scale_resolution": 448,
                       "patch_size": 14, "slice_mode": True}, f)
        with open(os.path.join(self.model, "preprocessor_config.json"), "w") as f:
            json.dump({"image_processor_type": "MiniCPMVImageProcessor",
                       "max_slice_nums": max_slice_nums, "scale_resolution": 448,
                       "patch_size": 14, "slice_mode": True, "image_feature_size": 64,
                       "norm_mean": [0.5, 0.5, 0.5], "norm_std": [0.5, 0.5, 0.5]}, f)

    def image(self, name, size, mode="RGB"):
        rnd = random.Random(size[0] * 7919 + size[1])
        im = Image.frombytes(mode, size, rnd.randbytes(size[0] * size[1] * len(mode)))
        path = os.path.join(self.dir.name, name)
        im.save(path)
        return path

    def run_tool(self, *args):
        return subprocess.run([tool(), "preprocess", "--model", self.model, *args],
                              capture_output=True, text=True, timeout=120)

    def test_real_formula_png(self):
        if not os.path.exists(FORMULA):
            self.skipTest(f"{FORMULA} absent")
        result = self.run_tool("--image", FORMULA)
        self.assertEqual(result.returncode, 0, result.stderr)
        with Image.open(FORMULA) as im:
            self.assertEqual(json.loads(result.stdout), expected_json(im.size))
        # Formula 0 is 360x50: no grid, upscaled to 1190x168, 12 x 85 patches.
        self.assertEqual(json.loads(result.stdout), {
            "grid": None, "images": [{"width": 1190, "height": 168, "tgt_size": [12, 85]}]})

    def test_sliced_photo_and_override(self):
        path = self.image("photo.png", (800, 600))
        result = self.run_tool("--image", path)
        self.assertEqual(result.returncode, 0, result.stderr)
        out = json.loads(result.stdout)
        self.assertEqual(out, expected_json((800, 600)))
        self.assertEqual(out["grid"], [2, 2])
        self.assertEqual(out["images"][0], {"width": 518, "height": 392, "tgt_size": [28, 37]})
        self.assertEqual(len(out["images"]), 5)
        result = self.run_tool("--image", path, "--max-slice-nums", "1")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout), expected_json((800, 600), max_slice_nums=1))

    def test_reads_max_slice_nums_from_preprocessor_config(self):
        self.write_configs(max_slice_nums=4)
        path = self.image("big.png", (1344, 1344))
        result = self.run_tool("--image", path)
        self.assertEqual(result.returncode, 0, result.stderr)
        out = json.loads(result.stdout)
        self.assertEqual(out, expected_json((1344, 1344), max_slice_nums=4))
        self.assertEqual(out["grid"], [2, 2])

    def test_dump_writes_the_normalised_strips(self):
        path = self.image("gray.png", (300, 200), mode="L")
        dump = os.path.join(self.dir.name, "pixels.safetensors")
        result = self.run_tool("--image", path, "--dump", dump)
        self.assertEqual(result.returncode, 0, result.stderr)
        out = json.loads(result.stdout)
        header, data = read_safetensors(dump)
        names = sorted(k for k in header if k != "__metadata__")
        self.assertEqual(names, [f"image_{i}" for i in range(len(out["images"]))])
        for i, im in enumerate(out["images"]):
            h, w = im["tgt_size"]
            self.assertEqual(header[f"image_{i}"]["dtype"], "F32")
            self.assertEqual(header[f"image_{i}"]["shape"], [3, 14, h * w * 14])
        # The source strip, value for value, against the spec's normalisation of Pillow's resize.
        with Image.open(path) as im:
            grid, images = ref.slice_image(im.convert("RGB"), 448, 14, 9)
        begin, end = header["image_0"]["data_offsets"]
        self.assertEqual(data[begin:end], ref.patch_strip(images[0], 14).tobytes())

    def test_failures_exit_1_with_one_line(self):
        garbage = os.path.join(self.dir.name, "garbage.png")
        with open(garbage, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
        for args, needle in ((["--image", garbage], "image:"),
                             (["--image", os.path.join(self.dir.name, "missing.png")],
                              "no such file")):
            result = self.run_tool(*args)
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertEqual(result.stdout, "")
            self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
            self.assertIn(needle, result.stderr)
        os.remove(os.path.join(self.model, "config.json"))
        result = self.run_tool("--image", garbage)
        self.assertEqual(result.returncode, 1)
        self.assertIn("config.json", result.stderr)

    def test_usage_errors_exit_2(self):
        path = self.image("small.png", (20, 20))
        self.assertEqual(self.run_tool("--image", path, "--max-slice-nums", "0").returncode, 2)
        self.assertEqual(subprocess.run([tool(), "preprocess", "--image", path],
                                        capture_output=True).returncode, 2)


if __name__ == "__main__":
    unittest.main()
