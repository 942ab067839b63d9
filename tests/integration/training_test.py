# SPDX-License-Identifier: Apache-2.0
"""Fine-tuning jobs through the real cpmd (tiny random checkpoint, CPU), driven by a Python client
generated from our .proto files (Debian's python3-grpcio): dataset uploads and their refusals,
submission checks, a job watched to SUCCEEDED whose adapter then serves OCR, the queue, cancelling,
paging, the training metrics, and kill -9 in the middle of a job followed by a restart that resumes
it with a history free of gaps and duplicates.
"""
import hashlib
import os
import signal
import tempfile
import time
import unittest

import grpc

from cpmd_harness import Daemon, dataset_dir, make_tiny_model

from cpm.v1 import (adapters_pb2, adapters_pb2_grpc, common_pb2, ocr_pb2, ocr_pb2_grpc, training_pb2,
                    training_pb2_grpc)

S = training_pb2  # short alias for the enums


def labels_of(root):
    import csv
    with open(os.path.join(root, "labels.csv"), newline="") as f:
        return {row["image_path"]: row["text"] for row in csv.DictReader(f)}


def upload_messages(root, dataset_file="labels.csv", chunk=4096, tamper=None):
    """A manifest of every file under `root`, then their chunks. `tamper(messages)` may edit them."""
    files = []
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            with open(path, "rb") as f:
                blob = f.read()
            files.append((rel, blob))
    manifest = S.DatasetManifest(name="fit", dataset_file=dataset_file, files=[
        common_pb2.FileInfo(path=rel, size_bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest())
        for rel, blob in files])
    messages = [S.UploadDatasetRequest(manifest=manifest)]
    for rel, blob in files:
        for offset in range(0, max(len(blob), 1), chunk):
            part = blob[offset:offset + chunk]
            messages.append(S.UploadDatasetRequest(chunk=common_pb2.FileChunk(
                path=rel, offset=offset, data=part, last=offset + chunk >= len(blob))))
    if tamper:
        messages = tamper(messages)
    return messages


def spec(dataset_id, name="", **fields):
    s = S.JobSpec(name=name, dataset_id=dataset_id, max_steps=6, logging_steps=2, save_steps=3, eval_steps=0,
                  eval_max_new_tokens=4, data=S.DataOptions(eval_size=1),
                  lora=S.LoraOptions(r=4), optimizer=S.OptimizerOptions(learning_rate=1e-3))
    for k, v in fields.items():
        if isinstance(v, dict):
            getattr(s, k).MergeFrom(type(getattr(s, k))(**v))
        else:
            setattr(s, k, v)
    return s


