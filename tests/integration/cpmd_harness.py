# SPDX-License-Identifier: Apache-2.0
"""Starts the real cpmd on loopback for integration tests and talks to it.

Environment (set by CTest): CPM_BIN_DIR (cpmd, cpmctl, cpm-tool), CPM_PY_STUBS (generated Python
stubs).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN_DIR = os.environ.get("CPM_BIN_DIR", "")
STUBS = os.environ.get("CPM_PY_STUBS", "")
if STUBS and STUBS not in sys.path:
    sys.path.insert(0, STUBS)


# key=bare or key="quoted with \"escapes\""
_LOGFMT = re.compile(r'(\w+)=(?:("(?:[^"\\]|\\.)*")|(\S+))')


def binary(name):
    path = os.path.join(BIN_DIR, name)
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing: build the project first (CPM_BIN_DIR={BIN_DIR!r})")
    return path


class Daemon:
    """One cpmd process with free ports and its own data directory."""

    def __init__(self, *extra_args, data_dir=None, env=None):
        self._tmp = tempfile.TemporaryDirectory(prefix="cpmd-it-")
        self.data_dir = data_dir or os.path.join(self._tmp.name, "var")
        self.log_path = os.path.join(self._tmp.name, "cpmd.log")
        self.args = [binary("cpmd"), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                     "--data-dir", self.data_dir, *extra_args]
        self.env = env
        self.proc = None
        self.grpc_port = None
        self.metrics_port = None

    def start(self, timeout=30):
        self._log = open(self.log_path, "w+b")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            records = {r.get("msg"): r for r in self.records()}
            if "cpmd ready" in records:
                self.grpc_port = int(records["grpc listening"]["port"])
                self.metrics_port = int(records["metrics listening"]["port"])
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"cpmd exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"cpmd did not become ready in {timeout}s:\n{self.log()}")

    @property
    def address(self):
        return f"127.0.0.1:{self.grpc_port}"

    def records(self):
        """The log as dicts, from either log format."""
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
            elif line.startswith("ts="):
                out.append({k: (json.loads(q) if q else b) for k, q, b in _LOGFMT.findall(line)})
        return out

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for_log(self, msg, timeout=60):
        """The first log record with this message, once it appears."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for record in self.records():
                if record.get("msg") == msg:
                    return record
            time.sleep(0.05)
        raise RuntimeError(f"no {msg!r} in the log after {timeout}s:\n{self.log()}")

    def wait_serving(self, service, timeout=120):
        """Blocks until health reports `service` SERVING (the model loads after cpmd is ready)."""
        import grpc
        import health_pb2
        import health_pb2_grpc
        with grpc.insecure_channel(self.address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
            try:
                for update in watch:
                    if update.status == health_pb2.HealthCheckResponse.SERVING:
                        watch.cancel()
                        return
            except grpc.RpcError as e:
                raise RuntimeError(f"{service} did not become SERVING ({e.code()}):\n{self.log()}")
        raise RuntimeError(f"health watch of {service} ended:\n{self.log()}")

    def scrape(self):
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.headers.get("Content-Type", ""), resp.read().decode("utf-8")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Sends `sig` and returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def stop_cleanly(self):
        """SIGTERM, then close; raises AssertionError (with the log) unless cpmd exited 0."""
        code = self.stop()
        log = self.log()
        self.close()
        assert code == 0, f"cpmd exited {code} on SIGTERM:\n{log}"

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
        self._tmp.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def make_tiny_model(path, dtype="bf16", seed=11):
    """A tiny random checkpoint of the real format. The defaults give the base that the committed
    adapters in tests/data/adapters were made for (tests/core/train/peft_interop_test.cpp).
    CPM_QWEN_TOKENIZER names the Qwen tokenizer.json on hosts without the project's .deps."""
    tokenizer = os.environ.get("CPM_QWEN_TOKENIZER")
    subprocess.run([binary("cpm-tool"), "mkmodel", "--out", path, "--preset", "tiny", "--dtype", dtype,
                    "--seed", str(seed), *(["--tokenizer", tokenizer] if tokenizer else [])],
                   check=True, capture_output=True, timeout=300)
    return path


FIT32 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "train", "fit32")


def dataset_dir(root, rows=4, extra_lines=()):
    """A CSV dataset of the first `rows` fit32 formulas, plus raw `extra_lines`."""
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    with open(os.path.join(FIT32, "labels.csv")) as f:
        lines = f.read().splitlines()
    for line in lines[1:rows + 1]:
        name = line.split(",")[0]
        shutil.copy(os.path.join(FIT32, name), os.path.join(root, name))
    with open(os.path.join(root, "labels.csv"), "w") as f:
        f.write("\n".join(lines[:rows + 1] + list(extra_lines)) + "\n")
    return root


def cpmctl(*args, env_extra=None, timeout=60):
    env = dict(os.environ)
    env.pop("CPM_SERVER", None)
    env.update(env_extra or {})
    return subprocess.run([binary("cpmctl"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


class CpmctlAssertions:
    """For unittest.TestCase classes that run cpmctl."""

    def assert_one_line_error(self, r, code, *words):
        """cpmctl exited with `code` and said why on exactly one stderr line containing `words`."""
        self.assertEqual(r.returncode, code, r.stdout + r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        for w in words:
            self.assertIn(w, r.stderr)
