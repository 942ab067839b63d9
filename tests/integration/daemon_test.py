# SPDX-License-Identifier: Apache-2.0
"""The daemon as users and operators meet it: start, health, info, reflection, metrics, stop.

Runs the real cpmd on loopback, talks to it with cpmctl and with a Python client generated from our
.proto files (Debian's python3-grpcio), validates the /metrics scrape with promtool.
"""
import json
import os
import signal
import socket
import subprocess
import tempfile
import unittest

import grpc

from cpmd_harness import Daemon, cpmctl, binary

from cpm.v1 import admin_pb2, admin_pb2_grpc, common_pb2, ocr_pb2, ocr_pb2_grpc, training_pb2, training_pb2_grpc
import health_pb2
import health_pb2_grpc
import reflection_pb2
import reflection_pb2_grpc

CPM_SERVICES = {"cpm.v1.Training", "cpm.v1.Adapters", "cpm.v1.Ocr", "cpm.v1.Admin"}


class RunningDaemonTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon().start()
        cls.channel = grpc.insecure_channel(cls.daemon.address)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.daemon.stop_cleanly()

    def test_cpmctl_health_serving(self):
        r = cpmctl("--server", self.daemon.address, "health")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "SERVING")

    def test_cpmctl_reads_server_from_environment(self):
        r = cpmctl("health", "--json", env_extra={"CPM_SERVER": self.daemon.address})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["status"], "SERVING")

    def test_cpmctl_health_of_services_that_cannot_serve(self):
        # Training and Ocr need a model.
        for service in ("cpm.v1.Training", "cpm.v1.Ocr"):
            r = cpmctl("--server", self.daemon.address, "health", "--service", service)
            self.assertEqual(r.returncode, 1)
            self.assertEqual(r.stdout.strip(), f"NOT_SERVING {service}")

    def test_cpmctl_info(self):
        r = cpmctl("--server", self.daemon.address, "info")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("LibTorch", r.stdout)
        self.assertIn(f"grpc {self.daemon.address}", r.stdout)
        self.assertIn("model     none", r.stdout)
        self.assertRegex(r.stdout, r"\n  cpu     .+, \d+ cores")
        r = cpmctl("--server", self.daemon.address, "info", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout)
        self.assertEqual(info["status"]["grpc_address"], self.daemon.address)
        self.assertEqual(info["status"]["metrics_address"], f"127.0.0.1:{self.daemon.metrics_port}")
        self.assertEqual(info["model"]["state"], "MODEL_STATE_NONE")
        self.assertEqual(info["devices"][-1]["type"], "cpu")

    def test_python_client_health_and_info(self):
        health = health_pb2_grpc.HealthStub(self.channel)
        resp = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        self.assertEqual(resp.status, health_pb2.HealthCheckResponse.SERVING)
        resp = health.Check(health_pb2.HealthCheckRequest(service="cpm.v1.Admin"), timeout=10)
        self.assertEqual(resp.status, health_pb2.HealthCheckResponse.SERVING)
        with self.assertRaises(grpc.RpcError) as e:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

        info = admin_pb2_grpc.AdminStub(self.channel).GetInfo(admin_pb2.GetInfoRequest(), timeout=10)
        self.assertTrue(info.build.version)
        self.assertTrue(info.build.torch_version)
        self.assertEqual(info.build.grpc_version.split(".")[0], "1")
        self.assertGreaterEqual(info.status.uptime.seconds, 0)
        self.assertGreater(info.status.resident_memory_bytes, 1 << 20)
        self.assertEqual(list(info.status.unimplemented_services), [])

    def test_training_without_a_model_says_what_to_do(self):
        stub = training_pb2_grpc.TrainingStub(self.channel)
        # What needs the model's tokenizer says so; what only reads the job store answers.
        with self.assertRaises(grpc.RpcError) as e:
            stub.SubmitJob(training_pb2.SubmitJobRequest(spec=training_pb2.JobSpec(dataset_id="ds-1")), timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("--model", e.exception.details())
        manifest = training_pb2.DatasetManifest(dataset_file="a.csv", files=[common_pb2.FileInfo(
            path="a.csv", size_bytes=0, sha256="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")])
        with self.assertRaises(grpc.RpcError) as e:
            stub.UploadDataset(iter([training_pb2.UploadDatasetRequest(manifest=manifest)]), timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(len(stub.ListJobs(training_pb2.ListJobsRequest(), timeout=10).jobs), 0)
        with self.assertRaises(grpc.RpcError) as e:
            list(stub.WatchJob(training_pb2.WatchJobRequest(id="x"), timeout=10))
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_reflection_lists_every_service(self):
        stub = reflection_pb2_grpc.ServerReflectionStub(self.channel)
        responses = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
        names = {s.name for s in responses[0].list_services_response.service}
        self.assertTrue(CPM_SERVICES <= names, names)
        self.assertIn("grpc.health.v1.Health", names)
        self.assertIn("grpc.reflection.v1alpha.ServerReflection", names)
        # A symbol resolves to its file, as grpcurl needs.
        responses = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="cpm.v1.Training")]), timeout=10))
        self.assertTrue(responses[0].file_descriptor_response.file_descriptor_proto)

    def test_metrics_scrape_passes_promtool_and_counts_rpcs(self):
        cpmctl("--server", self.daemon.address, "health")
        training_pb2_grpc.TrainingStub(self.channel).ListJobs(training_pb2.ListJobsRequest(), timeout=10)
        content_type, text = self.daemon.scrape()
        self.assertTrue(content_type.startswith("text/plain; version=0.0.4"), content_type)
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr + text)
        self.assertRegex(text, r'\ncpm_build_info\{version="[^"]+",git_commit="[^"]+",torch_version="[^"]+"')
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                     "process_threads", "process_start_time_seconds", "process_max_fds"):
            self.assertRegex(text, rf"\n{name} \d", name)
        self.assertRegex(text, r'\ngrpc_server_handled_total\{grpc_type="unary",grpc_service="grpc.health.v1.Health",'
                               r'grpc_method="Check",grpc_code="OK"\} [1-9]')
        self.assertRegex(text, r'\ngrpc_server_handled_total\{grpc_type="unary",grpc_service="cpm.v1.Training",'
                               r'grpc_method="ListJobs",grpc_code="OK"\} [1-9]')
        self.assertRegex(text, r'\ngrpc_server_handling_seconds_count\{grpc_type="unary",grpc_service="cpm.v1.Training",'
                               r'grpc_method="ListJobs"\} [1-9]')

    def test_job_store_is_sqlite_in_wal_mode(self):
        db = os.path.join(self.daemon.data_dir, "cpmd.db")
        out = subprocess.run(["sqlite3", db, "PRAGMA journal_mode; PRAGMA user_version;"],
                             capture_output=True, text=True, check=True).stdout.split()
        self.assertEqual(out[0], "wal")
        self.assertGreaterEqual(int(out[1]), 1)

    def test_logs_are_structured(self):
        for line in self.daemon.log().splitlines():
            self.assertRegex(line, r'^ts=\S+Z level=(debug|info|warn|error) msg="[^"]*"')


