"""V2 gRPC inference with image bytes copied once each way, around KServe's client.

KServe's client builds a request as numpy -> `tobytes()` -> protobuf message -> serialized bytes
(three copies of the image), and reads an answer as received bytes -> parsed message -> Python
bytes (two more copies of a 200 MB answer for a 2048 px photo at x4). Here the tensors go beside
the message (common/protowire.py): one join on the way out, zero-copy views on the way in.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def decode_response(data: bytes) -> Reply:
    """Split raw_output_contents off (as views); protobuf parses the rest."""
    rest, raw = split_bytes_field(data, _RAW_OUTPUT)
    return Reply(ModelInferResponse.FromString(rest), raw)


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

    async def platform(self, model_name: str, timeout: float) -> str:
        """The model's V2 metadata platform (the predictors say "pytorch-<device>")."""
        request = ModelMetadataRequest(name=model_name)
        response = await self._client_stub.ModelMetadata(request, timeout=timeout)
        return response.platform
