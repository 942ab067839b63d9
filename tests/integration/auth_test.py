# SPDX-License-Identifier: Apache-2.0
"""Security and limits of the real cpmd: TLS, mutual TLS, bearer tokens with their two roles, the
message size limit, and what is refused showing in /metrics; the daemon keeps serving through all
of it.

Certificates are made at test time with the `openssl` command (a CA, a server certificate for
127.0.0.1, a client certificate, and a second CA whose client certificate cpmd must refuse). The
client is Debian's python3-grpcio with stubs generated from our .proto files; the model is the tiny
random checkpoint on the CPU.
"""
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
import unittest

import grpc

from cpmd_harness import Daemon, binary, make_tiny_model

from cpm.v1 import (adapters_pb2, adapters_pb2_grpc, admin_pb2, admin_pb2_grpc, ocr_pb2, ocr_pb2_grpc,
                    training_pb2, training_pb2_grpc)
import health_pb2
import health_pb2_grpc
import reflection_pb2
import reflection_pb2_grpc

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
IMAGE = os.path.join(DATA, "images", "rgb.png")

ADMIN = "admin-" + os.urandom(16).hex()          # in the tokens file as its SHA-256 only
INFERENCE = "inference-" + os.urandom(16).hex()  # in the tokens file in clear
ENV_ADMIN = "env-admin-" + os.urandom(16).hex()  # CPMD_ADMIN_TOKEN
WRONG = "wrong-" + os.urandom(16).hex()
MAX_MESSAGE = 1 << 20  # the smallest limit cpmd accepts


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d):
    """ca.crt signs server.crt (127.0.0.1, localhost) and client.crt; other-ca.crt signs other-client.crt;
    wrong.key belongs to no certificate."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for ca in ("ca", "other-ca"):
        openssl(d, "req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN={ca}")
    for name, ca, ext in (("server", "ca", ["-extfile", "server.ext"]), ("client", "ca", []),
                          ("other-client", "other-ca", [])):
        openssl(d, "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *ext)
    openssl(d, "genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "wrong.key")
    return Files(d)


class Files:
    """pki("server.crt") -> its path."""

    def __init__(self, folder):
        self.folder = folder

    def __call__(self, name):
        return os.path.join(self.folder, name)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def bearer(token):
    return [("authorization", f"Bearer {token}")] if token else None


def code_of(call):
    """The status code and details of a call (a function of no arguments); OK when it returns."""
    try:
        call()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


def series(text, name, **labels):
    """The value of one sample of the scrape, 0 when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


