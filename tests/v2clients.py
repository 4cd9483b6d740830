"""Calls to the predictors with a client that is not ours (Triton's), over gRPC and REST binary."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

MAX_MESSAGE = 256 << 20


def infer_grpc(address: str, task: str, image: np.ndarray, **params):
    """Returns (image [H, W, 3], response parameters as plain values)."""
    client = triton_grpc.InferenceServerClient(
        address,
        channel_args=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ],
    )
    batch = image[None] if image.ndim == 3 else image
    tensor = triton_grpc.InferInput("image", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch)
    result = client.infer(task, [tensor], parameters=params or None, client_timeout=300)
    parameters = {
        key: getattr(value, value.WhichOneof("parameter_choice"))
        for key, value in result.get_response().parameters.items()
    }
    out = result.as_numpy("image")
    return (out[0] if image.ndim == 3 else out), parameters


def infer_rest(address: str, task: str, image: np.ndarray, **params):
    client = triton_http.InferenceServerClient(address, network_timeout=300)
    batch = image[None] if image.ndim == 3 else image
    tensor = triton_http.InferInput("image", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch, binary_data=True)
    result = client.infer(
        task,
        [tensor],
        parameters=params or None,
        outputs=[triton_http.InferRequestedOutput("image", binary_data=True)],
    )
    out = result.as_numpy("image")
    return (out[0] if image.ndim == 3 else out), result.get_response().get("parameters", {})
