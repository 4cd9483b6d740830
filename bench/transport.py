"""Where the image bytes are copied between numpy, KServe's types and gRPC, and what it costs.

    flock /tmp/bench.lock .venv/bin/python bench/transport.py [--side 2048] [--scale 4]

Two parts, for a `side` px photo sent to a predictor and its `scale`x answer coming back:
1. In process, step by step: each step's wall seconds and peak-RSS growth (the kernel's
   high-water mark, reset before each step), for KServe's own path and for the gateway's
   (transformer/v2wire.py). A step that grows the peak by the tensor's size made a copy.
2. A real round trip: the gateway's `Predictors.infer` against a KServe predictor process
   (bench/overhead.py's echo predictor, real `EnhanceModel.predict`), wall and CPU of both
   processes and the gateway's peak-RSS growth. Run it with PYTHONPATH pointing at another
   checkout to compare.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("overhead", ROOT / "bench" / "overhead.py")
overhead = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(overhead)  # also fixes sys.path (PYTHONPATH first, then this checkout)


def peak_rss(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def reset_peak(pid: int | str = "self") -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def step(name: str, fn, size: int, results: list):
    reset_peak()
    before = peak_rss()
    start = time.perf_counter()
    value = fn()
    wall = time.perf_counter() - start
    grown = peak_rss() - before
    results.append((name, wall, grown / size))
    return value


def kserve_path(image: np.ndarray, answer: np.ndarray) -> list:
    from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest, ModelInferResponse
    from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

    out: list = []
    n_in, n_out = image.nbytes, answer.nbytes

    def request_steps():
        tensor = InferInput("image", list(image.shape), "UINT8")
        step("request: InferInput.set_data_from_numpy (tobytes)",
             lambda: tensor.set_data_from_numpy(image, binary_data=True), n_in, out)  # fmt: skip
        request = InferRequest(model_name="upscale", infer_inputs=[tensor])
        message = step("request: InferRequest.to_grpc", request.to_grpc, n_in, out)
        sent = step("request: SerializeToString", message.SerializeToString, n_in, out)
        parsed = step("request (predictor): ModelInferRequest.FromString",
                      lambda: ModelInferRequest.FromString(sent), n_in, out)  # fmt: skip
        got = step("request (predictor): InferRequest.from_grpc",
                   lambda: InferRequest.from_grpc(parsed), n_in, out)  # fmt: skip
        step("request (predictor): as_numpy", lambda: got.inputs[0].as_numpy(), n_in, out)
        return sent

    request = request_steps()
    output = InferOutput("image", list(answer.shape), "UINT8")
    step("answer (predictor): InferOutput.set_data_from_numpy (tobytes)",
         lambda: output.set_data_from_numpy(answer, binary_data=True), n_out, out)  # fmt: skip
    response = InferResponse("r", "upscale", [output], use_binary_outputs=True)
    message = step("answer (predictor): InferResponse.to_grpc", response.to_grpc, n_out, out)
    data = step("answer (predictor): SerializeToString", message.SerializeToString, n_out, out)
    del message, response
    parsed = step("answer (gateway): ModelInferResponse.FromString",
                  lambda: ModelInferResponse.FromString(data), n_out, out)  # fmt: skip
    back = step("answer (gateway): InferResponse.from_grpc",
                lambda: InferResponse.from_grpc(parsed), n_out, out)  # fmt: skip
    step("answer (gateway): as_numpy", lambda: back.outputs[0].as_numpy(), n_out, out)
    return out, request, data


def lean_path(image: np.ndarray, answer: np.ndarray, request: bytes, data: bytes) -> list:
    from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest
    from kserve.protocol.infer_type import InferOutput, InferResponse

    from transformer.v2wire import decode_response, encode_request

    out: list = []
    message = ModelInferRequest(model_name="upscale", inputs=[ModelInferRequest.InferInputTensor(
        name="image", datatype="UINT8", shape=list(image.shape))])  # fmt: skip
    step("request: v2wire.encode_request (one join)",
         lambda: encode_request(message, [image]), image.nbytes, out)  # fmt: skip
    try:
        from predictors.v2grpc import decode_request, encode_response
    except ImportError:  # a checkout from before it
        return out
    got = step("request (predictor): v2grpc.decode_request",
               lambda: decode_request(request), image.nbytes, out)  # fmt: skip
    step("request (predictor): as_numpy", lambda: got.inputs[0].as_numpy(), image.nbytes, out)
    output = InferOutput("image", list(answer.shape), "UINT8", data=answer)
    response = InferResponse("r", "upscale", [output], use_binary_outputs=True)
    step("answer (predictor): v2grpc.encode_response (one join)",
         lambda: encode_response(response), answer.nbytes, out)  # fmt: skip
    reply = step("answer (gateway): v2wire.decode_response", lambda: decode_response(data),
                 len(data), out)  # fmt: skip
    step("answer (gateway): np.frombuffer", lambda: np.frombuffer(reply.raw_outputs[0], np.uint8),
         len(data), out)  # fmt: skip
    return out


def round_trip(image: np.ndarray, out_side: int, repeat: int) -> dict:
    echo = overhead.EchoPredictor()
    gateway = overhead.Gateway(echo)
    pid = echo.process.pid
    try:
        gateway.infer("upscale", image, out_side, out_side)  # warm-up
        runs = []
        for _ in range(repeat):
            reset_peak(), reset_peak(pid)
            before, predictor_before = peak_rss(), peak_rss(pid)
            timing, shape = gateway.infer("upscale", image, out_side, out_side)
            assert shape == (out_side, out_side, 3)
            runs.append({**timing, "peak_growth": peak_rss() - before,
                         "predictor_peak_growth": peak_rss(pid) - predictor_before})  # fmt: skip
        return {k: min(r[k] for r in runs) for k in runs[0]}
    finally:
        gateway.close()
        echo.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    image = overhead.photo(args.side)[None]
    answer = np.ascontiguousarray(overhead.upscaled(image[0], args.scale)[None])
    print(f"input {image.nbytes / 1e6:.1f} MB, answer {answer.nbytes / 1e6:.1f} MB\n")
    print("| step | wall s | peak RSS growth (x tensor size) |\n|---|---|---|")
    kserve, request, data = kserve_path(image, answer)
    has_v2wire = importlib.util.find_spec("transformer.v2wire")
    lean = lean_path(image, answer, request, data) if has_v2wire else []
    ours = "ours: transformer/v2wire.py, predictors/v2grpc.py"
    for title, rows in (("KServe's types", kserve), (ours, lean)):
        print(f"| **{title}** | | |")
        for name, wall, copies in rows:
            print(f"| {name} | {wall:.3f} | {copies:.2f} |")
    del data
    trip = round_trip(image[0], args.side * args.scale, args.repeat)
    print(
        f"\nround trip, {args.side} px in, {args.side * args.scale} px back (code: "
        f"{Path(sys.modules['transformer'].__file__).parent.parent}): {trip['wall']:.3f} s wall, "
        f"{trip['cpu']:.3f} s CPU (both processes), peak RSS growth: gateway +"
        f"{trip['peak_growth'] / 1e6:.0f} MB, "
        f"predictor +{trip['predictor_peak_growth'] / 1e6:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
