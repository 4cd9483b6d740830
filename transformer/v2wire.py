"""V2 gRPC inference with image bytes copied once each way, around KServe's client.

KServe's client builds a request as numpy -> `tobytes()` -> protobuf message -> serialized bytes
(three copies of the image), and reads an answer as received bytes -> parsed message -> Python
bytes (two more copies of a 200 MB answer for a 2048 px photo at x4). Protobuf (upb) only takes
`bytes` for a bytes field, so no message-level trick avoids them. Here the small fields are
serialized by protobuf as usual and the tensor bytes are written or read as the wire format's
length-delimited field beside them (a message is the concatenation of its fields, and a repeated
field may appear anywhere): one join on the way out, a zero-copy memoryview slice on the way in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from kserve import InferenceGRPCClient
from kserve.inference_client import USE_CLIENT_DEFAULT
from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest, ModelInferResponse

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
_LENGTH_DELIMITED = 2
_RAW_INPUT = ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number
_RAW_OUTPUT = ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or invalid varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def encode_request(request: ModelInferRequest, tensors: list[np.ndarray]) -> bytes:
    """`request` (without raw contents) serialized, plus each tensor as raw_input_contents."""
    tag = _varint(_RAW_INPUT << 3 | _LENGTH_DELIMITED)
    parts: list[bytes | memoryview] = [request.SerializeToString()]
    for tensor in tensors:
        raw = memoryview(np.ascontiguousarray(tensor)).cast("B")
        parts += [tag, _varint(len(raw)), raw]
    return b"".join(parts)


@dataclass
class Reply:
    """A ModelInferResponse without its raw contents, which are views into the received bytes."""

    message: ModelInferResponse
    raw_outputs: list[memoryview]


def decode_response(data: bytes) -> Reply:
    """Split raw_output_contents off the top-level fields (as views); protobuf parses the rest."""
    view = memoryview(data)
    rest: list[memoryview] = []
    raw: list[memoryview] = []
    pos = 0
    while pos < len(view):
        start = pos
        key, pos = _read_varint(view, pos)
        wire_type = key & 7
        if wire_type == 0:
            _, pos = _read_varint(view, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == _LENGTH_DELIMITED:
            length, pos = _read_varint(view, pos)
            if pos + length > len(view):
                raise ValueError("truncated message")
            if key >> 3 == _RAW_OUTPUT:
                raw.append(view[pos : pos + length])
                pos += length
                continue
            pos += length
        else:
            raise ValueError(f"unexpected protobuf wire type {wire_type}")
        if pos > len(view):
            raise ValueError("truncated message")
        rest.append(view[start:pos])
    return Reply(ModelInferResponse.FromString(b"".join(rest)), raw)


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
