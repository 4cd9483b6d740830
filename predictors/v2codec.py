"""Open Inference Protocol v2 in and out: one place for tensors and request parameters."""

from __future__ import annotations

import math
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


class BadRequest(InvalidInput):
    """The client's mistake in a request: 400 / INVALID_ARGUMENT, logged in one line without a
    traceback (KServe's handler for InvalidInput logs one for each)."""


INFERENCE_HEADER = "Inference-Header-Content-Length"


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def json_header_length(text: str | None, body_length: int) -> int:
    """The binary extension's JSON length from its header (absent: the whole body is JSON)."""
    if text is None or text == "":
        return body_length
    if not text.strip().isdigit():
        raise BadRequest(
            f"the {INFERENCE_HEADER} header must be a whole number of bytes, got {_short(text)}"
        )
    return int(text)


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
            raise BadRequest(
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
        number = spec.kind(value)
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(value)
        return number
    except (TypeError, ValueError, OverflowError):  # OverflowError: int("inf"), int("1e400")
        kind = {"int": "a whole number", "float": "a finite number"}.get(spec.kind.__name__)
        raise BadRequest(
            f"parameter {name!r} must be {kind or spec.kind.__name__}, got {value!r}"
        ) from None


def decode_parameters(raw: Any, specs: dict[str, Param]) -> dict[str, Any]:
    """Known parameters, typed and range-checked; unknown ones are ignored (OIP allows extras)."""
    if raw is not None and not hasattr(raw, "items"):
        raise BadRequest(f"the request's parameters must be an object, got {_short(raw)}")
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
            raise BadRequest(f"parameter {name!r} must be in {bounds}, got {value}")
        if spec.check and (problem := spec.check(value)):
            raise BadRequest(f"parameter {name!r} {problem}; got {value}")
        values[name] = value
    return values


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def valid_shape(value: Any) -> bool:
    """A tensor shape: a list of whole numbers >= 0."""
    return isinstance(value, list | tuple) and all(_whole(d) and d >= 0 for d in value)


def image_input(request: InferRequest) -> tuple[InferInput, list[int]]:
    """The `image` input and its shape [N, H, W, 3], checked; nothing of its data is read."""
    tensor = request.get_input_by_name(IMAGE)
    if tensor is None:
        if len(request.inputs) != 1:
            raise BadRequest(f"expected one input named {IMAGE!r}")
        tensor = request.inputs[0]
    if tensor.datatype != "UINT8":
        raise BadRequest(f"input {IMAGE!r} must be UINT8, got {tensor.datatype}")
    shape = list(tensor.shape)
    if len(shape) != 4 or shape[3] != 3 or not valid_shape(shape) or min(shape) < 1:
        raise BadRequest(
            f"input {IMAGE!r} must have shape [N, H, W, 3] of whole numbers >= 1, got {shape}"
        )
    return tensor, shape


def decode_images(request: InferRequest) -> np.ndarray:
    """The `image` input as UINT8 [N, H, W, 3] RGB; what a client got wrong as InvalidInput."""
    return decode_tensor(*image_input(request))


def decode_tensor(tensor: InferInput, shape: list[int]) -> np.ndarray:
    """`image_input`'s tensor as UINT8 [N, H, W, 3] RGB; what a client got wrong as InvalidInput."""
    count = math.prod(shape)
    raw = tensor._raw_data  # KServe keeps binary tensors here, JSON/contents values in .data
    if raw is not None:
        if len(raw) != count:
            raise BadRequest(
                f"input {IMAGE!r} of shape {shape} needs {count} bytes, got {len(raw)}"
            )
        return np.frombuffer(raw, np.uint8).reshape(shape)
    return _json_values(tensor.data, shape, count)


def _json_values(data: Any, shape: list[int], count: int) -> np.ndarray:
    """JSON `data` (REST) or `contents` (gRPC) as UINT8 of `shape`."""
    needs = f"input {IMAGE!r} of shape {shape} needs {count} whole numbers in 0..255 (UINT8)"
    try:
        values = np.asarray(data if data is not None else [])
    except ValueError:  # lists of different lengths
        raise BadRequest(f"{needs}; its data is not a flat list of numbers") from None
    if values.size != count:
        raise BadRequest(f"{needs}, got {values.size} values")
    if values.dtype.kind not in "iu":  # None, strings, fractions, numbers beyond 64 bits
        raise BadRequest(f"{needs}; its data holds other values than whole numbers")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise BadRequest(f"{needs}, got values from {values.min()} to {values.max()}")
    return values.astype(np.uint8).reshape(shape)


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
    if not 0 < json_length <= len(body):
        raise BadRequest(
            f"the {INFERENCE_HEADER} header must be the length in bytes of the JSON at the body's "
            f"start, 1..{len(body)}; got {json_length}"
        )
    try:
        header = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"unrecognised request: the body's first {json_length} bytes ({INFERENCE_HEADER}) are "
            f"not JSON: {exc}"
        ) from None
    specs = header.get("inputs") if isinstance(header, dict) else None
    if not isinstance(specs, list) or not specs:
        raise BadRequest("the request's JSON must be an object with a list of inputs")
    sizes = []
    for spec in specs:
        if not isinstance(spec, dict) or not (
            isinstance(spec.get("name"), str)
            and isinstance(spec.get("datatype"), str)
            and valid_shape(spec.get("shape"))
            and isinstance(spec.get("parameters") or {}, dict)
        ):
            raise BadRequest(
                "each input must be an object with a name, a datatype and a shape of whole "
                f"numbers >= 0; got {_short(spec)}"
            )
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is not None and not (_whole(size) and size >= 0):
            raise BadRequest(
                f"input {spec['name']!r}: binary_data_size must be a whole number of bytes "
                f">= 0, got {size!r}"
            )
        sizes.append(size)
    if any(size is None for size in sizes):
        try:
            return InferRequest.from_bytes(body, json_length, model_name)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise BadRequest(
                "the request mixes binary and JSON inputs in a way this server cannot read: "
                "give each input either binary_data_size or data"
            ) from None
    raw, offset = [], json_length
    for size in sizes:
        raw.append(body[offset : offset + size])
        offset += size
    if offset != len(body):
        raise BadRequest(
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