class SecuredDaemonTest(unittest.TestCase):
    """cpmd with mutual TLS, a tokens file, an environment token and a 1 MiB message limit."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cpmd-auth-")
        cls.pki = make_pki(cls.tmp.name)
        model = make_tiny_model(os.path.join(cls.tmp.name, "tiny"))
        tokens = os.path.join(cls.tmp.name, "tokens.json")
        with open(tokens, "w") as f:
            json.dump({"tokens": [
                {"name": "ci", "role": "admin", "sha256": hashlib.sha256(ADMIN.encode()).hexdigest()},
                {"name": "frontend", "role": "inference", "token": INFERENCE}]}, f)
        env = dict(os.environ, CPMD_ADMIN_TOKEN=ENV_ADMIN)
        cls.daemon = Daemon("--model", model, "--tls-cert-file", cls.pki("server.crt"),
                            "--tls-key-file", cls.pki("server.key"), "--tls-client-ca-file", cls.pki("ca.crt"),
                            "--auth-tokens-file", tokens, "--max-message-bytes", str(MAX_MESSAGE), env=env)
        cls.daemon.start()
        cls.channel = cls.secure_channel("client")
        cls.wait_serving("cpm.v1.Ocr")
        cls.ocr = ocr_pb2_grpc.OcrStub(cls.channel)
        cls.admin = admin_pb2_grpc.AdminStub(cls.channel)
        cls.adapters = adapters_pb2_grpc.AdaptersStub(cls.channel)
        cls.training = training_pb2_grpc.TrainingStub(cls.channel)
        cls.health = health_pb2_grpc.HealthStub(cls.channel)
        cls.reflection = reflection_pb2_grpc.ServerReflectionStub(cls.channel)
        cls.image = read(IMAGE)

    @classmethod
    def tearDownClass(cls):
        try:
            # Still serving after everything the tests threw at it.
            r = cls.ocr.Recognize(cls.request(), metadata=bearer(ADMIN), timeout=120)
            assert r.completion_tokens > 0, r
            cls.channel.close()
            code = cls.daemon.stop()
            log = cls.daemon.log()
            assert code == 0, f"cpmd exited {code} on SIGTERM:\n{log}"
            for token in (ADMIN, INFERENCE, ENV_ADMIN, WRONG):
                assert token not in log, "a token value is in the log"
        finally:
            cls.daemon.close()
            cls.tmp.cleanup()

    @classmethod
    def secure_channel(cls, client=None, ca="ca.crt"):
        creds = grpc.ssl_channel_credentials(
            root_certificates=read(cls.pki(ca)),
            private_key=read(cls.pki(f"{client}.key")) if client else None,
            certificate_chain=read(cls.pki(f"{client}.crt")) if client else None)
        return grpc.secure_channel(cls.daemon.address, creds)

    @classmethod
    def wait_serving(cls, service, timeout=300):
        stub = health_pb2_grpc.HealthStub(cls.channel)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{service} did not become SERVING:\n{cls.daemon.log()}")

    @classmethod
    def request(cls, **kw):
        return ocr_pb2.RecognizeRequest(image=kw.pop("image", cls.image),
                                        decoding=ocr_pb2.DecodingOptions(max_new_tokens=4), **kw)

    def calls(self, token):
        """Every service and kind of call (unary, server stream, client stream, bidi stream); a
        stream is read to its end."""
        md = bearer(token)
        return {
            "Ocr/Recognize": lambda: self.ocr.Recognize(self.request(), metadata=md, timeout=60),
            "Ocr/RecognizeStream": lambda: list(self.ocr.RecognizeStream(self.request(), metadata=md, timeout=60)),
            "Admin/GetInfo": lambda: self.admin.GetInfo(admin_pb2.GetInfoRequest(), metadata=md, timeout=10),
            "Reflection": lambda: list(self.reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=md, timeout=10)),
            "Adapters/ListAdapters": lambda: self.adapters.ListAdapters(
                adapters_pb2.ListAdaptersRequest(), metadata=md, timeout=10),
            "Adapters/ExportAdapter": lambda: list(self.adapters.ExportAdapter(
                adapters_pb2.ExportAdapterRequest(name="none"), metadata=md, timeout=10)),
            "Training/ListJobs": lambda: self.training.ListJobs(training_pb2.ListJobsRequest(), metadata=md, timeout=10),
            "Training/WatchJob": lambda: list(self.training.WatchJob(
                training_pb2.WatchJobRequest(id="none"), metadata=md, timeout=10)),
            "Training/UploadDataset": lambda: self.training.UploadDataset(
                iter([training_pb2.UploadDatasetRequest()]), metadata=md, timeout=10),
        }

    def test_mutual_tls_serves_a_client_with_a_certificate_from_the_ca(self):
        r = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        self.assertEqual(r.status, health_pb2.HealthCheckResponse.SERVING)

    def test_clients_without_tls_or_the_right_certificate_are_turned_away(self):
        cases = {"plaintext": grpc.insecure_channel(self.daemon.address),
                 "TLS without a client certificate": self.secure_channel(None),
                 "a client certificate from another CA": self.secure_channel("other-client"),
                 "a server CA that is not cpmd's": self.secure_channel("client", ca="other-ca.crt")}
        for what, channel in cases.items():
            with channel:
                code, details = code_of(lambda: health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=10))
                self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, f"{what}: {details}")

    def test_health_needs_no_token_for_probes_but_refuses_a_wrong_one(self):
        for service in ("", "cpm.v1.Ocr"):
            r = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            self.assertEqual(r.status, health_pb2.HealthCheckResponse.SERVING)
        watch = self.health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVING)
        watch.cancel()
        code, _ = code_of(lambda: self.health.Check(health_pb2.HealthCheckRequest(), metadata=bearer(WRONG), timeout=10))
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)

    def test_no_token_is_unauthenticated_everywhere_else(self):
        for name, call in self.calls(None).items():
            code, details = code_of(call)
            self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, name)
            self.assertIn("needs a bearer token", details, name)
            self.assertIn("authorization: Bearer <token>", details, name)

    def test_a_wrong_or_malformed_token_is_unauthenticated(self):
        for name, call in self.calls(WRONG).items():
            code, details = code_of(call)
            self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, name)
            self.assertIn("not valid", details, name)
            self.assertNotIn(WRONG, details, name)
        for header in (f"Basic {ADMIN}", ADMIN, "Bearer"):
            code, details = code_of(lambda: self.admin.GetInfo(
                admin_pb2.GetInfoRequest(), metadata=[("authorization", header)], timeout=10))
            self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, header)
            self.assertIn("must be 'Bearer <token>'", details)

    def test_an_inference_token_runs_ocr_but_not_adapters_or_training(self):
        allowed = {"Ocr/Recognize", "Ocr/RecognizeStream", "Admin/GetInfo", "Reflection"}
        for name, call in self.calls(INFERENCE).items():
            code, details = code_of(call)
            if name in allowed:
                self.assertEqual(code, grpc.StatusCode.OK, f"{name}: {details}")
            else:
                self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED, name)
                self.assertIn("needs a token with role admin", details, name)
                self.assertIn("token 'frontend' has role inference", details, name)
        # The streaming answer really streams.
        chunks = list(self.ocr.RecognizeStream(self.request(), metadata=bearer(INFERENCE), timeout=60))
        self.assertGreaterEqual(len(chunks), 1)

    def test_admin_tokens_call_everything(self):
        for token in (ADMIN, ENV_ADMIN):
            for name, call in self.calls(token).items():
                code, details = code_of(call)
                self.assertNotIn(code, (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED),
                                 f"{name}: {details}")
                if name.startswith(("Ocr/", "Admin/", "Reflection", "Adapters/ListAdapters")):
                    self.assertEqual(code, grpc.StatusCode.OK, f"{name}: {details}")
            # What an unknown adapter or job says, now that the call got through.
            code, _ = code_of(self.calls(token)["Adapters/ExportAdapter"])
            self.assertEqual(code, grpc.StatusCode.NOT_FOUND)

    def test_an_oversized_message_is_resource_exhausted_and_cpmd_keeps_serving(self):
        big = self.request(image=b"\x89PNG" + bytes(MAX_MESSAGE))
        for call in (lambda: self.ocr.Recognize(big, metadata=bearer(ADMIN), timeout=30),
                     lambda: list(self.ocr.RecognizeStream(big, metadata=bearer(INFERENCE), timeout=30))):
            code, details = code_of(call)
            self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED, details)
            self.assertIn("larger than max", details)
        r = self.ocr.Recognize(self.request(), metadata=bearer(INFERENCE), timeout=60)
        self.assertGreater(r.completion_tokens, 0)

    def test_refused_calls_are_counted_by_code_in_the_grpc_metrics(self):
        labels = dict(grpc_type="unary", grpc_service="cpm.v1.Adapters", grpc_method="ListAdapters")
        stream = dict(grpc_type="server_stream", grpc_service="cpm.v1.Ocr", grpc_method="RecognizeStream")
        _, before = self.daemon.scrape()
        calls_none, calls_inference = self.calls(None), self.calls(INFERENCE)
        for _ in range(2):
            code_of(calls_none["Adapters/ListAdapters"])
            code_of(calls_none["Ocr/RecognizeStream"])
        code_of(calls_inference["Adapters/ListAdapters"])
        _, after = self.daemon.scrape()
        delta = lambda name, **l: series(after, name, **l) - series(before, name, **l)  # noqa: E731
        self.assertEqual(delta("grpc_server_handled_total", **labels, grpc_code="UNAUTHENTICATED"), 2)
        self.assertEqual(delta("grpc_server_handled_total", **labels, grpc_code="PERMISSION_DENIED"), 1)
        self.assertEqual(delta("grpc_server_handled_total", **stream, grpc_code="UNAUTHENTICATED"), 2)
        # Counted once each: started as often as handled.
        self.assertEqual(delta("grpc_server_started_total", **labels), 3)
        self.assertEqual(delta("grpc_server_handling_seconds_count", **labels), 3)
        check = subprocess.run(["promtool", "check", "metrics"], input=after, capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)


class StartupTest(unittest.TestCase):
    """What cpmd says about bad TLS files and tokens, and tokens without TLS."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cpmd-auth-start-")
        cls.pki = make_pki(cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def cpmd(self, *args, env_extra=None):
        env = dict(os.environ)
        env.pop("CPMD_ADMIN_TOKEN", None)
        env.pop("CPMD_INFERENCE_TOKEN", None)
        env.update(env_extra or {})
        return subprocess.run([binary("cpmd"), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                               "--data-dir", os.path.join(self.tmp.name, "var"), *args],
                              capture_output=True, text=True, timeout=60, env=env)

    def test_bad_tls_files_and_tokens_stop_cpmd_with_exit_2_and_the_fix(self):
        p = self.pki
        tokens = os.path.join(self.tmp.name, "bad-tokens.json")
        with open(tokens, "w") as f:
            f.write('{"tokens": [{"name": "x", "role": "root", "token": "0123456789abcdef0123"}]}')
        cases = [
            (["--tls-cert-file", p("server.crt"), "--tls-key-file", p("wrong.key")],
             [p("wrong.key"), p("server.crt"), "not the one the certificate was issued for"]),
            (["--tls-cert-file", p("missing.crt"), "--tls-key-file", p("server.key")],
             [f"tls_cert_file {p('missing.crt')}: no such file"]),
            (["--tls-cert-file", p("server.crt")], ["tls_key_file is not"]),
            (["--tls-cert-file", p("server.key"), "--tls-key-file", p("server.crt")], ["swapped"]),
            (["--tls-client-ca-file", p("ca.crt")], ["tls_client_ca_file needs tls_cert_file"]),
            (["--auth-tokens-file", tokens], [tokens, "entry 1 ('x')", "\"role\" must be"]),
            (["--auth-tokens-file", p("nope.json")], ["cannot be opened"]),
        ]
        for args, messages in cases:
            r = self.cpmd(*args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            for m in messages:
                self.assertIn(m, r.stderr, args)
        r = self.cpmd(env_extra={"CPMD_ADMIN_TOKEN": "tooshort"})
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("CPMD_ADMIN_TOKEN: a token must have 16", r.stderr)
        self.assertNotIn("tooshort", r.stderr)

    def test_tokens_work_without_tls_with_a_warning(self):
        with Daemon(env=dict(os.environ, CPMD_INFERENCE_TOKEN=INFERENCE)) as d:
            with grpc.insecure_channel(d.address) as channel:
                admin = admin_pb2_grpc.AdminStub(channel)
                self.assertEqual(code_of(lambda: admin.GetInfo(admin_pb2.GetInfoRequest(), timeout=10))[0],
                                 grpc.StatusCode.UNAUTHENTICATED)
                info = admin.GetInfo(admin_pb2.GetInfoRequest(), metadata=bearer(INFERENCE), timeout=10)
                self.assertTrue(info.build.version)
            records = {r["msg"]: r for r in d.records()}
            self.assertEqual(records["grpc security"]["tls"], "off")
            self.assertEqual(records["grpc security"]["inference_tokens"], "1")
            self.assertIn("bearer tokens over plaintext gRPC", d.log())
            self.assertEqual(d.stop(), 0, d.log())
            self.assertNotIn(INFERENCE, d.log())

    def test_tls_alone_needs_no_token_and_stops_cleanly(self):
        with Daemon("--tls-cert-file", self.pki("server.crt"), "--tls-key-file", self.pki("server.key")) as d:
            creds = grpc.ssl_channel_credentials(root_certificates=read(self.pki("ca.crt")))
            with grpc.secure_channel(d.address, creds) as channel:
                info = admin_pb2_grpc.AdminStub(channel).GetInfo(admin_pb2.GetInfoRequest(), timeout=10)
                self.assertTrue(info.build.version)
            self.assertEqual({r["msg"]: r for r in d.records()}["grpc security"]["tls"], "on")
            # gRPC threads started while the TLS files were checked must not take SIGTERM.
            self.assertEqual(d.stop(), 0, d.log())


if __name__ == "__main__":
    unittest.main()
