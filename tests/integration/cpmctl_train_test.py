# SPDX-License-Identifier: Apache-2.0
"""cpmctl's training commands against the real cpmd on loopback (tiny random checkpoint, CPU): dataset
render / prepare / check, train with an upload and --follow to SUCCEEDED, the job's adapter answering
closer to the labels than the base model, jobs / job / watch
--from-step / cancel / datasets, Ctrl-C detaching from a follow, --json outputs, the config file and
environment, YAML job specs, the metrics summary, and the exit codes and one-line errors.

Jobs run one at a time in the daemon, so every test keeps its jobs short (a few steps of the tiny
model) and waits for conditions, never for a fixed time.
"""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from cpmd_harness import CpmctlAssertions, Daemon, binary, cpmctl, dataset_dir, make_tiny_model

# Short jobs: a step of the tiny model takes about a second on a loaded 2-core machine.
SHORT = ("--lora-r", "4", "--logging-steps", "1", "--eval-steps", "0", "--eval-max-new-tokens", "4",
         "--eval-size", "1")


def fit_dataset(root, rows=6, extra_lines=()):
    """The labels.csv of harness.dataset_dir: the first `rows` fit32 formulas, plus raw lines."""
    return os.path.join(dataset_dir(root, rows, extra_lines), "labels.csv")


