"""Open Inference Protocol v2 in and out: one place for tensors and request parameters."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from google.protobuf.unknown_fields import UnknownFieldSet
from kserve.errors import InvalidInput
from kserve.protocol.grpc.grpc_predict_v2_pb2 import InferParameter
from kserve.protocol.infer_type import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

IMAGE = "image"


@dataclass(frozen=True)
class Param:
    """A request parameter: its type, default and allowed range."""

    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    # A server-side bound beyond the range: returns what is wrong with a value, or None.
    check: Callable[[Any], str | None] | None = None


# Triton's InferParameter adds double_param (field 4, fixed64) and uint64_param (field 5,
# varint) to the bool, int64 and string of OIP v2's message, which KServe's protobuf keeps as
# unknown fields. (wire type, decoder) per field number.
_TRITON_FIELDS = {
    4: (1, lambda bits: struct.unpack("<d", struct.pack("<Q", bits))[0]),
    5: (0, int),
}


def _triton_value(value: InferParameter) -> Any:
    """The message's Triton double_param or uint64_param (the last one set), or None."""
    found = None
    for field in UnknownFieldSet(value):
        wire_type, decode = _TRITON_FIELDS.get(field.field_number, (None, None))
        if field.wire_type == wire_type:
            found = decode(field.data)
    return found


def _plain(name: str, value: Any) -> Any:
    """REST gives plain JSON values; gRPC gives InferParameter messages."""
    if isinstance(value, InferParameter):
        field = value.WhichOneof("parameter_choice")
        if field is not None:
            return getattr(value, field)
        found = _triton_value(value)
        if found is None:
            raise InvalidInput(
                f"parameter {name!r} has no bool, int64, string, double or uint64 value"
            )
        return found
    return value


def _coerce(name: str, value: Any, spec: Param) -> Any:
    try:
        if spec.kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        if spec.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        return spec.kind(value)
    except (TypeError, ValueError):
        kind = spec.kind.__name__
        raise InvalidInput(f"parameter {name!r} must be {kind}, got {value!r}") from None


def decode_parameters(raw: Any, specs: dict[str, Param]) -> dict[str, Any]:
    """Known parameters, typed and range-checked; unknown ones are ignored (OIP allows extras)."""
    given = {key: _plain(key, value) for key, value in (raw or {}).items() if key in specs}
    values = {}
    for name, spec in specs.items():
        value = given.get(name)
        if value is None:
            values[name] = spec.default
            continue
        value = _coerce(name, value, spec)
        if spec.kind is not bool and (
            (spec.low is not None and value < spec.low)
            or (spec.high is not None and value > spec.high)
        ):
            bounds = f"{spec.low}..{spec.high}" if spec.high is not None else f">= {spec.low}"
            raise InvalidInput(f"parameter {name!r} must be in {bounds}, got {value}")
        if spec.check and (problem := spec.check(value)):
            raise InvalidInput(f"parameter {name!r} {problem}; got {value}")
        values[name] = value
    return values


def decode_images(request: InferRequest) -> np.ndarray:
    """The `image` input as UINT8 [N, H, W, 3] RGB."""
    tensor = request.get_input_by_name(IMAGE)
    if tensor is None:
        if len(request.inputs) != 1:
            raise InvalidInput(f"expected one input named {IMAGE!r}")
        tensor = request.inputs[0]
    if tensor.datatype != "UINT8":
        raise InvalidInput(f"input {IMAGE!r} must be UINT8, got {tensor.datatype}")
    shape = list(tensor.shape)
    if len(shape) != 4 or shape[3] != 3 or min(shape) < 1:
        raise InvalidInput(f"input {IMAGE!r} must have shape [N, H, W, 3], got {shape}")
    try:
        return tensor.as_numpy()
    except ValueError as exc:
        raise InvalidInput(f"input {IMAGE!r} does not hold {shape} values: {exc}") from None


def encode_images(
    request: InferRequest, model_name: str, images: np.ndarray, parameters: dict[str, Any]
) -> InferResponse:
    # The array itself: predictors/v2grpc.py sends it as it is; REST converts it as KServe does.
    output = InferOutput(IMAGE, list(images.shape), "UINT8", data=images)
    return InferResponse(
        # Some clients send no id, and a response without one fails their validation.
        response_id=request.id or str(uuid.uuid4()),
        model_name=model_name,
        infer_outputs=[output],
        parameters=parameters or None,
        use_binary_outputs=request.use_binary_outputs,
    )


def request_from_binary_rest(body: bytes, json_length: int, model_name: str) -> InferRequest:
    """A REST request with the binary tensor extension, its tensors kept as bytes.

    KServe 0.21 turns every binary tensor into a Python list (seconds for one photo); the bytes
    are what `np.frombuffer` wants. Requests that mix JSON `data` into the inputs keep KServe's
    own decoding.
    """
    try:
        header = orjson.loads(body[:json_length])
        specs = header["inputs"]
        sizes = [(spec.get("parameters") or {}).get("binary_data_size") for spec in specs]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"unrecognised request: {exc}") from None
    if not specs or any(size is None for size in sizes):
        return InferRequest.from_bytes(body, json_length, model_name)
    raw, offset = [], json_length
    for size in sizes:
        raw.append(body[offset : offset + size])
        offset += size
    if offset != len(body):
        raise InvalidInput(
            f"the binary data holds {len(body) - json_length} bytes, not {offset - json_length}"
        )
    inputs = [
        InferInput(spec["name"], spec["shape"], spec["datatype"], parameters=spec["parameters"])
        for spec in specs
    ]
    outputs = [RequestedOutput(o["name"], o.get("parameters")) for o in header.get("outputs") or []]
    request = InferRequest(
        model_name=model_name,
        infer_inputs=inputs,
        request_id=header.get("id"),
        raw_inputs=raw,
        parameters=header.get("parameters"),
        request_outputs=outputs or None,
    )
    return request
