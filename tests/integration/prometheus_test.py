# SPDX-License-Identifier: Apache-2.0
"""cpmd scraped by a real Prometheus: Debian's `prometheus` binary scrapes the /metrics of a real
cpmd (tiny random checkpoint, loopback, port 0) every second while a Python grpcio client sends OCR
requests; then Prometheus's HTTP query API must hold our series with exactly the values the client
can account for (requests by status, histogram counts, tokens, gRPC calls), `up` must be 1 with no
scrape error, the process metrics must match /proc, and the raw scrape must pass
`promtool check metrics`.

Timing: nothing sleeps a fixed time. The test waits for scrapes by watching the timestamp of
Prometheus's own `up` sample, so it neither races a slow scrape on a loaded machine nor wastes time
on a fast one; every wait has a generous deadline and says what it waited for when it runs out.
"""
import concurrent.futures
import json
import math
import os
import re
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import grpc

from cpmd_harness import Daemon, make_tiny_model

from cpm.v1 import ocr_pb2, ocr_pb2_grpc

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
FORMULAS = os.path.join(DATA, "images", "formulas")
JOB = "cpmd-it"  # the scrape job's name: a value of our own, so a default cannot pass by chance
MAX_QUEUE = 37  # a non-default max_queue, to see the flag arrive in cpm_ocr_queue_capacity
MAX_NEW_TOKENS = 4
# Generous: a 2-core CI machine that builds at the same time can stall a process for seconds.
SCRAPE_TIMEOUT_S = 90


def formula(name):
    with open(os.path.join(FORMULAS, name), "rb") as f:
        return f.read()


def request(image):
    return ocr_pb2.RecognizeRequest(image=image, decoding=ocr_pb2.DecodingOptions(max_new_tokens=MAX_NEW_TOKENS))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(what, fn, timeout, interval=0.1):
    """Calls fn until it returns something truthy and returns that; raises naming `what` (and
    fn's last error) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = fn()
            if result:
                return result
        except (OSError, ValueError, KeyError, IndexError) as e:  # not up yet, or no sample yet
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")


# ---- the Prometheus text format, as much as the test needs -----------------------------------------

_SAMPLE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$')
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*')


def _unescape(value):
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_exposition(text):
    """{(name, frozenset(labels.items())): float} of every sample line, labels as Prometheus
    stores them."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"not a sample line: {line!r}")
        # An empty label value is the same as no label in Prometheus's data model (it stores
        # adapter="" as no adapter label), so it is dropped here too.
        labels = {k: _unescape(v) for k, v in _LABEL.findall(m.group(2) or "") if v}
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(3))
    return out


