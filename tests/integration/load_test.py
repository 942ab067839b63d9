# SPDX-License-Identifier: Apache-2.0
"""OCR under load while a fine-tuning job trains, through the real cpmd (tiny random checkpoint,
CPU, float32) and Python clients generated from our .proto files (Debian's python3-grpcio).

64 client threads, each with its own channel, send Recognize calls (MAX_NEW_TOKENS tokens) for
different formula images of tests/data/images/formulas while a job of cpm.v1.Training runs. Every
call must be answered OK with the text the idle daemon gave for the same request before the load
(in float32 a batch row equals the request run alone), none may be lost (the daemon's own request
counter agrees), the job must have advanced during the load (the engine runs a training step at
least every few OCR cycles) and still reach SUCCEEDED. Latency p50/p99 and throughput go to stderr
(ctest -V shows them).

Half the calls decode greedily. The tiny random checkpoint gives (nearly) every image the same
greedy text, so those alone could not tell an answer delivered to the wrong caller; the other half
sample with a seed tied to the image, which gives each image its own reproducible text.
"""
import collections
import os
import re
import sys
import tempfile
import threading
import time
import unittest

import grpc

from cpmd_harness import Daemon, dataset_dir, make_tiny_model
from training_test import Client, spec

from cpm.v1 import ocr_pb2, ocr_pb2_grpc, training_pb2

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
FORMULAS = os.path.join(DATA, "images", "formulas")
S = training_pb2

CLIENTS = 64
REQUESTS_PER_CLIENT = 4
MAX_NEW_TOKENS = 8
# The daemon's default max_queue: every call of the load may be waiting at once, and must fit.
MAX_QUEUE = 256
# Steps of the job; far more than it can run during the load, so that it trains throughout.
JOB_STEPS = 40


# One call of the load: what it asked for ((image index, sampled)), how it ended, client-side time.
Answer = collections.namedtuple("Answer", "want code text seconds batch_size")


