# SPDX-License-Identifier: Apache-2.0
"""cpmctl ocr and cpmctl adapter(s) against the real cpmd on loopback: the tiny random checkpoint on
the CPU (the base of the committed adapter tests/data/adapters/cpmd_written), formula images from
tests/data. Checks output formats, exit codes and one-line errors, and that an export round-trips.
"""
import filecmp
import json
import os
import shutil
import socket
import tempfile
import unittest

from cpmd_harness import CpmctlAssertions, Daemon, cpmctl, make_tiny_model

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
FORMULAS = os.path.join(DATA, "images", "formulas")
WRITTEN_ADAPTER = os.path.join(DATA, "adapters", "cpmd_written")
DECODE = ("--max-new-tokens", "8")


class CpmctlOcrTest(CpmctlAssertions, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cpmctl-ocr-")
        model = make_tiny_model(os.path.join(cls.tmp.name, "tiny"))
        cls.root = os.path.join(cls.tmp.name, "adapters")
        shutil.copytree(WRITTEN_ADAPTER, os.path.join(cls.root, "cpmd_written"))
        cls.images = [os.path.join(FORMULAS, f) for f in sorted(os.listdir(FORMULAS))[:6]]
        cls.daemon = Daemon("--model", model, "--adapter-roots", cls.root).start()
        cls.daemon.wait_serving("cpm.v1.Ocr")

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop_cleanly()
        cls.tmp.cleanup()

    def ctl(self, *args, ok=True, **kwargs):
        r = cpmctl("--server", self.daemon.address, "--timeout", "120", *args, timeout=300, **kwargs)
        if ok:
            self.assertEqual(r.returncode, 0, f"cpmctl {' '.join(args)}: {r.stderr}")
        return r

    def ocr(self, *args, **kwargs):
        return self.ctl("ocr", *DECODE, *args, **kwargs)

    def test_one_file_prints_one_line(self):
        r = self.ocr(self.images[0])
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 1, r.stdout)
        self.assertNotIn("\t", lines[0])

    def test_many_files_are_prefixed_and_in_order(self):
        r = self.ocr(*self.images[:3])
        lines = r.stdout.splitlines()
        self.assertEqual([l.split("\t")[0] for l in lines], self.images[:3])
        single = self.ocr(self.images[1]).stdout.rstrip("\n")
        self.assertEqual(lines[1].split("\t", 1)[1], single)

    def test_a_folder_gives_its_images_sorted(self):
        with tempfile.TemporaryDirectory() as d:
            for name, src in (("b.png", self.images[1]), ("a.png", self.images[0]), ("c.PNG", self.images[2])):
                shutil.copy(src, os.path.join(d, name))
            with open(os.path.join(d, "notes.txt"), "w") as f:
                f.write("not an image")
            r = self.ocr(d)
            names = [os.path.basename(l.split("\t")[0]) for l in r.stdout.splitlines()]
            self.assertEqual(names, ["a.png", "b.png", "c.PNG"])

    def test_stdin(self):
        with open(self.images[0], "rb") as f:
            blob = f.read()
        import subprocess
        from cpmd_harness import binary
        r = subprocess.run([binary("cpmctl"), "--server", self.daemon.address, "ocr", *DECODE, "-"],
                           input=blob, capture_output=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode(), self.ocr(self.images[0]).stdout)

    def test_json_has_text_tokens_finish_reason_and_timings(self):
        r = self.ocr("--json", *self.images[:2])
        records = [json.loads(l) for l in r.stdout.splitlines()]
        self.assertEqual([x["file"] for x in records], self.images[:2])
        for x in records:
            self.assertIsInstance(x["text"], str)
            self.assertGreater(x["prompt_tokens"], 0)
            self.assertGreater(x["completion_tokens"], 0)
            self.assertLessEqual(x["completion_tokens"], 8)
            self.assertIn(x["finish_reason"], ("stop", "length"))
            self.assertEqual(x["adapter"], "")
            self.assertGreater(x["timings_ms"]["total"], 0)
            self.assertEqual(set(x["timings_ms"]), {"queue", "prefill", "decode", "total"})
        single = self.ocr(self.images[0]).stdout.rstrip("\n")
        self.assertEqual(records[0]["text"].replace("\n", " "), single)

    def test_stream_prints_the_same_text(self):
        r = self.ocr("--stream", self.images[0])
        self.assertEqual(r.stdout, self.ocr(self.images[0]).stdout)
        j = json.loads(self.ocr("--stream", "--json", self.images[0]).stdout)
        self.assertEqual(j["text"].replace("\n", " ") + "\n", r.stdout)
        self.assertEqual(self.ocr("--stream", *self.images[:2], ok=False).returncode, 2)

    def test_concurrency_keeps_input_order(self):
        serial = self.ocr(*self.images).stdout
        self.assertEqual(self.ocr("--concurrency", "4", *self.images).stdout, serial)

    def test_decoding_flags(self):
        a = self.ocr("--sample", "--seed", "7", "--temperature", "1.0", "--top-k", "20", "--top-p", "0.9",
                     self.images[0]).stdout
        b = self.ocr("--sample", "--seed", "7", "--temperature", "1.0", "--top-k", "20", "--top-p", "0.9",
                     self.images[0]).stdout
        self.assertEqual(a, b)
        self.ocr("--num-beams", "2", "--repetition-penalty", "1.2", self.images[0])
        self.ocr("--prompt", "Write the LaTeX.", self.images[0])
        r = self.ctl("ocr", "--max-new-tokens", "3", "--json", self.images[0])
        self.assertLessEqual(json.loads(r.stdout)["completion_tokens"], 3)
        self.assertEqual(self.ocr("--sample", "--num-beams", "2", self.images[0], ok=False).returncode, 2)

    def test_bad_image_is_invalid_argument(self):
        with tempfile.NamedTemporaryFile(suffix=".png") as f:
            f.write(b"this is not an image")
            f.flush()
            self.assert_one_line_error(self.ocr(f.name, ok=False), 1, "INVALID_ARGUMENT", f.name)

    def test_unknown_adapter_is_not_found(self):
        r = self.ocr("--adapter", "no-such-adapter", self.images[0], ok=False)
        self.assert_one_line_error(r, 1, "NOT_FOUND")

    def test_missing_file_and_no_input_are_usage_errors(self):
        self.assert_one_line_error(self.ocr("/no/such/file.png", ok=False), 2, "/no/such/file.png")
        self.assert_one_line_error(self.ctl("ocr", ok=False), 2)

    def test_unreachable_exits_3(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        r = cpmctl("--server", f"127.0.0.1:{port}", "--timeout", "2", "ocr", *self.images[:3])
        self.assert_one_line_error(r, 3, f"cannot reach cpmd at 127.0.0.1:{port}")
        r = cpmctl("--server", f"127.0.0.1:{port}", "--timeout", "2", "adapters")
        self.assertEqual(r.returncode, 3, r.stderr)

    def test_eval_reports_metrics_against_labels(self):
        records = [json.loads(l) for l in self.ocr("--json", *self.images[:3]).stdout.splitlines()]
        with tempfile.TemporaryDirectory() as d:
            for x in records:
                shutil.copy(x["file"], d)
            labels = os.path.join(d, "labels.csv")
            with open(labels, "w") as f:
                f.write("image_path,text\n")
                for x in records:
                    text = x["text"].replace('"', '""')
                    f.write(f'{os.path.basename(x["file"])},"{text}"\n')
            m = json.loads(self.ocr("--json", "--eval", labels).stdout)
            self.assertEqual(m["count"], 3)
            self.assertEqual(m["exact_match"], 1.0)
            self.assertEqual(m["normalized_edit_distance"], 0.0)
            with open(labels, "a") as f:  # one more image whose label cannot match
                f.write(f'{os.path.basename(records[0]["file"])},"\\\\frac {{ x }} {{ y }} = \\\\int z"\n')
            r = self.ocr("--eval", labels)
            self.assertRegex(r.stdout, r"^count 4  exact_match 0\.7500  normalized_edit_distance 0\.\d+  bleu4 ")

    def test_adapter_load_list_get_export_unload(self):
        r = self.ctl("adapter", "load", os.path.join(self.root, "cpmd_written"), "--name", "cli", "--pin")
        self.assertIn("cli: loaded", r.stdout)
        self.assertIn("pinned", r.stdout)
        listing = self.ctl("adapters").stdout
        self.assertRegex(listing, r"(?m)^NAME\s+STATE\s+R\s+SIZE\s+DEVICE\s+LAST USED\s+PINNED")
        self.assertRegex(listing, r"(?m)^cli\s+loaded\s+4\s.*yes$")
        listed = json.loads(self.ctl("adapters", "--json").stdout)
        self.assertIn("cli", [a["name"] for a in listed["adapters"]])
        got = json.loads(self.ctl("adapter", "get", "cli", "--json").stdout)
        self.assertEqual(got["state"], "ADAPTER_STATE_LOADED")
        self.assertEqual(got["r"], 4)
        self.assertTrue(got["pinned"])
        self.assertIn("target modules", self.ctl("adapter", "get", "cli").stdout)

        # The adapter is used by OCR and named in --json.
        x = json.loads(self.ocr("--adapter", "cli", "--json", self.images[0]).stdout)
        self.assertEqual(x["adapter"], "cli")

        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "export")
            r = self.ctl("adapter", "export", "cli", "-o", out)
            self.assertIn("SHA-256 verified", r.stdout)
            src = os.path.join(self.root, "cpmd_written")
            self.assertEqual(sorted(os.listdir(out)), sorted(os.listdir(src)))
            for f in os.listdir(src):
                self.assertTrue(filecmp.cmp(os.path.join(src, f), os.path.join(out, f), shallow=False), f)
            self.assertEqual(sorted(os.listdir(d)), ["export"])  # no temporary folder left
            # An existing folder is never overwritten.
            self.assert_one_line_error(self.ctl("adapter", "export", "cli", "-o", out, ok=False), 2, "exists")
            # An unknown adapter leaves nothing behind.
            r = self.ctl("adapter", "export", "nope", "-o", os.path.join(d, "nope"), ok=False)
            self.assert_one_line_error(r, 1, "NOT_FOUND")
            self.assertEqual(sorted(os.listdir(d)), ["export"])

        r = self.ctl("adapter", "unload", "cli")
        self.assertIn("cli: registered", r.stdout)
        self.assertRegex(self.ctl("adapters").stdout, r"(?m)^cli\s+registered\s")
        self.assert_one_line_error(self.ctl("adapter", "unload", "nope", ok=False), 1, "NOT_FOUND")
        self.assert_one_line_error(self.ctl("adapter", "get", "nope", ok=False), 1, "NOT_FOUND")

    def test_help_has_examples(self):
        for cmd in (["ocr"], ["adapters"], ["adapter", "load"], ["adapter", "unload"], ["adapter", "get"],
                    ["adapter", "export"]):
            r = cpmctl(*cmd, "--help")
            self.assertEqual(r.returncode, 0, cmd)
            self.assertIn("Example", r.stdout, cmd)
        self.assertEqual(cpmctl("adapter").returncode, 2)
        self.assertEqual(cpmctl("adapter", "export", "x").returncode, 2)


if __name__ == "__main__":
    unittest.main()