def steps_in(text):
    """The step numbers of the progress lines ("step 3/6 ...")."""
    return [int(m) for m in re.findall(r"^step (\d+)/\d+", text, re.M)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CpmctlTrainTest(CpmctlAssertions, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cpmctl-train-")
        model = make_tiny_model(os.path.join(cls.tmp.name, "tiny"))
        cls.daemon = Daemon("--model", model).start()
        cls.daemon.wait_serving("cpm.v1.Ocr")
        cls.labels = fit_dataset(os.path.join(cls.tmp.name, "fit"))
        # One uploaded dataset for the tests that need a job but not an upload of their own.
        r = cls.run_ctl("train", cls.labels, "--validate-only", *SHORT)
        assert r.returncode == 0, r.stderr
        cls.dataset_id = re.search(r"as dataset (\S+) ", r.stderr).group(1)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop_cleanly()
        cls.tmp.cleanup()

    @classmethod
    def run_ctl(cls, *args, env_extra=None, timeout=300):
        return cpmctl("--server", cls.daemon.address, "--timeout", "60", *args, env_extra=env_extra,
                      timeout=timeout)

    def ctl(self, *args, ok=True, **kwargs):
        r = self.run_ctl(*args, **kwargs)
        if ok:
            self.assertEqual(r.returncode, 0, f"cpmctl {' '.join(args)}:\n{r.stdout}\n{r.stderr}")
        return r

    def job(self, job_id):
        return json.loads(self.ctl("--json", "job", job_id).stdout)

    def wait_for(self, what, predicate, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        self.fail(f"timed out after {timeout}s waiting for {what}")

    def test_render_prepare_check_then_train_with_upload_and_follow(self):
        d = os.path.join(self.tmp.name, "rendered")
        os.makedirs(d)
        formulas = os.path.join(d, "formulas.txt")
        with open(formulas, "w") as f:
            f.write("x^{2}+y^{2}=z^{2}\n\\frac{a}{b}\n\\undefinedmacro{x}\n\n\\sum_{i=1}^{n} i\n"
                    "E=mc^{2}\n\\sqrt{2}\n")
        r = self.ctl("dataset", "render", formulas, "--out", d)
        self.assertIn("rendered 5 of 6 formulas", r.stdout)
        self.assertEqual(r.stderr.count("skipped"), 1, r.stderr)
        self.assertIn("formulas.txt:3: skipped: Undefined control sequence", r.stderr)
        with open(os.path.join(d, "labels.csv")) as f:
            self.assertEqual(f.readline().strip(), "image_path,text")
            self.assertEqual(len(f.read().splitlines()), 5)

        r = self.ctl("--json", "dataset", "prepare", os.path.join(d, "labels.csv"), "--out", d, "--eval-size", "1")
        prepared = json.loads(r.stdout)
        self.assertEqual((prepared["train_records"], prepared["eval_records"]), (4, 1))
        with open(prepared["train"]) as f:
            record = json.load(f)[0]
        self.assertEqual(set(record), {"id", "image", "conversations"})
        self.assertTrue(record["conversations"][0]["content"].startswith("<image>\n"))
        self.assertEqual(record["conversations"][1]["role"], "assistant")
        r = self.ctl("dataset", "check", prepared["train"])
        self.assertIn("4 records, no problems found", r.stdout)

        r = self.ctl("train", prepared["train"], "--name", "rendered", "--max-steps", "4", *SHORT, "--follow")
        lines = r.stdout.splitlines()
        job_id = lines[0]
        self.assertRegex(job_id, r"^[0-9a-f]+$")
        self.assertEqual(steps_in(r.stdout), [1, 2, 3, 4])
        self.assertIn("state running -> succeeded", r.stdout)
        self.assertIn(f"job {job_id} succeeded; adapter rendered is registered", r.stdout)
        dataset_id = re.search(r"uploaded .*train.json as dataset (\S+) \((\d+) records, (\d+) files", r.stderr)
        self.assertIsNotNone(dataset_id, r.stderr)
        self.assertEqual(dataset_id.group(2), "4")
        self.assertEqual(dataset_id.group(3), "5")  # train.json + 4 images

        job = self.job(job_id)
        self.assertEqual(job["state"], "JOB_STATE_SUCCEEDED")
        self.assertEqual(job["spec"]["dataset_id"], dataset_id.group(1))
        self.assertEqual(job["spec"]["lora"]["r"], 4)
        self.assertEqual(job["adapter_name"], "rendered")
        table = self.ctl("jobs").stdout
        self.assertRegex(table, rf"(?m)^{job_id}\s+rendered\s+succeeded\s+4/4")
        details = self.ctl("job", job_id).stdout
        self.assertRegex(details, r"(?m)^state\s+succeeded$")
        self.assertRegex(details, r"(?m)^progress\s+step 4/4")
        self.assertIn(dataset_id.group(1), self.ctl("datasets").stdout)
        self.assertIn("rendered", self.ctl("adapters").stdout)

        # Re-attaching replays the recorded history from the step asked for.
        r = self.ctl("watch", job_id, "--from-step", "3")
        self.assertEqual(steps_in(r.stdout), [3, 4])
        self.assertIn("succeeded", r.stdout)
        events = [json.loads(l) for l in self.ctl("--json", "watch", job_id, "--from-step", "1").stdout.splitlines()]
        self.assertEqual([int(e["progress"]["step"]) for e in events if "progress" in e], [1, 2, 3, 4])
        self.assertEqual([e["state_change"]["to"] for e in events if "state_change" in e][-1], "JOB_STATE_SUCCEEDED")

    def test_the_trained_adapter_brings_ocr_closer_to_the_labels(self):
        # 150 steps on 4 formulas (about a minute here): the random base model answers with tokens that
        # share nothing with the labels; the job's adapter answers in LaTeX closer to them.
        d = os.path.join(self.tmp.name, "closer")
        labels = fit_dataset(d, rows=4)
        self.ctl("train", labels, "--name", "closer", "--max-steps", "150", "--lr", "3e-3", "--lora-r", "16",
                 "--lora-alpha", "32", "--lora-dropout", "0", "--warmup-ratio", "0", "--weight-decay", "0",
                 "--logging-steps", "20", "--eval-size", "0", "--eval-max-new-tokens", "4", "--follow")
        scores = {}
        for adapter in ("", "closer"):
            r = self.ctl("--json", "ocr", "--max-new-tokens", "40", "--eval", labels,
                         *(("--adapter", adapter) if adapter else ()))
            scores[adapter] = json.loads(r.stdout)
            self.assertEqual(scores[adapter]["count"], 4)
        base, tuned = scores[""], scores["closer"]
        print(f"edit distance to the labels: base {base['normalized_edit_distance']:.3f}, "
              f"adapter {tuned['normalized_edit_distance']:.3f}; BLEU-4 {base['bleu4']:.3f} -> {tuned['bleu4']:.3f}")
        self.assertLess(tuned["normalized_edit_distance"], base["normalized_edit_distance"] - 0.05)
        self.assertGreaterEqual(tuned["bleu4"], base["bleu4"])

    def test_ctrl_c_detaches_and_the_job_keeps_running(self):
        args = [binary("cpmctl"), "--server", self.daemon.address, "train", "--dataset-id", self.dataset_id,
                "--name", "detached", "--max-steps", "8", *SHORT, "--follow"]
        with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
            try:
                job_id = proc.stdout.readline().strip()
                seen = []
                while not seen or seen[-1] < 2:  # two steps shown, then Ctrl-C
                    line = proc.stdout.readline()
                    if not line:
                        self.fail("the follow ended before step 2: " + proc.stderr.read())
                    seen += steps_in(line)
                proc.send_signal(signal.SIGINT)
                # read() and not communicate(): communicate skips what readline() has buffered.
                out, err = proc.stdout.read(), proc.stderr.read()
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
        self.assertEqual(proc.returncode, 130, err)
        last = max(seen + steps_in(out))
        self.assertIn(f"detached from job {job_id} after step {last}; it keeps running", err)
        self.assertIn(f"Re-attach: cpmctl watch {job_id} --from-step {last + 1}", err)
        self.assertNotEqual(self.job(job_id)["state"], "JOB_STATE_CANCELLED")

        # The suggested command picks up where the follow stopped and sees the job to its end.
        r = self.ctl("watch", job_id, "--from-step", str(last + 1))
        steps = steps_in(r.stdout)
        self.assertEqual(steps, list(range(last + 1, 9)))
        self.assertIn("succeeded", r.stdout)

    def test_cancel(self):
        r = self.ctl("train", "--dataset-id", self.dataset_id, "--name", "to-cancel", "--max-steps", "500", *SHORT)
        job_id = r.stdout.strip()
        self.assertIn(f"follow it: cpmctl watch {job_id}", r.stderr)
        self.wait_for("the job to run", lambda: self.job(job_id)["state"] == "JOB_STATE_RUNNING")
        r = self.ctl("cancel", job_id)
        self.assertIn(f"job {job_id} is cancelling", r.stdout)
        r = self.ctl("watch", job_id, ok=False)
        self.assert_one_line_error(r, 1, f"job {job_id} was cancelled")
        self.assertEqual(self.job(job_id)["state"], "JOB_STATE_CANCELLED")
        r = self.ctl("cancel", job_id, ok=False)
        self.assert_one_line_error(r, 1, "FAILED_PRECONDITION")
        table = self.ctl("jobs", "--state", "cancelled").stdout
        self.assertIn(job_id, table)
        self.assertNotIn("succeeded", table)

    def test_bad_datasets_are_listed_with_their_lines(self):
        d = os.path.join(self.tmp.name, "bad")
        labels = fit_dataset(d, rows=3, extra_lines=["images/missing.png,x", "images/2.png,"])
        r = self.ctl("dataset", "check", labels, ok=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("2 of 5 records have problems", r.stdout)
        self.assertRegex(r.stdout, r"line 5: missing image \S+missing.png")
        self.assertIn("line 6: empty answer (turn 2)", r.stdout)
        problems = json.loads(self.ctl("--json", "dataset", "check", labels, ok=False).stdout)["problems"]
        self.assertEqual([p["number"] for p in problems], [5, 6])

        # train checks before it uploads: nothing reaches the daemon.
        before = self.ctl("--json", "datasets").stdout
        r = self.ctl("train", labels, ok=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertIn("line 5: missing image", r.stderr)
        self.assertIn("--skip-bad-records", r.stderr)
        self.assertEqual(self.ctl("--json", "datasets").stdout, before)
        r = self.ctl("train", labels, "--skip-bad-records", "--validate-only", *SHORT)
        self.assertIn("skipping line 5: missing image", r.stderr)
        self.assertIn("valid: nothing was started", r.stdout)

        # prepare refuses the same records, and writes nothing.
        r = self.ctl("dataset", "prepare", labels, "--out", d, ok=False)
        self.assertEqual(r.returncode, 1)
        self.assertFalse(os.path.exists(os.path.join(d, "train.json")))

    def test_daemon_errors_are_one_line_with_the_code(self):
        self.assert_one_line_error(self.ctl("job", "no-such-job", ok=False), 1, "NOT_FOUND", "no-such-job")
        self.assert_one_line_error(self.ctl("watch", "no-such-job", ok=False), 1, "NOT_FOUND")
        self.assert_one_line_error(self.ctl("cancel", "no-such-job", ok=False), 1, "NOT_FOUND")
        r = self.ctl("train", "--dataset-id", self.dataset_id, "--name", "bad name!", "--validate-only", ok=False)
        self.assert_one_line_error(r, 1, "INVALID_ARGUMENT", "name")
        r = self.ctl("train", "--dataset-id", "ds-unknown", "--validate-only", ok=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)

    def test_usage_errors_exit_2_and_unreachable_exits_3(self):
        self.assert_one_line_error(self.ctl("train", ok=False), 2, "needs a dataset")
        self.assert_one_line_error(self.ctl("train", self.labels, "--lora-r", "0", ok=False), 2,
                                   "--lora-r: must be greater than 0")
        self.assert_one_line_error(self.ctl("train", self.labels, "--eval-size", "2", "--eval-fraction", "0.1",
                                            ok=False), 2, "excludes")
        self.assert_one_line_error(self.ctl("train", self.labels, "--dataset-id", "x", ok=False), 2)
        self.assert_one_line_error(self.ctl("jobs", "--state", "sleeping", ok=False), 2, "unknown state 'sleeping'")
        self.assert_one_line_error(self.ctl("train", "/no/such/data.json", ok=False), 2, "/no/such/data.json")
        self.assert_one_line_error(self.ctl("train", "--dataset-id", "x", "--config", "/no/spec.yaml", ok=False), 2)
        port = free_port()
        for args in (("jobs",), ("job", "x"), ("watch", "x"), ("cancel", "x"), ("datasets",), ("metrics",),
                     ("train", "--dataset-id", "x"), ("train", self.labels)):
            r = cpmctl("--server", f"127.0.0.1:{port}", "--timeout", "5", *args)
            self.assert_one_line_error(r, 3, f"cannot reach cpmd at 127.0.0.1:{port}")

    def test_dataset_path_on_the_daemon_host_skips_the_upload(self):
        inside = fit_dataset(os.path.join(self.daemon.data_dir, "datasets", "on-host"), rows=3)
        before = self.ctl("--json", "datasets").stdout
        job = json.loads(self.ctl("--json", "train", "--dataset-path", inside, "--validate-only", *SHORT).stdout)
        self.assertEqual(job["spec"]["dataset_path"], inside)
        self.assertEqual(job["num_train_examples"], "2")
        self.assertEqual(self.ctl("--json", "datasets").stdout, before)  # nothing uploaded
        outside = fit_dataset(os.path.join(self.tmp.name, "elsewhere"), rows=3)
        r = self.ctl("train", "--dataset-path", outside, "--validate-only", ok=False)
        self.assert_one_line_error(r, 1, "PERMISSION_DENIED", outside)

    def test_json_outputs(self):
        r = self.ctl("--json", "train", "--dataset-id", self.dataset_id, "--validate-only", "--max-steps", "3")
        job = json.loads(r.stdout)
        self.assertEqual(job["spec"]["max_steps"], "3")
        self.assertEqual(job["spec"]["optimizer"]["learning_rate"], 1e-6)  # the recipe's default, filled in
        jobs = json.loads(self.ctl("--json", "jobs").stdout)
        self.assertIn("jobs", jobs)
        datasets = json.loads(self.ctl("--json", "datasets").stdout)
        self.assertIn(self.dataset_id, [d["id"] for d in datasets["datasets"]])

    def test_config_file_environment_and_flags(self):
        home = tempfile.mkdtemp(dir=self.tmp.name)
        os.makedirs(os.path.join(home, "cpmctl"))
        config = os.path.join(home, "cpmctl", "config.json")
        with open(config, "w") as f:
            json.dump({"server": self.daemon.address, "timeout": 30}, f)
        env = {"XDG_CONFIG_HOME": home}
        r = cpmctl("datasets", env_extra=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(self.dataset_id, r.stdout)
        bad = f"127.0.0.1:{free_port()}"
        r = cpmctl("--timeout", "5", "datasets", env_extra={**env, "CPM_SERVER": bad})
        self.assert_one_line_error(r, 3, bad)  # the environment beats the file
        r = cpmctl("--server", self.daemon.address, "datasets", env_extra={**env, "CPM_SERVER": bad})
        self.assertEqual(r.returncode, 0, r.stderr)  # the flag beats the environment
        with open(config, "w") as f:
            json.dump({"server": self.daemon.address, "sever": "typo"}, f)
        self.assert_one_line_error(cpmctl("datasets", env_extra=env), 2, "unknown key \"sever\"")

    def test_yaml_and_json_job_specs_with_flags_on_top(self):
        spec = os.path.join(self.tmp.name, "spec.yaml")
        with open(spec, "w") as f:
            f.write("name: from-yaml\nmax_steps: 3\nlora:\n  r: 8\n  use_rslora: yes\n"
                    "optimizer:\n  learning_rate: 2e-4\n  lr_schedule: LR_SCHEDULE_LINEAR\n")
        job = json.loads(self.ctl("--json", "train", "--dataset-id", self.dataset_id, "--config", spec,
                                  "--validate-only").stdout)
        self.assertEqual(job["spec"]["name"], "from-yaml")
        self.assertEqual(job["spec"]["lora"]["r"], 8)
        self.assertTrue(job["spec"]["lora"]["use_rslora"])
        self.assertEqual(job["spec"]["optimizer"]["learning_rate"], 2e-4)
        self.assertEqual(job["spec"]["optimizer"]["lr_schedule"], "LR_SCHEDULE_LINEAR")
        job = json.loads(self.ctl("--json", "train", "--dataset-id", self.dataset_id, "--config", spec,
                                  "--lora-r", "2", "--validate-only").stdout)
        self.assertEqual(job["spec"]["lora"]["r"], 2)
        # A spec printed by `job --json` goes back in as a config file.
        printed = os.path.join(self.tmp.name, "printed.json")
        with open(printed, "w") as f:
            json.dump(job["spec"], f)
        again = json.loads(self.ctl("--json", "train", "--config", printed, "--validate-only").stdout)
        self.assertEqual(again["spec"]["lora"], job["spec"]["lora"])
        with open(spec, "w") as f:
            f.write("lora:\n  rank: 8\n")
        r = self.ctl("train", "--dataset-id", self.dataset_id, "--config", spec, ok=False)
        self.assert_one_line_error(r, 2, "spec.yaml", "rank")

    def test_metrics_summary(self):
        job_id = self.ctl("train", "--dataset-id", self.dataset_id, "--name", "metered", "--max-steps", "2", *SHORT,
                          "--follow").stdout.splitlines()[0]
        summary = json.loads(self.ctl("--json", "metrics").stdout)
        methods = {m["method"]: m for m in summary["requests"]["grpc"]}
        self.assertGreaterEqual(methods["cpm.v1.Training/SubmitJob"]["started"], 1)
        self.assertGreaterEqual(methods["cpm.v1.Training/WatchJob"]["started"], 1)
        self.assertIn("queue", summary)
        self.assertIn("training", summary)
        self.assertIn("jobs_by_state", summary["training"])
        metered = [j for j in summary["training"]["jobs"] if j["job"] in ("metered", job_id)]
        self.assertEqual(len(metered), 1, summary["training"])
        self.assertEqual((metered[0]["step"], metered[0]["max_steps"]), (2, 2))
        self.assertGreaterEqual(summary["training"]["jobs_by_state"]["succeeded"], 1)
        self.assertGreater(summary["process"]["resident_memory_bytes"], 0)
        text = self.ctl("metrics").stdout
        for heading in ("requests", "queue", "adapters", "training", "process"):
            self.assertRegex(text, rf"(?m)^{heading}")
        raw = self.ctl("metrics", "--raw").stdout
        self.assertIn("# TYPE cpm_train_jobs gauge", raw)
        r = self.ctl("metrics", "--url", f"http://127.0.0.1:{self.daemon.metrics_port}/metrics")
        self.assertIn("requests", r.stdout)


class CpmctlReattachTest(unittest.TestCase):
    """A follow cut off by a daemon restart says how to re-attach, and that command works once the
    daemon is back and has resumed the job."""

    def test_a_restart_ends_the_follow_with_the_reattach_command(self):
        with tempfile.TemporaryDirectory(prefix="cpmctl-reattach-") as tmp:
            model = make_tiny_model(os.path.join(tmp, "tiny"))
            data_dir = os.path.join(tmp, "var")
            labels = fit_dataset(os.path.join(tmp, "fit"), rows=4)
            args = ("--model", model, "--shutdown-grace-seconds", "5")
            first = Daemon(*args, data_dir=data_dir).start()
            try:
                first.wait_serving("cpm.v1.Ocr")
                with subprocess.Popen(
                        [binary("cpmctl"), "--server", first.address, "train", labels, "--name", "restarted",
                         "--max-steps", "10", *SHORT, "--save-steps", "2", "--follow"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
                    try:
                        job_id = proc.stdout.readline().strip()
                        seen = []
                        while not seen or seen[-1] < 3:
                            line = proc.stdout.readline()
                            if not line:
                                self.fail("the follow ended before step 3: " + proc.stderr.read())
                            seen += steps_in(line)
                        self.assertEqual(first.stop(), 0, first.log())
                        out, err = proc.stdout.read(), proc.stderr.read()
                        proc.wait(timeout=60)
                    finally:
                        if proc.poll() is None:
                            proc.kill()
            finally:
                first.close()
            self.assertEqual(proc.returncode, 3, err)
            last = max(seen + steps_in(out))
            self.assertIn(f"lost cpmd at {first.address} while watching job {job_id}", err)
            self.assertIn(f"re-attach when it is back: cpmctl watch {job_id} --from-step {last + 1}", err)

            with Daemon(*args, data_dir=data_dir) as second:
                r = cpmctl("--server", second.address, "watch", job_id, "--from-step", str(last + 1), timeout=300)
                self.assertEqual(r.returncode, 0, r.stderr)
                # Every step after the last one seen, once, though the job was paused in between.
                self.assertEqual(steps_in(r.stdout), list(range(last + 1, 11)), r.stdout)
                self.assertIn("paused", r.stdout)
                self.assertIn(f"job {job_id} succeeded", r.stdout)
                self.assertEqual(second.stop(), 0, second.log())


if __name__ == "__main__":
    unittest.main()