MODEL_CONFIG = {
    "architectures": ["MiniCPMO"], "model_type": "minicpmo", "hidden_size": 256,
    "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "vocab_size": 151700, "query_num": 64, "slice_config": {"max_slice_nums": 9, "scale_resolution": 448},
    "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                      "num_attention_heads": 2, "patch_size": 14, "image_size": 980},
}


class ModelDirectoryTest(unittest.TestCase):
    def test_a_directory_without_weights_fails_to_load_and_the_daemon_keeps_serving(self):
        with tempfile.TemporaryDirectory() as model:
            with open(os.path.join(model, "config.json"), "w") as f:
                json.dump(MODEL_CONFIG, f)
            with Daemon("--model", model) as d:
                d.wait_for_log("model failed to load; Ocr and Adapters answer FAILED_PRECONDITION")
                info = json.loads(cpmctl("--server", d.address, "info", "--json").stdout)
                m = info["model"]
                self.assertEqual(m["path"], model)
                self.assertEqual(m["architecture"], "MiniCPMO")
                self.assertEqual(m["llm"]["hidden_size"], 256)
                self.assertEqual(m["llm"]["head_dim"], 64)
                self.assertEqual(m["vision"]["num_hidden_layers"], 2)
                self.assertEqual(m["resampler"]["num_heads"], 2)
                self.assertEqual(m["slicing"]["max_slice_nums"], 9)
                # The loader's error, as it came.
                self.assertEqual(m["state"], "MODEL_STATE_FAILED")
                self.assertIn("no tokenizer.json", m["error"])
                text = cpmctl("--server", d.address, "info").stdout
                self.assertIn("MiniCPMO: LLM 2 layers, hidden 256", text)
                self.assertIn("preprocessor_config.json", d.log())  # missing optional files are named
                with grpc.insecure_channel(d.address) as channel:
                    with self.assertRaises(grpc.RpcError) as e:
                        ocr_pb2_grpc.OcrStub(channel).Recognize(ocr_pb2.RecognizeRequest(image=b"x"), timeout=10)
                    self.assertEqual(e.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
                    self.assertIn("the model failed to load", e.exception.details())
                    self.assertIn("no tokenizer.json", e.exception.details())
                    health = health_pb2_grpc.HealthStub(channel)
                    status = health.Check(health_pb2.HealthCheckRequest(service="cpm.v1.Ocr"), timeout=10).status
                    self.assertEqual(status, health_pb2.HealthCheckResponse.NOT_SERVING)
                    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
                    self.assertEqual(status, health_pb2.HealthCheckResponse.SERVING)

    def test_broken_config_json_stops_the_daemon_with_the_reason(self):
        with tempfile.TemporaryDirectory() as model:
            with open(os.path.join(model, "config.json"), "w") as f:
                json.dump(dict(MODEL_CONFIG, hidden_size=250), f)
            d = Daemon("--model", model)
            try:
                with self.assertRaises(RuntimeError) as e:
                    d.start(timeout=20)
                self.assertEqual(d.proc.returncode, 1)
                self.assertIn("config.json", str(e.exception))
                self.assertIn("hidden_size 250 is not a multiple of num_attention_heads", str(e.exception))
            finally:
                d.close()


class LifecycleTest(unittest.TestCase):
    def test_sigterm_and_sigint_exit_cleanly(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with Daemon() as d:
                self.assertEqual(d.stop(sig, timeout=20), 0, d.log())
                self.assertIn('msg="cpmd stopped"', d.log())

    def test_sigterm_drains_an_open_stream(self):
        # A server-stream call in flight when SIGTERM arrives finishes, then cpmd exits 0.
        with Daemon("--shutdown-grace-seconds", "5") as d:
            channel = grpc.insecure_channel(d.address)
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
            self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVING)
            d.proc.send_signal(signal.SIGTERM)
            statuses = []
            try:
                for msg in watch:
                    statuses.append(msg.status)
            except grpc.RpcError:
                pass
            self.assertEqual(d.proc.wait(timeout=20), 0, d.log())
            self.assertIn(health_pb2.HealthCheckResponse.NOT_SERVING, statuses)
            channel.close()

    def test_json_logs(self):
        with Daemon("--log-format", "json") as d:
            d.stop()
            lines = [json.loads(l) for l in d.log().splitlines() if l.strip()]
            self.assertEqual(lines[0]["msg"], "cpmd starting")
            self.assertTrue(all({"ts", "level", "msg"} <= set(l) for l in lines))

    def test_config_file_and_flag_precedence(self):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = os.path.join(tmp, "cpmd.json")
            with open(cfg, "w") as f:
                json.dump({"log_format": "json", "data_dir": os.path.join(tmp, "from-file")}, f)
            with Daemon("--config", cfg, "--log-format", "text") as d:
                # The harness passes --data-dir, which beats the file; --log-format text beats it too.
                self.assertIn('msg="cpmd starting"', d.log())
                self.assertFalse(os.path.exists(os.path.join(tmp, "from-file")))
                self.assertTrue(os.path.exists(os.path.join(d.data_dir, "cpmd.db")))

    def test_bad_configuration_exits_2_with_a_clear_message(self):
        cases = [
            (["--listen", "nowhere"], "is not HOST:PORT"),
            (["--log-level", "loud"], "log_level 'loud'"),
            (["--model", "/nonexistent/model"], "is not a directory"),
            (["--device", "gpu"], "device 'gpu' is not one of"),
            (["--dtype", "int8"], "dtype 'int8' is not one of"),
            (["--max-batch-size", "0"], "max_batch_size 0 is out of range"),
            (["--adapter-roots", "/nonexistent/adapters"], "'/nonexistent/adapters' in adapter_roots is not a directory"),
            (["--dataset-roots", "/nonexistent/data"], "'/nonexistent/data' in dataset_roots is not a directory"),
            (["--config", "/nonexistent/cpmd.json"], "cannot be opened"),
            (["--bogus-flag"], "bogus-flag"),
        ]
        for args, message in cases:
            r = subprocess.run([binary("cpmd"), *args], capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(message, r.stderr, args)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = os.path.join(tmp, "cpmd.json")
            with open(cfg, "w") as f:
                f.write('{"listen": "127.0.0.1:0", "colour": "blue"}')
            r = subprocess.run([binary("cpmd"), "--config", cfg], capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2)
            self.assertIn("unknown key 'colour'", r.stderr)

    def test_a_device_that_is_not_there_stops_the_daemon(self):
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run([binary("cpmd"), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                                "--data-dir", tmp, "--device", "cuda:99"], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("device cuda:99: ", r.stderr)
            self.assertIn("pass --device cpu", r.stderr)

    def test_second_daemon_on_the_same_data_dir_is_refused(self):
        with Daemon() as first:
            second = Daemon(data_dir=first.data_dir)
            try:
                with self.assertRaises(RuntimeError) as e:
                    second.start(timeout=20)
                self.assertIn("is in use by another cpmd", str(e.exception))
                self.assertEqual(second.proc.returncode, 1)
            finally:
                second.close()

    def test_port_in_use_is_a_clear_error(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            with tempfile.TemporaryDirectory() as tmp:
                r = subprocess.run([binary("cpmd"), "--listen", "127.0.0.1:0", "--metrics-listen", f"127.0.0.1:{port}",
                                    "--data-dir", tmp], capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 1)
                self.assertIn(f"cannot listen on 127.0.0.1:{port}", r.stderr)

    def test_cpmctl_unreachable_exits_3(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        r = cpmctl("--server", f"127.0.0.1:{port}", "--timeout", "2", "health")
        self.assertEqual(r.returncode, 3)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn(f"cannot reach cpmd at 127.0.0.1:{port}", r.stderr)

    def test_cpmctl_usage_errors_exit_2(self):
        self.assertEqual(cpmctl().returncode, 2)
        self.assertEqual(cpmctl("frobnicate").returncode, 2)
        r = cpmctl("health", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("Example:", r.stdout)


if __name__ == "__main__":
    unittest.main()