def percentile(values, p):
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, -(-len(ordered) * p // 100) - 1))]


def ocr_requests_by_code(daemon):
    """cpm_ocr_requests_total summed by code, from a scrape of /metrics."""
    _, body = daemon.scrape()
    out = {}
    for m in re.finditer(r'^cpm_ocr_requests_total\{([^}]*)\} (\S+)$', body, re.M):
        code = re.search(r'code="([^"]*)"', m.group(1)).group(1)
        out[code] = out.get(code, 0) + float(m.group(2))
    return out


class LoadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cpmd-load-")
        model = make_tiny_model(os.path.join(cls.tmp.name, "tiny"))
        cls.daemon = Daemon("--model", model, "--device", "cpu").start()
        cls.daemon.wait_serving("cpm.v1.Ocr")
        cls.daemon.wait_serving("cpm.v1.Training")
        cls.client = Client(cls.daemon.address)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.daemon.stop_cleanly()
        cls.tmp.cleanup()

    @staticmethod
    def request(images, i, sampled):
        """The call for image i: greedy, or sampled with a seed of its own."""
        decoding = ocr_pb2.DecodingOptions(max_new_tokens=MAX_NEW_TOKENS)
        if sampled:
            decoding.strategy = ocr_pb2.DECODING_STRATEGY_SAMPLING
            decoding.seed = 1000 + i
        return ocr_pb2.RecognizeRequest(image=images[i], decoding=decoding)

    def test_ocr_load_while_a_job_trains(self):
        self.assertLessEqual(CLIENTS * REQUESTS_PER_CLIENT, MAX_QUEUE)
        names = sorted(n for n in os.listdir(FORMULAS) if n.endswith(".png"))
        images = []
        for name in names:
            with open(os.path.join(FORMULAS, name), "rb") as f:
                images.append(f.read())

        # What the idle daemon answers for each image and decoding, one call at a time.
        t0 = time.time()
        expected = {(i, sampled): self.client.ocr.Recognize(self.request(images, i, sampled), timeout=60).text
                    for i in range(len(images)) for sampled in (False, True)}
        idle_s = time.time() - t0
        sampled_texts = {text for (_, sampled), text in expected.items() if sampled}
        self.assertEqual(len(sampled_texts), len(images), "seeded sampling gives two images the same text")

        dataset = self.client.upload(dataset_dir(os.path.join(self.tmp.name, "fit")))
        job = self.client.training.SubmitJob(S.SubmitJobRequest(spec=spec(
            dataset.id, name="load", max_steps=JOB_STEPS, logging_steps=1, save_steps=JOB_STEPS)), timeout=60)
        # Past data loading and the first step: the job is training now.
        deadline = time.time() + 120
        while True:
            job = self.client.training.GetJob(S.GetJobRequest(id=job.id), timeout=10)
            if job.state == S.JOB_STATE_RUNNING and job.progress.step >= 1:
                break
            self.assertIn(job.state, (S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING), job.error)
            self.assertLess(time.time(), deadline, "the job did not start training")
            time.sleep(0.05)
        step_before = job.progress.step
        counted_before = ocr_requests_by_code(self.daemon)

        # The load: CLIENTS threads, each with its own channel, REQUESTS_PER_CLIENT calls in a row,
        # image (client * REQUESTS_PER_CLIENT + k) mod 40, sampled when client + k is odd, all
        # released at once.
        results = {}  # (client, k) -> Answer
        lock = threading.Lock()
        start = threading.Barrier(CLIENTS + 1)

        def run_client(c):
            with grpc.insecure_channel(self.daemon.address) as channel:
                grpc.channel_ready_future(channel).result(timeout=30)
                ocr = ocr_pb2_grpc.OcrStub(channel)
                start.wait()
                for k in range(REQUESTS_PER_CLIENT):
                    want = ((c * REQUESTS_PER_CLIENT + k) % len(images), (c + k) % 2 == 1)
                    t = time.perf_counter()
                    try:
                        r = ocr.Recognize(self.request(images, *want), timeout=120)
                        answer = Answer(want, grpc.StatusCode.OK, r.text, 0, r.batch_size)
                    except grpc.RpcError as e:
                        answer = Answer(want, e.code(), e.details(), 0, 0)
                    with lock:
                        results[(c, k)] = answer._replace(seconds=time.perf_counter() - t)

        threads = [threading.Thread(target=run_client, args=(c,), daemon=True) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        start.wait(timeout=60)
        t_load = time.perf_counter()
        for t in threads:
            t.join(timeout=300)
        load_s = time.perf_counter() - t_load
        self.assertFalse([t for t in threads if t.is_alive()], "client threads still waiting")
        job = self.client.training.GetJob(S.GetJobRequest(id=job.id), timeout=10)
        step_after, state_after = job.progress.step, job.state
        counted_after = ocr_requests_by_code(self.daemon)

        total = CLIENTS * REQUESTS_PER_CLIENT
        ms = sorted(a.seconds * 1000 for a in results.values())
        batches = [a.batch_size for a in results.values() if a.batch_size]
        print(f"\nload: {total} Recognize calls (max_new_tokens {MAX_NEW_TOKENS}) from {CLIENTS} clients in "
              f"{load_s:.1f} s while job {job.spec.name} trained: {total / load_s:.1f} requests/s; latency "
              f"p50 {percentile(ms, 50):.0f} ms, p99 {percentile(ms, 99):.0f} ms, max {ms[-1]:.0f} ms; "
              f"mean batch {sum(batches) / max(len(batches), 1):.1f}; job step {step_before} -> {step_after} "
              f"of {JOB_STEPS} ({S.JobState.Name(state_after)}); idle: {len(expected)} calls one at a time "
              f"in {idle_s:.1f} s", file=sys.stderr)

        # None lost, every one OK and right.
        self.assertEqual(sorted(results), [(c, k) for c in range(CLIENTS) for k in range(REQUESTS_PER_CLIENT)])
        failed = {key: (a.code.name, a.text) for key, a in results.items() if a.code != grpc.StatusCode.OK}
        self.assertEqual(failed, {}, "calls not answered OK")
        wrong = {key: (names[a.want[0]], a.want[1], a.text, expected[a.want])
                 for key, a in results.items() if a.text != expected[a.want]}
        self.assertEqual(wrong, {}, "answers under load differ from the idle daemon's (image, sampled, got, expected)")
        self.assertEqual({k: v - counted_before.get(k, 0) for k, v in counted_after.items()
                          if v != counted_before.get(k, 0)}, {"OK": total},
                         "cpm_ocr_requests_total moved by other than the load's calls")

        # Training went on during the whole load, then finished.
        self.assertGreater(step_after, step_before, "the job made no step during the load")
        self.assertEqual(S.JobState.Name(state_after), "JOB_STATE_RUNNING",
                         "the job ended before the load did: raise JOB_STEPS so that it trains throughout")
        job = self.client.wait_state(job.id, {S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED},
                                     timeout=300)
        self.assertEqual(S.JobState.Name(job.state), "JOB_STATE_SUCCEEDED", job.error)
        self.assertEqual(job.progress.step, JOB_STEPS)


if __name__ == "__main__":
    unittest.main()
