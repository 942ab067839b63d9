#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""LaTeX OCR from Python against a running cpmd: the smallest client of cpm.v1.Ocr, until
`cpmctl ocr` exists. Uses Debian's python3-grpcio and the stubs the build generates.

  /usr/bin/python3 tests/integration/ocr_example.py IMAGE [--server 127.0.0.1:50051] [--stream]
"""
import argparse
import os
import sys

sys.path.insert(0, os.environ.get("CPM_PY_STUBS", os.path.join(os.path.dirname(__file__), "../../build/tests/python")))

import grpc  # noqa: E402

from cpm.v1 import ocr_pb2, ocr_pb2_grpc  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image")
    ap.add_argument("--server", default=os.environ.get("CPM_SERVER", "127.0.0.1:50051"))
    ap.add_argument("--adapter", default="")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--stream", action="store_true", help="print the text as it is decoded")
    args = ap.parse_args()
    with open(args.image, "rb") as f:
        request = ocr_pb2.RecognizeRequest(image=f.read(), adapter=args.adapter,
                                           decoding=ocr_pb2.DecodingOptions(max_new_tokens=args.max_new_tokens))
    stub = ocr_pb2_grpc.OcrStub(grpc.insecure_channel(args.server))
    try:
        if args.stream:
            for part in stub.RecognizeStream(request, timeout=300):
                if part.HasField("delta"):
                    print(part.delta.text, end="", flush=True)
            print()
        else:
            r = stub.Recognize(request, timeout=300)
            print(r.text)
            print(f"{r.prompt_tokens} prompt + {r.completion_tokens} new tokens, "
                  f"{r.timings.total.ToTimedelta().total_seconds() * 1e3:.0f} ms", file=sys.stderr)
    except grpc.RpcError as e:
        print(f"ocr: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
