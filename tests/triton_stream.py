"""Triton's own gRPC client (`tritonclient.grpc`) on a predictor's ModelStreamInfer, run in a
process of its own: tritonclient registers the same `inference.*` protobuf names as KServe, so
the two cannot live in one process (tests/v2clients.py).

    python -m tests.triton_stream SPEC.json

SPEC: {"address", "requests": [{"model", "id", "image": "x.npy", "parameters": {...}}],
"headers": {...} (optional), "stream_timeout": seconds (optional), "cancel_after": n (optional:
stop_stream(cancel_requests=True) once n progress responses came)}. The requests go on one stream
(start_stream + async_stream_infer); each response is printed as one JSON line: {"t" (seconds
since the first request), "id", "final", "done", "total", "stage", "error", "output" (the answer
saved as .npy beside its input)}, then {"ended": why}.
"""

from __future__ import annotations

import json
import queue
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

MAX_MESSAGE = 256 << 20


def _parameter(response, name: str):
    value = response.parameters.get(name)
    kind = value.WhichOneof("parameter_choice") if value is not None else None
    return getattr(value, kind) if kind else None


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    events: queue.Queue = queue.Queue()
    client = triton.InferenceServerClient(
        spec["address"],
        channel_args=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ],
    )
    client.start_stream(
        callback=lambda result, error: events.put((result, error)),
        stream_timeout=spec.get("stream_timeout"),
        headers=spec.get("headers"),
    )
    inputs = {}
    start = time.monotonic()
    for request in spec["requests"]:
        image = np.load(request["image"])
        tensor = triton.InferInput("image", list(image.shape), "UINT8")
        tensor.set_data_from_numpy(image)
        inputs[request["id"]] = request["image"]
        client.async_stream_infer(
            request["model"],
            [tensor],
            request_id=request["id"],
            parameters=request.get("parameters") or None,
        )
    pending, progress = set(inputs), 0
    ended = "all answered"
    while pending:
        result, error = events.get()
        line: dict = {"t": round(time.monotonic() - start, 3)}
        if error is not None:
            line.update(error=str(error), status=error.status())
            print(json.dumps(line), flush=True)
            if error.status():  # the stream itself ended (a gRPC status)
                ended = "stream error"
                break
            pending.discard(error.message().removeprefix("[request id: ").split("]")[0])
            continue
        response = result.get_response()
        final = _parameter(response, "triton_final_response")
        line.update(id=response.id, final=final)
        if final:
            path = inputs[response.id].removesuffix(".npy") + ".out.npy"
            np.save(path, result.as_numpy("image"))
            line["output"] = path
            line["parameters"] = {k: _parameter(response, k) for k in response.parameters}
            pending.discard(response.id)
        else:
            line.update(
                done=_parameter(response, "progress_done"),
                total=_parameter(response, "progress_total"),
                stage=_parameter(response, "progress_stage"),
            )
            progress += 1
        print(json.dumps(line), flush=True)
        if spec.get("cancel_after") and progress >= spec["cancel_after"]:
            ended = "cancelled"
            break
    client.stop_stream(cancel_requests=ended != "all answered")
    client.close()
    print(json.dumps({"ended": ended, "t": round(time.monotonic() - start, 3)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
