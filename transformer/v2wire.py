"""V2 gRPC inference with image bytes copied once each way, around KServe's client.

KServe's client builds a request as numpy -> `tobytes()` -> protobuf message -> serialized bytes
(three copies of the image), and reads an answer as received bytes -> parsed message -> Python
bytes (two more copies of a 200 MB answer for a 2048 px photo at x4). Here the tensors go beside
the message (common/protowire.py): one join on the way out, zero-copy views on the way in.

`stream_infer` is the same call over Triton's ModelStreamInfer (CONTRACT section 6): the request
is the same bytes (the RPC's request message is a ModelInferRequest), each reply is a
ModelStreamInferResponse read the same way: progress responses go to a callback, the answer
(`triton_final_response=true`) is returned with its tensors as views of the received bytes. It
asks for Triton's `triton_grpc_error` behaviour, so an error ends the call with the gRPC status
ModelInfer would have answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np
from kserve import InferenceGRPCClient
from kserve.inference_client import USE_CLIENT_DEFAULT
from kserve.protocol.grpc.grpc_predict_v2_pb2 import (
    ModelInferRequest,
    ModelInferResponse,
    ModelMetadataRequest,
)

from common.protowire import join_bytes_field, split_bytes_field

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
# Triton's ModelStreamInferResponse { string error_message = 1; ModelInferResponse
# infer_response = 2; } (not in KServe's proto).
_STREAM_ERROR_MESSAGE = 1
_STREAM_INFER_RESPONSE = 2
FINAL = "triton_final_response"
STRICT_ERRORS = ("triton_grpc_error", "true")
_RAW_INPUT = ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number
_RAW_OUTPUT = ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number


def encode_request(request: ModelInferRequest, tensors: list[np.ndarray]) -> bytes:
    """`request` (without raw contents) serialized, plus each tensor as raw_input_contents."""
    buffers = (np.ascontiguousarray(tensor) for tensor in tensors)
    return join_bytes_field(request.SerializeToString(), _RAW_INPUT, buffers)


@dataclass
class Reply:
    """A ModelInferResponse without its raw contents, which are views into the received bytes."""

    message: ModelInferResponse
    raw_outputs: list[memoryview]


def decode_response(data: bytes | memoryview) -> Reply:
    """Split raw_output_contents off (as views); protobuf parses the rest."""
    rest, raw = split_bytes_field(data, _RAW_OUTPUT)
    return Reply(ModelInferResponse.FromString(rest), raw)


@dataclass
class Progress:
    done: int
    total: int
    stage: str


class StreamError(Exception):
    """A ModelStreamInferResponse that carries an error_message (Triton's default errors)."""


def _parameter(reply: Reply, name: str):
    value = reply.message.parameters.get(name)
    kind = value.WhichOneof("parameter_choice") if value is not None else None
    return getattr(value, kind) if kind else None


def decode_stream_response(data: bytes) -> Reply | Progress:
    """A ModelStreamInferResponse: the answer (its raw outputs views of `data`), or a progress
    response; raises StreamError for an error_message and ValueError for anything else."""
    rest, inner = split_bytes_field(data, _STREAM_INFER_RESPONSE)
    _, errors = split_bytes_field(rest, _STREAM_ERROR_MESSAGE)
    if errors and len(errors[-1]):
        raise StreamError(bytes(errors[-1]).decode(errors="replace"))
    if not inner:
        raise ValueError("a ModelStreamInferResponse with neither a response nor an error")
    # A message field written more than once is the merge of its parts (one, from ours).
    reply = decode_response(inner[0] if len(inner) == 1 else b"".join(inner))
    if _parameter(reply, FINAL) is False:
        done, total = _parameter(reply, "progress_done"), _parameter(reply, "progress_total")
        if not isinstance(done, int) or not isinstance(total, int):
            raise ValueError("a progress response without progress_done and progress_total")
        return Progress(done, total, _parameter(reply, "progress_stage") or "")
    del reply.message.parameters[FINAL]  # the answer reads as ModelInfer's
    return reply


class RawTensorClient(InferenceGRPCClient):
    """KServe's gRPC client (channel, retries, readiness calls) with a lean `infer`."""

    async def infer(  # type: ignore[override]
        self,
        infer_request: bytes,
        timeout=USE_CLIENT_DEFAULT,
        headers=None,
    ) -> Reply:
        """`infer_request` comes from `encode_request`; raises grpc.RpcError as KServe's does."""
        call = self._channel.unary_unary(MODEL_INFER)  # bytes in, bytes out
        data = await call(
            infer_request,
            metadata=headers or (),
            timeout=self._timeout if timeout is USE_CLIENT_DEFAULT else timeout,
        )
        return decode_response(data)

    async def stream_infer(
        self,
        infer_request: bytes,
        on_progress: Callable[[Progress], None],
        timeout=USE_CLIENT_DEFAULT,
        headers=None,
    ) -> Reply:
        """`infer` over ModelStreamInfer: one request, `on_progress` for each progress
        response, the answer returned. Raises grpc.RpcError as `infer` does; cancelling the
        awaiting task cancels the call (and so the predictor's work)."""
        call = self._channel.stream_stream(MODEL_STREAM_INFER)(
            metadata=(STRICT_ERRORS, *(headers or ())),
            timeout=self._timeout if timeout is USE_CLIENT_DEFAULT else timeout,
        )
        try:
            await call.write(infer_request)
            await call.done_writing()
            # read() raises the call's error (AioRpcError, as `infer` would) when it has one
            while (data := await call.read()) is not grpc.aio.EOF:
                reply = decode_stream_response(data)
                if isinstance(reply, Reply):
                    return reply
                on_progress(reply)
            raise ValueError("the stream ended without an answer")
        finally:
            # the answer came (the predictor is closing the stream), or this task was cancelled
            # or failed: then it stops the predictor's work, as a unary call's end does
            if not call.done():
                call.cancel()

    async def platform(self, model_name: str, timeout: float) -> str:
        """The model's V2 metadata platform (the predictors say "pytorch-<device>")."""
        return (await self.metadata(model_name, timeout))[0]

    async def metadata(self, model_name: str, timeout: float) -> tuple[str, list[str]]:
        """The model's V2 metadata platform and versions (the predictors say
        "pytorch-<device>" and "<model>:<architecture>:x<scale>")."""
        request = ModelMetadataRequest(name=model_name)
        response = await self._client_stub.ModelMetadata(request, timeout=timeout)
        return response.platform, list(response.versions)