def same_value(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


class Prometheus:
    """Debian's prometheus binary scraping one target every second, its storage in `workdir`.
    The caller stops it (close); it never outlives the test."""

    def __init__(self, workdir, target, job):
        self.dir = workdir
        self.job = job
        self.config = os.path.join(workdir, "prometheus.yml")
        # JSON is YAML: no yaml module needed. scrape_timeout may not exceed the interval.
        with open(self.config, "w") as f:
            json.dump({"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                       "scrape_configs": [{"job_name": job, "metrics_path": "/metrics",
                                           "static_configs": [{"targets": [target]}]}]}, f)
        self.log_path = os.path.join(workdir, "prometheus.log")
        self.proc = None
        self.port = None

    def start(self, attempts=3):
        # The free port is found by binding and closing, so another process may take it before
        # Prometheus binds: it then exits at once, and we try again with a new port.
        for _ in range(attempts):
            self.port = free_port()
            self._log = open(self.log_path, "w+")
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={self.config}",
                 f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=self._log, stderr=subprocess.STDOUT)
            try:
                poll("Prometheus /-/ready", self._ready, timeout=60)
                return self
            except AssertionError:
                if self.proc.poll() is None:
                    raise AssertionError(f"Prometheus did not become ready:\n{self.log()}")
                self._log.close()
        raise AssertionError(f"Prometheus did not start in {attempts} attempts:\n{self.log()}")

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as r:
            return r.status == 200

    def api(self, endpoint, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise AssertionError(f"{endpoint} {params}: {body}")
        return body["data"]

    def query(self, promql):
        """The instant vector of `promql` now: a list of (labels, value)."""
        data = self.api("query", query=promql)
        if data["resultType"] != "vector":
            raise AssertionError(f"{promql}: a {data['resultType']}, not a vector")
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def value(self, promql):
        """The single value of `promql`; fails when it has no or several series."""
        result = self.query(promql)
        if len(result) != 1:
            raise AssertionError(f"{promql}: expected one series, got {result}")
        return result[0][1]

    def last_scrape_time(self):
        """When the latest scrape of the target began (Prometheus stamps `up` with that time);
        0 before the first."""
        result = self.query(f'timestamp(up{{job="{self.job}"}})')
        return result[0][1] if result else 0.0

    def wait_scrape_after(self, t, timeout=SCRAPE_TIMEOUT_S):
        """Returns once a scrape that began after wall-clock time `t` is stored and succeeded."""
        poll(f"a successful scrape after {t:.3f}",
             lambda: self.last_scrape_time() > t and self.value(f'up{{job="{self.job}"}}') == 1, timeout)

    def wait_scrapes(self, n, timeout=SCRAPE_TIMEOUT_S):
        for _ in range(n):
            self.wait_scrape_after(self.last_scrape_time(), timeout)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()


class PrometheusScrapeTest(unittest.TestCase):
    """One cpmd, one Prometheus, one exercise (setUpClass); each test reads one aspect of what
    Prometheus stored."""

    maxDiff = None

    @classmethod
    def setUpClass(cls):
        tmp = tempfile.TemporaryDirectory(prefix="cpmd-prom-")
        cls.addClassCleanup(tmp.cleanup)
        model = make_tiny_model(os.path.join(tmp.name, "tiny"))
        # The CPU keeps it quick and deterministic on every host; the GPU path has its own suites.
        cls.daemon = Daemon("--model", model, "--device", "cpu", "--max-queue", str(MAX_QUEUE))
        cls.addClassCleanup(cls.daemon.close)  # kills it if a later step fails
        cls.daemon.start(timeout=120)
        cls.daemon_started = time.time()
        cls.daemon.wait_serving("cpm.v1.Ocr", timeout=300)
        cls.target = f"127.0.0.1:{cls.daemon.metrics_port}"
        os.makedirs(os.path.join(tmp.name, "prometheus"))
        cls.prom = Prometheus(os.path.join(tmp.name, "prometheus"), cls.target, JOB)
        cls.addClassCleanup(cls.prom.close)
        cls.prom.start()

        channel = grpc.insecure_channel(cls.daemon.address)
        cls.addClassCleanup(channel.close)
        ocr = ocr_pb2_grpc.OcrStub(channel)
        images = [formula(name) for name in sorted(os.listdir(FORMULAS))[:6]]
        cls.answers = []  # every successful answer: (RecognizeResponse, client-side seconds)

        def recognize(image):
            t0 = time.monotonic()
            r = ocr.Recognize(request(image), timeout=300)
            return r, time.monotonic() - t0

        def recognize_stream(image):
            t0 = time.monotonic()
            messages = list(ocr.RecognizeStream(request(image), timeout=300))
            return messages[-1].done, time.monotonic() - t0

        # Baseline: one answered request, then a scrape that began after it. The counters then
        # exist (labelled series appear with their first sample) and the exercise starts from a
        # value Prometheus holds.
        cls.answers.append(recognize(images[0]))
        cls.prom.wait_scrape_after(time.time())
        cls.baseline = {
            "ok": cls.prom.value(f'cpm_ocr_requests_total{{job="{JOB}", method="Recognize", adapter="", code="OK"}}'),
            "e2e_count": cls.prom.value(f'cpm_ocr_e2e_request_latency_seconds_count{{job="{JOB}", adapter=""}}'),
        }

        # The exercise: unary calls one by one and concurrently (a batch), streams, and refused
        # calls, each kind a different number of times so that a mix-up of series shows.
        cls.sequential, cls.concurrent, cls.streams, cls.refused = 3, 4, 2, 5
        for image in images[:cls.sequential]:
            cls.answers.append(recognize(image))
        with concurrent.futures.ThreadPoolExecutor(max_workers=cls.concurrent) as pool:
            cls.answers += list(pool.map(recognize, images[:cls.concurrent]))
        for image in images[:cls.streams]:
            cls.answers.append(recognize_stream(image))
        for _ in range(cls.refused):
            try:
                ocr.Recognize(request(b"not an image"), timeout=60)
                raise AssertionError("a request without an image was answered")
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
        # The counters are updated before the answer is sent, the gRPC interceptor's right after:
        # a scrape that began after the last answer, plus two more, hold everything.
        cls.prom.wait_scrape_after(time.time())
        cls.prom.wait_scrapes(2)

    @classmethod
    def tearDownClass(cls):
        code = cls.daemon.stop()
        log = cls.daemon.log()
        assert code == 0, f"cpmd exited {code} on SIGTERM:\n{log}"

    def q(self, promql):
        return self.prom.value(promql)

    def sel(self, name, **labels):
        """A selector of `name` in our job with exact label matches."""
        matchers = [f'job="{JOB}"'] + [f'{k}="{v}"' for k, v in labels.items()]
        return f'{name}{{{", ".join(matchers)}}}'

    # ---- the target -----------------------------------------------------------------------------

    def test_target_is_up_without_scrape_errors(self):
        self.assertEqual(self.q(self.sel("up", instance=self.target)), 1)
        targets = self.prom.api("targets", state="active")["activeTargets"]
        ours = [t for t in targets if t["labels"].get("job") == JOB]
        self.assertEqual(len(ours), 1, targets)
        # A sample line Prometheus cannot parse fails the whole scrape, so an empty lastError
        # means it took every line of our exposition.
        self.assertEqual(ours[0]["health"], "up", ours[0])
        self.assertEqual(ours[0]["lastError"], "", ours[0])
        self.assertEqual(ours[0]["scrapeUrl"], f"http://{self.target}/metrics")
        self.assertGreater(self.q(self.sel("scrape_samples_scraped")), 100)

    def test_raw_scrape_passes_promtool_and_prometheus_stores_every_sample(self):
        content_type, text = self.daemon.scrape()
        self.assertIn("text/plain", content_type)
        self.assertIn("version=0.0.4", content_type)
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.assertEqual(check.stdout + check.stderr, "", "promtool lint findings")

        # cpmd is idle now, so its cpm_ and grpc_ samples no longer change: Prometheus's newest
        # sample of each series (one scrape later) must carry the same labels and value. The
        # CUDA memory gauges may move on a GPU host, and process_* always move.
        raw = {k: v for k, v in parse_exposition(text).items()
               if re.match(r"(cpm|grpc)_", k[0]) and not k[0].startswith("cpm_gpu_memory_")}
        self.assertGreater(len(raw), 100)
        self.prom.wait_scrape_after(time.time())
        stored = {}
        for metric, value in self.prom.query(f'{{job="{JOB}", __name__=~"(cpm|grpc)_.+"}}'):
            name = metric.pop("__name__")
            if name.startswith("cpm_gpu_memory_"):
                continue
            self.assertEqual(metric.pop("job"), JOB)
            self.assertEqual(metric.pop("instance"), self.target)
            stored[(name, frozenset(metric.items()))] = value
        only_raw, only_stored = sorted(set(raw) - set(stored)), sorted(set(stored) - set(raw))
        self.assertEqual((only_raw[:8], only_stored[:8]), ([], []),
                         f"series only in the scrape ({len(only_raw)}) / only in Prometheus ({len(only_stored)})")
        differ = [(k, raw[k], stored[k]) for k in raw if not same_value(raw[k], stored[k])]
        self.assertEqual(differ, [])

    # ---- OCR ------------------------------------------------------------------------------------

    def test_request_counters_increased_by_exactly_the_calls_made(self):
        unary_ok = self.sequential + self.concurrent
        self.assertEqual(self.q(self.sel("cpm_ocr_requests_total", method="Recognize", adapter="", code="OK"))
                         - self.baseline["ok"], unary_ok)
        self.assertEqual(self.q(self.sel("cpm_ocr_requests_total", method="RecognizeStream", adapter="", code="OK")),
                         self.streams)
        # A request refused before it has an adapter is counted under adapter="".
        self.assertEqual(self.q(self.sel("cpm_ocr_requests_total", method="Recognize", adapter="",
                                         code="INVALID_ARGUMENT")), self.refused)
        total = 1 + unary_ok + self.streams + self.refused
        self.assertEqual(self.q(f'sum(cpm_ocr_requests_total{{job="{JOB}"}})'), total)
        # Counted once per call, never per batch row or per streamed token.
        self.assertEqual(self.q(f'count(cpm_ocr_requests_total{{job="{JOB}"}})'), 3)

    def test_latency_histograms_count_each_successful_request_once(self):
        answered = len(self.answers)
        self.assertEqual(answered, 1 + self.sequential + self.concurrent + self.streams)
        e2e = "cpm_ocr_e2e_request_latency_seconds"
        self.assertEqual(self.q(self.sel(e2e + "_count", adapter="")) - self.baseline["e2e_count"], answered - 1)
        for family in (e2e, "cpm_ocr_request_queue_time_seconds", "cpm_ocr_request_prefill_time_seconds",
                       "cpm_ocr_request_decode_time_seconds", "cpm_ocr_time_to_first_token_seconds",
                       "cpm_ocr_time_per_output_token_seconds"):
            with self.subTest(family=family):
                self.assertEqual(self.q(self.sel(family + "_count", adapter="")), answered)
                self.assertEqual(self.q(self.sel(family + "_bucket", adapter="", le="+Inf")), answered)
                # Cumulative buckets never decrease with le.
                buckets = sorted((float(m["le"]), v) for m, v in self.prom.query(
                    self.sel(family + "_bucket", adapter="")))
                self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))
        # The server's arrival-to-answer time of each request lies inside the client's round trip.
        server_sum = self.q(self.sel(e2e + "_sum", adapter=""))
        self.assertGreater(server_sum, 0)
        self.assertLessEqual(server_sum, sum(seconds for _, seconds in self.answers))
        # Prometheus computes quantiles from our buckets. It interpolates inside a bucket, so the
        # bound is the upper edge of the bucket that holds the slowest client round trip.
        p50 = self.q(f'histogram_quantile(0.5, sum by (le) ({e2e}_bucket{{job="{JOB}"}}))')
        slowest = max(seconds for _, seconds in self.answers)
        edge = min(float(m["le"]) for m, _ in self.prom.query(self.sel(e2e + "_bucket", adapter=""))
                   if float(m["le"]) >= slowest)
        self.assertTrue(0 < p50 <= edge, (p50, slowest, edge))

    def test_tokens_and_batches_match_the_answers(self):
        answers = [r for r, _ in self.answers]
        self.assertEqual(self.q(self.sel("cpm_ocr_generation_tokens_total", adapter="")),
                         sum(r.completion_tokens for r in answers))
        self.assertEqual(self.q(self.sel("cpm_ocr_prompt_tokens_total", adapter="")),
                         sum(r.prompt_tokens for r in answers))
        # Every successful request was a row of exactly one batch; refused ones never reach one.
        self.assertEqual(self.q(self.sel("cpm_ocr_batch_size_sum")), len(answers))
        batches = self.q(self.sel("cpm_ocr_batch_size_count"))
        self.assertLessEqual(batches, len(answers))
        self.assertGreaterEqual(batches, len(answers) - self.concurrent + 1)

    def test_queue_gauges_of_an_idle_daemon(self):
        self.assertEqual(self.q(self.sel("cpm_ocr_queue_capacity")), MAX_QUEUE)
        self.assertEqual(self.q(self.sel("cpm_ocr_queue_depth")), 0)
        self.assertEqual(self.q(self.sel("cpm_ocr_requests_running")), 0)
        self.assertEqual(self.q(self.sel("cpm_adapters_loaded")), 0)

    # ---- gRPC, build, process -------------------------------------------------------------------

    def test_grpc_server_metrics_count_the_ocr_calls(self):
        unary = 1 + self.sequential + self.concurrent + self.refused
        ocr = {"grpc_service": "cpm.v1.Ocr"}
        self.assertEqual(self.q(self.sel("grpc_server_started_total", grpc_method="Recognize", grpc_type="unary",
                                         **ocr)), unary)
        self.assertEqual(self.q(self.sel("grpc_server_handled_total", grpc_method="Recognize", grpc_code="OK",
                                         grpc_type="unary", **ocr)), unary - self.refused)
        self.assertEqual(self.q(self.sel("grpc_server_handled_total", grpc_method="Recognize",
                                         grpc_code="INVALID_ARGUMENT", grpc_type="unary", **ocr)), self.refused)
        self.assertEqual(self.q(self.sel("grpc_server_handled_total", grpc_method="RecognizeStream", grpc_code="OK",
                                         grpc_type="server_stream", **ocr)), self.streams)
        self.assertEqual(self.q(self.sel("grpc_server_handling_seconds_count", grpc_method="Recognize",
                                         grpc_type="unary", **ocr)), unary)

    def test_build_info(self):
        [(labels, value)] = self.prom.query(self.sel("cpm_build_info"))
        self.assertEqual(value, 1)
        for label in ("version", "git_commit", "torch_version", "grpc_version", "cuda", "image_decoder"):
            self.assertIn(label, labels)
        self.assertRegex(labels["version"], r"^\d+\.\d+\.\d+")

    def test_process_metrics_describe_the_daemon_process(self):
        pid = self.daemon.proc.pid
        # Start time: /proc/PID/stat field 22 (clock ticks after boot) + the boot time.
        with open(f"/proc/{pid}/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = int(re.search(r"^btime (\d+)$", f.read(), re.M).group(1))
        started = btime + start_ticks / os.sysconf("SC_CLK_TCK")
        self.assertAlmostEqual(self.q(self.sel("process_start_time_seconds")), started, delta=1.5)
        self.assertLessEqual(self.q(self.sel("process_start_time_seconds")), self.daemon_started + 1)
        # Resident memory moves a little between the scrape and now; a factor of 2 still catches
        # pages counted as bytes or kilobytes as bytes.
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        resident = self.q(self.sel("process_resident_memory_bytes"))
        self.assertTrue(rss / 2 < resident < rss * 2, (resident, rss))
        self.assertGreaterEqual(self.q(self.sel("process_virtual_memory_bytes")), resident)
        self.assertGreater(self.q(self.sel("process_cpu_seconds_total")), 0)
        threads = self.q(self.sel("process_threads"))
        self.assertGreater(threads, 1)
        fds = self.q(self.sel("process_open_fds"))
        self.assertGreater(fds, 3)
        self.assertGreaterEqual(self.q(self.sel("process_max_fds")), fds)
        # The CPU counter is a counter to Prometheus: it grows, it is never reset.
        self.assertEqual(self.q(f'resets(process_cpu_seconds_total{{job="{JOB}"}}[1h])'), 0)


if __name__ == "__main__":
    unittest.main()