class Client:
    def __init__(self, address):
        self.channel = grpc.insecure_channel(address)
        self.training = training_pb2_grpc.TrainingStub(self.channel)
        self.adapters = adapters_pb2_grpc.AdaptersStub(self.channel)
        self.ocr = ocr_pb2_grpc.OcrStub(self.channel)

    def upload(self, root, **kw):
        return self.training.UploadDataset(iter(upload_messages(root, **kw)), timeout=60)

    def watch(self, job_id, from_step=None, timeout=300):
        request = S.WatchJobRequest(id=job_id)
        if from_step is not None:
            request.from_step = from_step
        return list(self.training.WatchJob(request, timeout=timeout))

    def wait_state(self, job_id, states, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.training.GetJob(S.GetJobRequest(id=job_id), timeout=10)
            if job.state in states:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still {S.JobState.Name(job.state)} after {timeout}s")

    def close(self):
        self.channel.close()


def progress_steps(events):
    return [e.progress.step for e in events if e.HasField("progress")]


def states(events):
    return [(S.JobState.Name(e.state_change.__getattribute__("from")), S.JobState.Name(e.state_change.to))
            for e in events if e.HasField("state_change")]


class TrainingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cpmd-train-")
        cls.model = make_tiny_model(os.path.join(cls.tmp.name, "tiny"))
        cls.data = dataset_dir(os.path.join(cls.tmp.name, "fit"))
        cls.roots = os.path.join(cls.tmp.name, "roots")
        dataset_dir(os.path.join(cls.roots, "on-host"))
        cls.daemon = Daemon("--model", cls.model, "--dataset-roots", cls.roots).start()
        cls.daemon.wait_serving("cpm.v1.Training")
        cls.client = Client(cls.daemon.address)
        cls.dataset = cls.client.upload(cls.data)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.daemon.stop_cleanly()
        cls.tmp.cleanup()

    def assert_code(self, code, call, *args, contains=None, **kw):
        with self.assertRaises(grpc.RpcError) as e:
            call(*args, **kw)
        self.assertEqual(e.exception.code(), code, e.exception.details())
        if contains:
            self.assertIn(contains, e.exception.details())
        return e.exception.details()

    def staging_leftovers(self):
        root = os.path.join(self.daemon.data_dir, "datasets")
        return [n for n in os.listdir(root) if n.startswith(".")]

    def test_upload_stores_the_files_and_counts_the_records(self):
        d = self.dataset
        self.assertTrue(d.id.startswith("ds-"))
        self.assertEqual((d.name, d.format, d.num_records, d.num_files), ("fit", S.DATASET_FORMAT_CSV, 4, 5))
        stored = os.path.join(self.daemon.data_dir, "datasets", d.id)
        for rel in ("labels.csv", "images/2.png"):
            with open(os.path.join(self.data, rel), "rb") as a, open(os.path.join(stored, rel), "rb") as b:
                self.assertEqual(a.read(), b.read())
        listed = self.client.training.ListDatasets(S.ListDatasetsRequest(), timeout=10).datasets
        self.assertIn(d.id, [x.id for x in listed])

    def test_an_empty_file_uploads_with_its_one_empty_chunk(self):
        root = dataset_dir(os.path.join(self.tmp.name, "with-empty"), rows=2)
        open(os.path.join(root, "NOTES"), "w").close()
        d = self.client.upload(root)
        self.assertEqual((d.num_records, d.num_files), (2, 4))
        self.assertEqual(os.path.getsize(os.path.join(self.daemon.data_dir, "datasets", d.id, "NOTES")), 0)

    def test_an_upload_larger_than_the_free_disk_is_refused_before_its_bytes(self):
        stat = os.statvfs(self.daemon.data_dir)
        free = stat.f_bavail * stat.f_frsize
        size = free + 1
        if size > 64 << 30:
            self.skipTest(f"{free} bytes free: more than the 64 GiB an upload may hold")

        def huge(messages):
            messages[0].manifest.files[0].size_bytes = size
            return messages[:1]
        self.assert_code(grpc.StatusCode.RESOURCE_EXHAUSTED, self.client.upload, self.data, tamper=huge,
                         contains="free some space")

    def test_bad_uploads_are_refused_and_leave_nothing(self):
        before = len(self.client.training.ListDatasets(S.ListDatasetsRequest(), timeout=10).datasets)
        invalid = grpc.StatusCode.INVALID_ARGUMENT

        def edit_manifest(fn):
            def tamper(messages):
                fn(messages[0].manifest)
                return messages
            return tamper

        def flip_a_byte(messages):
            chunk = messages[-1].chunk
            chunk.data = bytes([chunk.data[0] ^ 1]) + chunk.data[1:]
            return messages

        cases = {
            "must be the DatasetManifest": lambda m: m[1:],
            "listed twice": edit_manifest(lambda m: m.files.append(m.files[0])),
            "'..' component": edit_manifest(lambda m: setattr(m.files[0], "path", "../escape.csv")),
            "absolute": edit_manifest(lambda m: setattr(m.files[1], "path", "/etc/passwd")),
            "not among its files": edit_manifest(lambda m: setattr(m, "dataset_file", "other.csv")),
            "64 lower-case hex": edit_manifest(lambda m: setattr(m.files[0], "sha256", "abc")),
            "SHA-256 of the bytes received": flip_a_byte,
            "does not list": lambda m: m + [S.UploadDatasetRequest(chunk=common_pb2.FileChunk(path="x.png", data=b"1"))],
            "stream ended before": lambda m: m[:-1],
            "expected 0": lambda m: m[:1] + [S.UploadDatasetRequest(chunk=common_pb2.FileChunk(
                path=m[1].chunk.path, offset=5, data=b"x"))],
            "is a file and also a folder of": edit_manifest(lambda m: m.files.append(common_pb2.FileInfo(
                path="labels.csv/x", size_bytes=0, sha256=hashlib.sha256(b"").hexdigest()))),
        }
        for expected, tamper in cases.items():
            with self.subTest(expected):
                self.assert_code(invalid, self.client.upload, self.data, tamper=tamper, contains=expected)
        # Every record unusable (its image is missing).
        broken = dataset_dir(os.path.join(self.tmp.name, "broken"), rows=1)
        os.remove(os.path.join(broken, "images", "2.png"))
        self.assert_code(invalid, self.client.upload, broken, contains="line 2")
        self.assertEqual(self.staging_leftovers(), [])
        after = len(self.client.training.ListDatasets(S.ListDatasetsRequest(), timeout=10).datasets)
        self.assertEqual(after, before)

    def test_submission_is_checked_up_front(self):
        t = self.client.training
        submit = lambda s, **kw: t.SubmitJob(S.SubmitJobRequest(spec=s, **kw), timeout=60)
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        self.assert_code(invalid, submit, S.JobSpec(), contains="spec.dataset is required")
        self.assert_code(grpc.StatusCode.NOT_FOUND, submit, spec("ds-000000000000"), contains="ListDatasets")
        self.assert_code(grpc.StatusCode.PERMISSION_DENIED, submit,
                         S.JobSpec(dataset_path=os.path.join(self.data, "labels.csv")), contains="dataset roots")
        self.assert_code(grpc.StatusCode.PERMISSION_DENIED, submit, S.JobSpec(dataset_path="../fit/labels.csv"),
                         contains="dataset roots")
        # A file on the daemon host under a configured root, relative to the first one.
        on_host = submit(S.JobSpec(dataset_path="on-host/labels.csv", data=S.DataOptions(eval_size=1)),
                         validate_only=True)
        self.assertEqual((on_host.num_train_examples, on_host.num_eval_examples), (3, 1))
        self.assert_code(invalid, submit, spec(self.dataset.id, optimizer={"learning_rate": -1}),
                         contains="learning_rate")
        self.assert_code(invalid, submit, spec(self.dataset.id, lora={"dropout": 1.5}), contains="lora.dropout")
        self.assert_code(invalid, submit, spec(self.dataset.id, name="no spaces"), contains="spec.name")
        # Full fine-tuning of the LLM (no LoRA) is accepted.
        full = submit(spec(self.dataset.id, tune_llm=True, lora={"use_lora": False}), validate_only=True)
        self.assertTrue(full.spec.tune_llm)
        self.assertFalse(full.spec.lora.use_lora)
        # A dataset with one malformed record among good ones: refused with its line, unless skipped.
        mixed_root = dataset_dir(os.path.join(self.tmp.name, "mixed"), extra_lines=["images/missing.png,x"])
        mixed = self.client.upload(mixed_root)
        self.assertEqual(mixed.num_records, 4)
        self.assert_code(invalid, submit, spec(mixed.id), contains="line 6")
        job = submit(spec(mixed.id, data={"eval_size": 1, "skip_bad_records": True}), validate_only=True)
        self.assertEqual((job.num_train_examples, job.num_eval_examples, job.num_skipped_records), (3, 1, 1))
        # validate_only stores nothing; every default is filled in.
        self.assert_code(grpc.StatusCode.NOT_FOUND, t.GetJob, S.GetJobRequest(id=job.id), timeout=10)
        self.assertEqual(job.spec.name, f"job-{job.id}")
        self.assertEqual((job.spec.lora.alpha, job.spec.optimizer.adam_beta2, job.spec.save_total_limit),
                         (16, 0.95, 10))
        self.assertEqual(job.spec.precision, S.PRECISION_FP32)
        self.assertEqual(job.spec.data.format, S.DATASET_FORMAT_CSV)
        self.assert_code(grpc.StatusCode.NOT_FOUND, t.GetJob, S.GetJobRequest(id="nope"), timeout=10)
        self.assert_code(grpc.StatusCode.INVALID_ARGUMENT, t.GetJob, S.GetJobRequest(), timeout=10,
                         contains="id is required")
        self.assert_code(grpc.StatusCode.NOT_FOUND, t.CancelJob, S.CancelJobRequest(id="nope"), timeout=10)
        self.assert_code(grpc.StatusCode.NOT_FOUND, lambda: self.client.watch("nope"))

    def test_job_trains_registers_its_adapter_and_serves_it(self):
        t = self.client.training
        first = t.SubmitJob(S.SubmitJobRequest(spec=spec(self.dataset.id, name="fit-a")), timeout=60)
        second = t.SubmitJob(S.SubmitJobRequest(spec=spec(self.dataset.id, name="fit-b", max_steps=50)), timeout=60)
        self.assertEqual(second.state, S.JOB_STATE_QUEUED)
        self.assertGreaterEqual(second.queue_position, 1)
        self.assert_code(grpc.StatusCode.ALREADY_EXISTS, t.SubmitJob,
                         S.SubmitJobRequest(spec=spec(self.dataset.id, name="fit-a")), timeout=60)

        events = self.client.watch(first.id, from_step=0)
        self.assertEqual(progress_steps(events), [1, 2, 4, 6])
        self.assertEqual([e.checkpoint.step for e in events if e.HasField("checkpoint")], [3, 6])
        evals = [e.eval for e in events if e.HasField("eval")]
        self.assertEqual([(e.step, e.num_examples) for e in evals], [(6, 1)])
        self.assertEqual(states(events), [("JOB_STATE_UNSPECIFIED", "JOB_STATE_QUEUED"),
                                          ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING"),
                                          ("JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED")])
        last = [e.progress for e in events if e.HasField("progress")][-1]
        self.assertEqual((last.step, last.max_steps), (6, 6))
        self.assertGreater(last.tokens_per_second, 0)
        self.assertGreater(last.tokens_seen, 0)
        self.assertAlmostEqual(last.epoch, 6 / 3)  # 3 training examples, one per step
        job = t.GetJob(S.GetJobRequest(id=first.id), timeout=10)
        self.assertEqual((job.state, job.adapter_name, job.checkpoint_step), (S.JOB_STATE_SUCCEEDED, "fit-a", 6))
        self.assertTrue(job.HasField("end_time") and job.HasField("start_time"))
        self.assert_code(grpc.StatusCode.FAILED_PRECONDITION, t.CancelJob, S.CancelJobRequest(id=first.id),
                         timeout=10, contains="already ended")
        # A watcher that re-attaches after step 2 gets the rest; one without from_step a snapshot.
        self.assertEqual(progress_steps(self.client.watch(first.id, from_step=3)), [4, 6])
        # Re-attaching after the last progress event still gets what came after it, and the end.
        tail = self.client.watch(first.id, from_step=7)
        self.assertEqual([e.WhichOneof("event") for e in tail], ["checkpoint", "eval", "state_change"])
        self.assertEqual(tail[-1].state_change.to, S.JOB_STATE_SUCCEEDED)
        snapshot = self.client.watch(first.id)
        self.assertEqual(len(snapshot), 1)
        self.assertEqual(snapshot[0].snapshot.state, S.JOB_STATE_SUCCEEDED)

        # The adapter is registered under the job's name and serves OCR.
        adapter = self.client.adapters.LoadAdapter(adapters_pb2.LoadAdapterRequest(name="fit-a"), timeout=60)
        self.assertEqual(adapter.name, "fit-a")
        with open(os.path.join(self.data, "images", "2.png"), "rb") as f:
            image = f.read()
        ocr = lambda name: self.client.ocr.Recognize(ocr_pb2.RecognizeRequest(
            image=image, adapter=name, decoding=ocr_pb2.DecodingOptions(max_new_tokens=8)), timeout=120)
        self.assertNotEqual(ocr("fit-a").text, ocr("").text)

        # The second job runs next; cancel it while it runs, then it keeps its last checkpoint.
        self.client.wait_state(second.id, [S.JOB_STATE_RUNNING])
        cancelled = t.CancelJob(S.CancelJobRequest(id=second.id), timeout=10)
        self.assertIn(cancelled.state, [S.JOB_STATE_CANCELLING, S.JOB_STATE_CANCELLED])
        rest = self.client.watch(second.id, from_step=0)
        self.assertEqual(states(rest)[-1], ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"))
        self.assertEqual(t.GetJob(S.GetJobRequest(id=second.id), timeout=10).state, S.JOB_STATE_CANCELLED)

        # Filters and paging.
        done = t.ListJobs(S.ListJobsRequest(states=[S.JOB_STATE_SUCCEEDED]), timeout=10)
        self.assertIn(first.id, [j.id for j in done.jobs])
        self.assertNotIn(second.id, [j.id for j in done.jobs])
        page = t.ListJobs(S.ListJobsRequest(page=common_pb2.PageRequest(page_size=1)), timeout=10)
        self.assertEqual(len(page.jobs), 1)
        self.assertGreaterEqual(page.total_size, 2)
        self.assertTrue(page.next_page_token)
        after = t.ListJobs(S.ListJobsRequest(page=common_pb2.PageRequest(page_size=1, page_token=page.next_page_token)),
                           timeout=10)
        self.assertEqual(len(after.jobs), 1)
        self.assertNotEqual(after.jobs[0].id, page.jobs[0].id)
        self.assert_code(grpc.StatusCode.INVALID_ARGUMENT, t.ListJobs,
                         S.ListJobsRequest(page=common_pb2.PageRequest(page_token="x")), timeout=10)

        _, text = self.daemon.scrape()
        lines = text.splitlines()
        for expected in ('cpm_train_step{train_job="fit-a"} 6', 'cpm_train_max_steps{train_job="fit-a"} 6',
                         'cpm_train_jobs_finished_total{state="failed"} 0'):
            self.assertIn(expected, lines)
        for prefix in ('cpm_train_jobs_finished_total{state="succeeded"} ', 'cpm_train_eval_loss{train_job="fit-a"} ',
                       'cpm_train_tokens_total{train_job="fit-a"} ', 'cpm_train_jobs{state="succeeded"} '):
            self.assertTrue(any(l.startswith(prefix) and float(l.split()[-1]) > 0 for l in lines), prefix)

    def test_a_queued_job_is_cancelled_at_once(self):
        t = self.client.training
        blocker = t.SubmitJob(S.SubmitJobRequest(spec=spec(self.dataset.id, max_steps=40)), timeout=60)
        queued = t.SubmitJob(S.SubmitJobRequest(spec=spec(self.dataset.id)), timeout=60)
        job = t.CancelJob(S.CancelJobRequest(id=queued.id), timeout=10)
        self.assertEqual(job.state, S.JOB_STATE_CANCELLED)
        self.assertIn("before it ran", job.error)
        t.CancelJob(S.CancelJobRequest(id=blocker.id), timeout=10)
        self.client.wait_state(blocker.id, [S.JOB_STATE_CANCELLED])


class CrashRecoveryTest(unittest.TestCase):
    """kill -9 while a job trains; the restarted daemon resumes it from its last checkpoint."""

    def crash_and_restart(self, name, kill_at, sig=signal.SIGKILL, **fields):
        """Runs a job until `kill_at(event)`, stops cpmd with `sig`, restarts it on the same data
        directory and returns the job's whole history and its final state."""
        with tempfile.TemporaryDirectory(prefix="cpmd-crash-") as tmp:
            model = make_tiny_model(os.path.join(tmp, "tiny"))
            data = dataset_dir(os.path.join(tmp, "fit"))
            var = os.path.join(tmp, "var")
            daemon = Daemon("--model", model, data_dir=var).start()
            try:
                daemon.wait_serving("cpm.v1.Training")
                client = Client(daemon.address)
                job = client.training.SubmitJob(S.SubmitJobRequest(spec=spec(
                    client.upload(data).id, name=name, **fields)), timeout=60)
                for event in client.training.WatchJob(S.WatchJobRequest(id=job.id, from_step=0), timeout=300):
                    if kill_at(event):
                        break
                daemon.proc.send_signal(sig)
                code = daemon.proc.wait(timeout=120)
                if sig == signal.SIGTERM:
                    self.assertEqual(code, 0, daemon.log())
                client.close()
            finally:
                daemon.close()
            daemon = Daemon("--model", model, data_dir=var).start()
            try:
                client = Client(daemon.address)
                events = client.watch(job.id, from_step=0)
                final = client.training.GetJob(S.GetJobRequest(id=job.id), timeout=10)
                resumed = daemon.wait_for_log("job training")
                # SIGTERM while nothing runs: a clean exit.
                client.close()
                self.assertEqual(daemon.stop(), 0, daemon.log())
                return events, final, resumed
            finally:
                daemon.close()

    def test_kill_during_training_then_restart_completes_the_job(self):
        # Killed at step 5, past the checkpoint of step 3.
        steps = 12
        events, final, resumed = self.crash_and_restart(
            "crash", lambda e: e.HasField("progress") and e.progress.step >= 5,
            max_steps=steps, logging_steps=1, save_steps=3)
        self.assertEqual(progress_steps(events), list(range(1, steps + 1)), "every step exactly once")
        transitions = states(events)
        self.assertIn(("JOB_STATE_RUNNING", "JOB_STATE_PAUSED"), transitions)
        self.assertIn(("JOB_STATE_PAUSED", "JOB_STATE_RUNNING"), transitions)
        self.assertEqual(transitions[-1], ("JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"))
        self.assertEqual((final.state, final.adapter_name), (S.JOB_STATE_SUCCEEDED, "crash"))
        self.assertGreaterEqual(int(resumed["resumed_from"]), 3)

    def test_sigterm_checkpoints_and_pauses_the_job_and_the_restart_resumes_it(self):
        # Stopped cleanly at step ~5 with checkpoints every 100 steps: the pause writes one at its
        # step and reports that step, so nothing is trained twice.
        steps = 10
        events, final, resumed = self.crash_and_restart(
            "pause", lambda e: e.HasField("progress") and e.progress.step >= 5, sig=signal.SIGTERM,
            max_steps=steps, logging_steps=5, save_steps=100)
        seen = progress_steps(events)
        self.assertEqual(seen, sorted(set(seen)), "no step twice")
        self.assertEqual(seen[-1], steps)
        paused_at = int(resumed["resumed_from"])
        self.assertGreaterEqual(paused_at, 5)
        self.assertIn(paused_at, seen, "the pause reports the step it stopped at")
        self.assertIn(paused_at, [e.checkpoint.step for e in events if e.HasField("checkpoint")])
        self.assertIn(("JOB_STATE_RUNNING", "JOB_STATE_PAUSED"), states(events))
        self.assertEqual((final.state, final.adapter_name), (S.JOB_STATE_SUCCEEDED, "pause"), final.error)
        last = [e.progress for e in events if e.HasField("progress")][-1]
        self.assertGreater(last.tokens_seen, 0)

    def test_kill_after_the_final_checkpoint_still_succeeds(self):
        # The last step's checkpoint is written before the final evaluation (made slow here) and the
        # adapter: a restart in between has only the end left to do.
        events, final, _ = self.crash_and_restart(
            "end", lambda e: e.HasField("checkpoint") and e.checkpoint.step == 4,
            max_steps=4, logging_steps=1, save_steps=2, eval_max_new_tokens=256)
        self.assertEqual(progress_steps(events), [1, 2, 3, 4])
        self.assertIn(("JOB_STATE_RUNNING", "JOB_STATE_PAUSED"), states(events), "killed before the end")
        self.assertEqual((final.state, final.adapter_name), (S.JOB_STATE_SUCCEEDED, "end"), final.error)


if __name__ == "__main__":
    unittest.main()
