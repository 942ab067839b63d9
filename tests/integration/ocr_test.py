# SPDX-License-Identifier: Apache-2.0
"""OCR and adapters through the real cpmd: the tiny random checkpoint on the CPU, formula images from
tests/data, a Python client generated from our .proto files (Debian's python3-grpcio), /metrics checked
with promtool.

The checkpoint is the base of the committed adapter tests/data/adapters/cpmd_written (tiny, bf16,
seed 11). cpmd takes its defaults: float32 on the CPU, bfloat16 on a GPU when there is one.
"""
import concurrent.futures
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import grpc

from cpmd_harness import Daemon, make_tiny_model

from cpm.v1 import (adapters_pb2, adapters_pb2_grpc, admin_pb2, admin_pb2_grpc, common_pb2, ocr_pb2,
                    ocr_pb2_grpc)
import health_pb2
import health_pb2_grpc

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
FORMULAS = os.path.join(DATA, "images", "formulas")
WRITTEN_ADAPTER = os.path.join(DATA, "adapters", "cpmd_written")
MAX_NEW_TOKENS = 8


def formula(name):
    with open(os.path.join(FORMULAS, name), "rb") as f:
        return f.read()


def request(image, adapter="", **decoding):
    decoding.setdefault("max_new_tokens", MAX_NEW_TOKENS)
    return ocr_pb2.RecognizeRequest(image=image, adapter=adapter, decoding=ocr_pb2.DecodingOptions(**decoding))


class OcrDaemonTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cpmd-ocr-")
        model = make_tiny_model(os.path.join(cls.tmp.name, "tiny"))
        cls.root = os.path.join(cls.tmp.name, "adapters")
        cls.outside = os.path.join(cls.tmp.name, "outside")
        shutil.copytree(WRITTEN_ADAPTER, os.path.join(cls.root, "cpmd_written"))
        shutil.copytree(WRITTEN_ADAPTER, os.path.join(cls.outside, "cpmd_written"))
        os.symlink(os.path.join(cls.outside, "cpmd_written"), os.path.join(cls.root, "escape"))
        # A corrupt adapter: the right config, a cut-off safetensors file.
        corrupt = os.path.join(cls.root, "corrupt")
        os.makedirs(corrupt)
        shutil.copy(os.path.join(WRITTEN_ADAPTER, "adapter_config.json"), corrupt)
        with open(os.path.join(WRITTEN_ADAPTER, "adapter_model.safetensors"), "rb") as f:
            blob = f.read()
        with open(os.path.join(corrupt, "adapter_model.safetensors"), "wb") as f:
            f.write(blob[:len(blob) // 2])
        os.makedirs(os.path.join(cls.root, "empty"))
        cls.images = sorted(os.listdir(FORMULAS))[:16]
        cls.daemon = Daemon("--model", model, "--adapter-roots", cls.root).start()
        cls.daemon.wait_serving("cpm.v1.Ocr")
        cls.channel = grpc.insecure_channel(cls.daemon.address)
        cls.ocr = ocr_pb2_grpc.OcrStub(cls.channel)
        cls.adapters = adapters_pb2_grpc.AdaptersStub(cls.channel)
        cls.health = health_pb2_grpc.HealthStub(cls.channel)
        cls.model = admin_pb2_grpc.AdminStub(cls.channel).GetInfo(admin_pb2.GetInfoRequest(), timeout=10).model

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.daemon.stop_cleanly()
        cls.tmp.cleanup()

    def assert_serving(self):
        for service in ("", "cpm.v1.Ocr", "cpm.v1.Adapters"):
            status = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            self.assertEqual(status, health_pb2.HealthCheckResponse.SERVING, service)
        self.assertIsNone(self.daemon.proc.poll())
        r = self.ocr.Recognize(request(formula(self.images[0]), max_new_tokens=2), timeout=60)
        self.assertGreaterEqual(r.completion_tokens, 1)

    def assert_code(self, code, call, *args, message=None):
        with self.assertRaises(grpc.RpcError) as e:
            result = call(*args, timeout=60)
            if not hasattr(result, "ListFields"):  # a stream: the error comes while reading
                list(result)
        self.assertEqual(e.exception.code(), code, e.exception.details())
        if message:
            self.assertIn(message, e.exception.details())
        return e.exception.details()

    def recognize(self, image, adapter="", **decoding):
        return self.ocr.Recognize(request(image, adapter, **decoding), timeout=120)

    def load(self, name, path="", pin=False):
        return self.adapters.LoadAdapter(adapters_pb2.LoadAdapterRequest(name=name, path=path, pin=pin),
                                         timeout=120)

    # ---- OCR ------------------------------------------------------------------------------------

    def test_info_reports_the_loaded_model(self):
        info = admin_pb2_grpc.AdminStub(self.channel).GetInfo(admin_pb2.GetInfoRequest(), timeout=10)
        self.assertEqual(info.model.state, admin_pb2.MODEL_STATE_READY, info.model.error)
        gpus = [d for d in info.devices if d.type == "cuda"]
        self.assertEqual(info.model.device, "cuda:0" if gpus else "cpu")
        self.assertEqual(info.model.dtype, "bfloat16" if gpus else "float32")
        self.assertGreater(info.model.num_parameters, 1_000_000)
        self.assertEqual(info.model.architecture, "MiniCPMO")
        self.assertEqual(list(info.status.unimplemented_services), [])

    def test_recognize_formula_images(self):
        for name in self.images[:4]:
            r = self.recognize(formula(name))
            self.assertGreaterEqual(r.completion_tokens, 1, name)
            self.assertLessEqual(r.completion_tokens, MAX_NEW_TOKENS, name)
            if r.finish_reason == ocr_pb2.FINISH_REASON_LENGTH:
                self.assertEqual(r.completion_tokens, MAX_NEW_TOKENS, name)
            else:
                self.assertEqual(r.finish_reason, ocr_pb2.FINISH_REASON_STOP, name)
            self.assertGreater(r.prompt_tokens, 64, name)  # one slice is 64 placeholders
            self.assertGreaterEqual(r.num_image_slices, 1, name)
            self.assertGreaterEqual(r.batch_size, 1, name)
            self.assertEqual(r.adapter, "")
            total = r.timings.total.ToNanoseconds()
            self.assertGreater(r.timings.prefill.ToNanoseconds(), 0, name)
            self.assertGreater(r.timings.decode.ToNanoseconds(), 0, name)
            self.assertGreaterEqual(total, r.timings.prefill.ToNanoseconds() + r.timings.decode.ToNanoseconds())
            # Greedy decoding is deterministic.
            again = self.recognize(formula(name))
            self.assertEqual(again.text, r.text, name)
            self.assertEqual(again.completion_tokens, r.completion_tokens, name)

    def test_stream_deltas_concatenate_to_the_final_text(self):
        image = formula(self.images[1])
        messages = list(self.ocr.RecognizeStream(request(image), timeout=120))
        deltas, done = messages[:-1], messages[-1]
        self.assertEqual(done.WhichOneof("part"), "done")
        self.assertTrue(deltas)
        self.assertTrue(all(m.WhichOneof("part") == "delta" for m in deltas))
        self.assertEqual("".join(m.delta.text for m in deltas), done.done.text)
        self.assertEqual(sum(len(m.delta.token_ids) for m in deltas), done.done.completion_tokens)
        self.assertEqual(done.done.text, self.recognize(image).text)

    def test_bad_inputs_leave_the_daemon_serving(self):
        png = formula(self.images[0])
        cases = [
            (b"", {}, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
            (png[:len(png) // 2], {}, grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
            (b"\x89PNG\r\n\x1a\n" + os.urandom(64), {}, grpc.StatusCode.INVALID_ARGUMENT, "image"),
            (os.urandom(4096), {}, grpc.StatusCode.INVALID_ARGUMENT, "image"),
            (png, {"adapter": "no-such-adapter"}, grpc.StatusCode.NOT_FOUND, "no-such-adapter"),
            (png, {"adapter": "../etc"}, grpc.StatusCode.INVALID_ARGUMENT, None),
            (png, {"min_new_tokens": 2}, grpc.StatusCode.INVALID_ARGUMENT, "min_new_tokens"),
            (png, {"max_new_tokens": 0}, grpc.StatusCode.INVALID_ARGUMENT, "max_new_tokens"),
            (png, {"temperature": 0.5}, grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
            (png, {"strategy": ocr_pb2.DECODING_STRATEGY_SAMPLING, "top_p": 1.5},
             grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
            (png, {"strategy": ocr_pb2.DECODING_STRATEGY_BEAM, "num_beams": 1000},
             grpc.StatusCode.INVALID_ARGUMENT, "num_beams"),
            (png, {"strategy": 42}, grpc.StatusCode.INVALID_ARGUMENT, "strategy"),
            (png, {"max_slice_nums": 0}, grpc.StatusCode.INVALID_ARGUMENT, "max_slice_nums"),
        ]
        for image, fields, code, message in cases:
            adapter = fields.pop("adapter", "")
            slices = fields.pop("max_slice_nums", None)
            req = request(image, adapter, **fields)
            if slices is not None:
                req.max_slice_nums = slices
            for call in (self.ocr.Recognize, self.ocr.RecognizeStream):
                with self.subTest(fields=fields, adapter=adapter, call=call):
                    self.assert_code(code, call, req, message=message)
        self.assert_serving()

    def test_other_decoding_strategies(self):
        image = formula(self.images[2])
        sampled = [self.recognize(image, strategy=ocr_pb2.DECODING_STRATEGY_SAMPLING, seed=7) for _ in range(2)]
        self.assertEqual(sampled[0].text, sampled[1].text)  # seeded sampling is reproducible
        beam = self.recognize(image, strategy=ocr_pb2.DECODING_STRATEGY_BEAM, num_beams=2)
        self.assertGreaterEqual(beam.completion_tokens, 1)
        penalised = self.recognize(image, repetition_penalty=1.3)
        self.assertGreaterEqual(penalised.completion_tokens, 1)

    def test_cancelled_calls_leave_the_daemon_serving(self):
        futures = [self.ocr.Recognize.future(request(formula(name)), timeout=120) for name in self.images[:6]]
        for f in futures:
            f.cancel()
        stream = self.ocr.RecognizeStream(request(formula(self.images[0])), timeout=120)
        stream.cancel()
        self.assert_serving()

    def test_concurrent_recognize_calls_are_all_answered(self):
        images = [formula(name) for name in self.images]
        self.assertEqual(len(images), 16)
        alone = [self.recognize(image, max_new_tokens=4) for image in images]
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            together = list(pool.map(lambda image: self.recognize(image, max_new_tokens=4), images))
        for i, (a, t) in enumerate(zip(alone, together)):
            self.assertGreaterEqual(t.completion_tokens, 1)
            # In float32 a batch row equals the request run alone; bfloat16 rounds differently
            # with the batch's padding, so only float32 promises equal tokens.
            if self.model.dtype == "float32":
                self.assertEqual(t.text, a.text, self.images[i])
                self.assertEqual(t.completion_tokens, a.completion_tokens, self.images[i])
        print(f"16 concurrent Recognize calls: batch sizes {sorted(r.batch_size for r in together)}")

    # ---- Adapters -------------------------------------------------------------------------------

    def test_adapter_lifecycle(self):
        adapter_dir = os.path.realpath(os.path.join(self.root, "cpmd_written"))
        a = self.load("written", "cpmd_written")  # relative to the first adapter root
        self.assertEqual(a.state, adapters_pb2.ADAPTER_STATE_LOADED, a.error)
        self.assertEqual(a.path, adapter_dir)
        self.assertEqual(a.r, 4)
        self.assertEqual(a.lora_alpha, 12.0)
        self.assertFalse(a.use_rslora)
        self.assertEqual(list(a.modules_to_save), ["resampler", "vpm"])
        self.assertIn("llm.model.layers.0.self_attn.q_proj", a.target_modules)
        self.assertIn("llm.model.layers.1.mlp.down_proj", a.target_modules)
        files = sorted(os.listdir(adapter_dir))
        self.assertEqual(a.size_bytes, sum(os.path.getsize(os.path.join(adapter_dir, f)) for f in files))
        self.assertGreater(a.device_bytes, 0)
        self.assertFalse(a.pinned)
        self.assertGreater(a.load_time.seconds, 0)

        got = self.adapters.GetAdapter(adapters_pb2.GetAdapterRequest(name="written"), timeout=10)
        self.assertEqual(got.state, adapters_pb2.ADAPTER_STATE_LOADED)
        listed = self.adapters.ListAdapters(adapters_pb2.ListAdaptersRequest(), timeout=10)
        self.assertIn("written", [x.name for x in listed.adapters])
        self.assertGreaterEqual(listed.device_bytes_used, a.device_bytes)
        self.assertEqual(listed.device_bytes_budget, 0)

        # The adapter changes the answer (LoRA deltas plus its own vision tower and resampler).
        image = formula(self.images[0])
        base = list(self.ocr.RecognizeStream(request(image), timeout=120))
        adapted = list(self.ocr.RecognizeStream(request(image, "written"), timeout=120))
        self.assertEqual(adapted[-1].done.adapter, "written")
        ids = lambda messages: [i for m in messages[:-1] for i in m.delta.token_ids]
        self.assertNotEqual(ids(adapted), ids(base))
        served = self.adapters.GetAdapter(adapters_pb2.GetAdapterRequest(name="written"), timeout=10)
        self.assertGreaterEqual(served.requests_served, 1)
        self.assertGreater(served.last_used_time.seconds, 0)

        # Export streams the folder's files: announced with size and SHA-256, then contiguous chunks.
        exported, info = {}, {}
        for m in self.adapters.ExportAdapter(adapters_pb2.ExportAdapterRequest(name="written"), timeout=60):
            if m.WhichOneof("part") == "file":
                info[m.file.path] = m.file
                exported[m.file.path] = b""
                current = m.file.path
            else:
                self.assertEqual(m.chunk.path, current)
                self.assertEqual(m.chunk.offset, len(exported[current]))
                exported[current] += m.chunk.data
                self.assertEqual(m.chunk.last, len(exported[current]) == info[current].size_bytes)
        self.assertEqual(sorted(exported), files)
        for name, data in exported.items():
            with open(os.path.join(adapter_dir, name), "rb") as f:
                self.assertEqual(data, f.read(), name)
            self.assertEqual(info[name].sha256, hashlib.sha256(data).hexdigest(), name)

        # A corrupt folder under the same name is refused, and the loaded version keeps serving.
        self.assert_code(grpc.StatusCode.INVALID_ARGUMENT, self.adapters.LoadAdapter,
                         adapters_pb2.LoadAdapterRequest(name="written", path="corrupt"))
        kept = self.adapters.GetAdapter(adapters_pb2.GetAdapterRequest(name="written"), timeout=10)
        self.assertEqual(kept.state, adapters_pb2.ADAPTER_STATE_LOADED)
        self.assertEqual(kept.path, adapter_dir)
        self.assertTrue(kept.error)
        self.assertEqual(self.recognize(image, "written").text, adapted[-1].done.text)

        unloaded = self.adapters.UnloadAdapter(adapters_pb2.UnloadAdapterRequest(name="written"), timeout=60)
        self.assertEqual(unloaded.state, adapters_pb2.ADAPTER_STATE_REGISTERED)
        self.assertEqual(unloaded.device_bytes, 0)
        # A request naming it loads it again from its folder.
        self.assertEqual(self.recognize(image, "written").text, adapted[-1].done.text)
        # Loading by registered name only changes the pin of a loaded adapter.
        pinned = self.load("written", pin=True)
        self.assertTrue(pinned.pinned)
        self.assertEqual(pinned.state, adapters_pb2.ADAPTER_STATE_LOADED)
        self.assert_serving()

    def test_adapter_paths_stay_inside_the_roots(self):
        outside = os.path.join(self.outside, "cpmd_written")
        for path in (outside, "escape", "../outside/cpmd_written", "/etc",
                     os.path.join(self.root, "..", "outside", "cpmd_written")):
            with self.subTest(path=path):
                details = self.assert_code(grpc.StatusCode.PERMISSION_DENIED, self.adapters.LoadAdapter,
                                           adapters_pb2.LoadAdapterRequest(name="intruder", path=path))
                self.assertIn("outside the adapter roots", details)
        self.assert_code(grpc.StatusCode.INVALID_ARGUMENT, self.adapters.LoadAdapter,
                         adapters_pb2.LoadAdapterRequest(name="missing", path="no-such-folder"),
                         message="is not a directory")
        self.assert_code(grpc.StatusCode.INVALID_ARGUMENT, self.adapters.LoadAdapter,
                         adapters_pb2.LoadAdapterRequest(name="empty", path="empty"),
                         message="adapter_config.json")
        self.assert_code(grpc.StatusCode.INVALID_ARGUMENT, self.adapters.LoadAdapter,
                         adapters_pb2.LoadAdapterRequest(name="bad name!", path="cpmd_written"))
        # The refused paths registered nothing.
        names = [a.name for a in self.adapters.ListAdapters(adapters_pb2.ListAdaptersRequest(), timeout=10).adapters]
        self.assertNotIn("intruder", names)
        self.assertNotIn("missing", names)
        self.assert_serving()

    def test_unknown_adapters_are_not_found(self):
        for call, req in (
                (self.adapters.LoadAdapter, adapters_pb2.LoadAdapterRequest(name="ghost")),
                (self.adapters.UnloadAdapter, adapters_pb2.UnloadAdapterRequest(name="ghost")),
                (self.adapters.GetAdapter, adapters_pb2.GetAdapterRequest(name="ghost")),
                (self.adapters.ExportAdapter, adapters_pb2.ExportAdapterRequest(name="ghost"))):
            with self.subTest(call=call):
                self.assert_code(grpc.StatusCode.NOT_FOUND, call, req, message="ghost")

    def test_a_failed_load_is_reported_and_refuses_requests(self):
        self.assert_code(grpc.StatusCode.INVALID_ARGUMENT, self.adapters.LoadAdapter,
                         adapters_pb2.LoadAdapterRequest(name="broken", path="corrupt"))
        broken = self.adapters.GetAdapter(adapters_pb2.GetAdapterRequest(name="broken"), timeout=10)
        self.assertEqual(broken.state, adapters_pb2.ADAPTER_STATE_FAILED)
        self.assertIn("adapter_model.safetensors", broken.error)
        self.assert_code(grpc.StatusCode.FAILED_PRECONDITION, self.ocr.Recognize,
                         request(formula(self.images[0]), "broken"), message="failed to load")

    def test_list_adapters_pages_and_filters(self):
        for name in ("page-a", "page-b", "page-c"):
            self.load(name, os.path.join(self.root, "cpmd_written"))
        self.adapters.UnloadAdapter(adapters_pb2.UnloadAdapterRequest(name="page-b"), timeout=60)
        seen, token = [], ""
        while True:
            page = self.adapters.ListAdapters(adapters_pb2.ListAdaptersRequest(
                page=common_pb2.PageRequest(page_size=1, page_token=token)), timeout=10)
            self.assertLessEqual(len(page.adapters), 1)
            seen += [a.name for a in page.adapters]
            token = page.next_page_token
            if not token:
                break
        self.assertEqual(seen, sorted(seen))
        self.assertTrue({"page-a", "page-b", "page-c"} <= set(seen))
        registered = self.adapters.ListAdapters(adapters_pb2.ListAdaptersRequest(
            states=[adapters_pb2.ADAPTER_STATE_REGISTERED]), timeout=10)
        self.assertIn("page-b", [a.name for a in registered.adapters])
        self.assertNotIn("page-a", [a.name for a in registered.adapters])
        self.assertTrue(all(a.state == adapters_pb2.ADAPTER_STATE_REGISTERED for a in registered.adapters))
        self.assert_code(grpc.StatusCode.INVALID_ARGUMENT, self.adapters.ListAdapters,
                         adapters_pb2.ListAdaptersRequest(page=common_pb2.PageRequest(page_size=-1)))

    # ---- Metrics --------------------------------------------------------------------------------

    def test_metrics_pass_promtool_and_carry_the_serving_series(self):
        image = formula(self.images[3])
        self.recognize(image)
        list(self.ocr.RecognizeStream(request(image), timeout=120))
        self.assert_code(grpc.StatusCode.INVALID_ARGUMENT, self.ocr.Recognize, request(b""))
        self.assert_code(grpc.StatusCode.NOT_FOUND, self.ocr.Recognize, request(image, "made-up-name"))
        self.load("metrics-probe", "cpmd_written")
        self.recognize(image, "metrics-probe")
        _, text = self.daemon.scrape()
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr + text)
        expected = [
            r'cpm_ocr_requests_total\{method="Recognize",adapter="",code="OK"\} [1-9]',
            r'cpm_ocr_requests_total\{method="RecognizeStream",adapter="",code="OK"\} [1-9]',
            r'cpm_ocr_requests_total\{method="Recognize",adapter="",code="INVALID_ARGUMENT"\} [1-9]',
            # Names nobody registered share one label value.
            r'cpm_ocr_requests_total\{method="Recognize",adapter="\(unregistered\)",code="NOT_FOUND"\} [1-9]',
            r'cpm_ocr_requests_total\{method="Recognize",adapter="metrics-probe",code="OK"\} 1',
            r'cpm_ocr_e2e_request_latency_seconds_bucket\{adapter="",le="0.3"\} \d',
            r'cpm_ocr_e2e_request_latency_seconds_bucket\{adapter="metrics-probe",le="7680"\} 1',
            r'cpm_ocr_request_queue_time_seconds_count\{adapter=""\} [1-9]',
            r'cpm_ocr_request_prefill_time_seconds_count\{adapter=""\} [1-9]',
            r'cpm_ocr_request_decode_time_seconds_count\{adapter=""\} [1-9]',
            r'cpm_ocr_time_to_first_token_seconds_bucket\{adapter="",le="0.001"\} \d',
            r'cpm_ocr_time_to_first_token_seconds_bucket\{adapter="",le="2560"\} [1-9]',
            r'cpm_ocr_time_per_output_token_seconds_bucket\{adapter="",le="0.01"\} \d',
            r'cpm_ocr_time_per_output_token_seconds_bucket\{adapter="",le="80"\} [1-9]',
            r'cpm_ocr_prompt_tokens_total\{adapter=""\} [1-9]',
            r'cpm_ocr_generation_tokens_total\{adapter=""\} [1-9]',
            r'cpm_ocr_batch_size_count [1-9]',
            r'cpm_ocr_queue_depth \d',
            r'cpm_ocr_queue_capacity 256',
            r'cpm_ocr_requests_running \d',
            r'cpm_adapter_loads_total\{adapter="metrics-probe",code="OK"\} 1',
            r'cpm_adapter_load_seconds_count\{adapter="metrics-probe"\} 1',
            r'cpm_adapters_loaded [1-9]',
            r'cpm_adapter_device_bytes [1-9]',
            r'cpm_adapter_device_budget_bytes 0',
            r'# TYPE cpm_gpu_memory_allocated_bytes gauge',
            r'# TYPE cpm_gpu_memory_reserved_bytes gauge',
            r'# TYPE cpm_gpu_memory_total_bytes gauge',
            r'grpc_server_handled_total\{grpc_type="server_stream",grpc_service="cpm.v1.Ocr",'
            r'grpc_method="RecognizeStream",grpc_code="OK"\} [1-9]',
        ]
        if self.model.device.startswith("cuda"):
            expected += [r'cpm_gpu_memory_allocated_bytes\{device="cuda:0"\} [1-9]',
                         r'cpm_gpu_memory_reserved_bytes\{device="cuda:0"\} [1-9]',
                         r'cpm_gpu_memory_total_bytes\{device="cuda:0"\} [1-9]']
        else:  # the families are declared without series
            self.assertNotIn("\ncpm_gpu_memory_allocated_bytes{", text)
        for pattern in expected:
            self.assertRegex(text, "\n" + pattern, pattern)
        for line in text.splitlines():
            if line and not line.startswith("#"):
                self.assertNotIn(":", re.split(r"[{ ]", line, 1)[0], line)


class ModellessDaemonTest(unittest.TestCase):
    """Without --model the model services say how to get one, and health says they cannot serve."""

    def test_ocr_and_adapters_need_a_model(self):
        with Daemon() as d, grpc.insecure_channel(d.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("cpm.v1.Ocr", "cpm.v1.Adapters"):
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
                self.assertEqual(status, health_pb2.HealthCheckResponse.NOT_SERVING, service)
            calls = [
                (ocr_pb2_grpc.OcrStub(channel).Recognize, ocr_pb2.RecognizeRequest(image=b"x")),
                (ocr_pb2_grpc.OcrStub(channel).RecognizeStream, ocr_pb2.RecognizeRequest(image=b"x")),
                (adapters_pb2_grpc.AdaptersStub(channel).LoadAdapter,
                 adapters_pb2.LoadAdapterRequest(name="a", path="a")),
                (adapters_pb2_grpc.AdaptersStub(channel).ListAdapters, adapters_pb2.ListAdaptersRequest()),
                (adapters_pb2_grpc.AdaptersStub(channel).ExportAdapter,
                 adapters_pb2.ExportAdapterRequest(name="a")),
            ]
            for call, req in calls:
                with self.assertRaises(grpc.RpcError) as e:
                    result = call(req, timeout=10)
                    if not hasattr(result, "ListFields"):
                        list(result)
                self.assertEqual(e.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
                self.assertEqual(e.exception.details(), "no model loaded; start cpmd with --model DIR")


if __name__ == "__main__":
    unittest.main()
