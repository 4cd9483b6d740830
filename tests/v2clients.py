"""Calls to the predictors with clients that are not ours: KServe's gRPC client, Triton's REST one.

(Triton's gRPC client registers the same `inference.*` protobuf names as KServe, so the two cannot
live in one process; its HTTP client does not touch protobuf.)
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import tritonclient.http as triton_http
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest
from tritonclient.utils import InferenceServerException

MAX_MESSAGE = 256 << 20
CHANNEL = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]


class V2Error(Exception):
    """A predictor's error answer, as "[STATUS] message", whichever protocol carried it."""


def _request(task: str, batch: np.ndarray, params: dict) -> InferRequest:
    tensor = InferInput("image", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch, binary_data=True)
    return InferRequest(model_name=task, infer_inputs=[tensor], parameters=params or None)


def _plain_parameters(response) -> dict:
    return {
        key: getattr(value, value.WhichOneof("parameter_choice"))
        for key, value in (response.parameters or {}).items()
    }


async def infer_grpc_async(address: str, task: str, images: list[np.ndarray], params: list[dict]):
    """One gRPC client, several concurrent requests; returns the output images."""
    client = InferenceGRPCClient(address, channel_args=CHANNEL, timeout=300)
    try:
        responses = await asyncio.gather(
            *(client.infer(_request(task, i[None], p)) for i, p in zip(images, params, strict=True))
        )
    finally:
        await client.close()
    return [r.outputs[0].as_numpy()[0] for r in responses]


def infer_grpc(address: str, task: str, image: np.ndarray, **params):
    """Returns (image [H, W, 3] or a batch, response parameters as plain values)."""
    batch = image[None] if image.ndim == 3 else image

    async def call():
        client = InferenceGRPCClient(address, channel_args=CHANNEL, timeout=300)
        try:
            return await client.infer(_request(task, batch, params))
        finally:
            await client.close()

    try:
        response = asyncio.run(call())
    except grpc.RpcError as exc:
        raise V2Error(f"[{exc.code().name}] {exc.details()}") from None
    out = response.outputs[0].as_numpy()
    return (out[0] if image.ndim == 3 else out), _plain_parameters(response)


def infer_rest(address: str, task: str, image: np.ndarray, **params):
    client = triton_http.InferenceServerClient(address, network_timeout=300)
    batch = image[None] if image.ndim == 3 else image
    tensor = triton_http.InferInput("image", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch, binary_data=True)
    try:
        result = client.infer(
            task,
            [tensor],
            parameters=params or None,
            outputs=[triton_http.InferRequestedOutput("image", binary_data=True)],
        )
    except InferenceServerException as exc:
        raise V2Error(f"[{exc.status()}] {exc.message()}") from None
    out = result.as_numpy("image")
    return (out[0] if image.ndim == 3 else out), result.get_response().get("parameters", {})
