# SPDX-License-Identifier: Apache-2.0
"""cpmctl's TLS and bearer tokens against the real cpmd serving TLS with an admin and an inference
token (tiny random checkpoint, CPU): --tls-ca / --token, CPM_TLS_CA / CPM_TOKEN and the config file, with their
precedence; what a missing, wrong or too weak token gives; a plaintext client or an untrusted CA
against a TLS daemon; that no token ever shows in cpmctl's output; and client certificates for a
daemon that requires them (mutual TLS).

Certificates are made at test time with the `openssl` command.
"""
import json
import os
import subprocess
import tempfile
import time
import unittest

from cpmd_harness import CpmctlAssertions, Daemon, cpmctl, make_tiny_model

ADMIN = "admin-" + os.urandom(16).hex()
INFERENCE = "inference-" + os.urandom(16).hex()
WRONG = "wrong-" + os.urandom(16).hex()


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d):
    """ca.crt signs server.crt (127.0.0.1) and client.crt; other-ca.crt signs other-client.crt."""
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


class CpmctlAuthTest(CpmctlAssertions, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cpmctl-auth-")
        make_pki(cls.tmp.name)
        model = make_tiny_model(os.path.join(cls.tmp.name, "tiny"))
        env = dict(os.environ, CPMD_ADMIN_TOKEN=ADMIN, CPMD_INFERENCE_TOKEN=INFERENCE)
        pki = os.path.join(cls.tmp.name, "server")
        cls.daemon = Daemon("--model", model, "--tls-cert-file", pki + ".crt", "--tls-key-file", pki + ".key",
                            env=env).start()
        # Adapters (an admin service) answer once the model is loaded.
        ca = os.path.join(cls.tmp.name, "ca.crt")
        for _ in range(600):
            r = cpmctl("--server", cls.daemon.address, "--tls-ca", ca, "--token", ADMIN, "health", "--service",
                       "cpm.v1.Ocr")
            if r.returncode == 0:
                break
            time.sleep(0.1)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop_cleanly()
        cls.tmp.cleanup()

    def pki(self, name):
        return os.path.join(self.tmp.name, name)

    def ctl(self, *args, env_extra=None):
        r = cpmctl("--server", self.daemon.address, "--timeout", "20", *args, env_extra=env_extra)
        for secret in (ADMIN, INFERENCE, WRONG):
            self.assertNotIn(secret, r.stdout + r.stderr)
        return r

    def assert_ok(self, r):
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def test_flags(self):
        ca = self.pki("ca.crt")
        info = json.loads(self.assert_ok(self.ctl("--tls-ca", ca, "--token", INFERENCE, "--json", "info")).stdout)
        self.assertEqual(info["status"]["grpc_address"].rsplit(":", 1)[1], str(self.daemon.grpc_port))
        self.assert_ok(self.ctl("--tls-ca", ca, "--token", ADMIN, "adapters"))
        # Health is open: probes cannot send tokens.
        self.assert_ok(self.ctl("--tls-ca", ca, "health"))
        self.assert_one_line_error(self.ctl("--tls-ca", ca, "adapters"), 1, "UNAUTHENTICATED")
        self.assert_one_line_error(self.ctl("--tls-ca", ca, "--token", WRONG, "info"), 1, "UNAUTHENTICATED")
        self.assert_one_line_error(self.ctl("--tls-ca", ca, "--token", INFERENCE, "adapters"), 1, "PERMISSION_DENIED")
        # The metrics summary asks where /metrics is over TLS with the token, then reads it.
        r = self.assert_ok(self.ctl("--tls-ca", ca, "--token", INFERENCE, "metrics"))
        self.assertIn("cpm.v1.Admin/GetInfo", r.stdout)

    def test_tls_failures_are_unreachable_or_usage(self):
        self.assert_one_line_error(self.ctl("--token", ADMIN, "info"), 3, "cannot reach cpmd")  # plaintext
        self.assert_one_line_error(self.ctl("--tls-ca", self.pki("other-ca.crt"), "--token", ADMIN, "info"), 3,
                                   "cannot reach cpmd")
        self.assert_one_line_error(self.ctl("--tls-ca", self.pki("missing.crt"), "info"), 2, "missing.crt",
                                   "--tls-ca")

    def test_environment_and_config_file(self):
        env = {"CPM_TLS_CA": self.pki("ca.crt"), "CPM_TOKEN": ADMIN}
        self.assert_ok(self.ctl("adapters", env_extra=env))
        # A flag beats the environment.
        self.assert_one_line_error(self.ctl("--token", INFERENCE, "adapters", env_extra=env), 1, "PERMISSION_DENIED")

        home = tempfile.mkdtemp(dir=self.tmp.name)
        os.makedirs(os.path.join(home, "cpmctl"))
        config = os.path.join(home, "cpmctl", "config.json")
        os.symlink(self.pki("ca.crt"), os.path.join(home, "cpmctl", "ca.pem"))
        with open(config, "w") as f:
            json.dump({"server": self.daemon.address, "token": ADMIN, "tls_ca": "ca.pem"}, f)
        os.chmod(config, 0o600)
        file_only = {"XDG_CONFIG_HOME": home}
        r = cpmctl("adapters", env_extra=file_only)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        # The environment beats the file.
        r = cpmctl("adapters", env_extra={**file_only, "CPM_TOKEN": INFERENCE})
        self.assert_one_line_error(r, 1, "PERMISSION_DENIED")
        # A token in a file others can read works, with a warning that names the file, not the token.
        os.chmod(config, 0o644)
        r = cpmctl("adapters", env_extra=file_only)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"{config} holds a token and other users may read it", r.stderr)
        self.assertNotIn(ADMIN, r.stderr)


class CpmctlMutualTlsTest(unittest.TestCase):
    """A daemon that requires client certificates (--tls-client-ca-file): cpmctl presents one with
    --tls-cert / --tls-key (or CPM_TLS_CERT / CPM_TLS_KEY); without one, or with one from another CA,
    it cannot get in."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cpmctl-mtls-")
        make_pki(cls.tmp.name)
        p = lambda name: os.path.join(cls.tmp.name, name)
        cls.p = staticmethod(p)
        cls.daemon = Daemon("--tls-cert-file", p("server.crt"), "--tls-key-file", p("server.key"),
                            "--tls-client-ca-file", p("ca.crt")).start()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop_cleanly()
        cls.tmp.cleanup()

    def health(self, *args, env_extra=None):
        return cpmctl("--server", self.daemon.address, "--timeout", "20", "--tls-ca", self.p("ca.crt"), *args,
                      "health", env_extra=env_extra)

    def test_a_client_certificate_from_the_ca_gets_in(self):
        r = self.health("--tls-cert", self.p("client.crt"), "--tls-key", self.p("client.key"))
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.health(env_extra={"CPM_TLS_CERT": self.p("client.crt"), "CPM_TLS_KEY": self.p("client.key")})
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_no_certificate_or_one_from_another_ca_is_refused(self):
        for args in ((), ("--tls-cert", self.p("other-client.crt"), "--tls-key", self.p("other-client.key"))):
            r = self.health(*args)
            self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
            self.assertIn("cannot reach cpmd", r.stderr)

    def test_half_a_client_identity_is_a_usage_error(self):
        r = self.health("--tls-cert", self.p("client.crt"))
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("give both --tls-cert and --tls-key", r.stderr)
        r = self.health("--tls-cert", self.p("client.crt"), "--tls-key", self.p("missing.key"))
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("missing.key", r.stderr)


if __name__ == "__main__":
    unittest.main()
