"""Malformed OIP requests sent straight to a real restore predictor, over REST and gRPC: each
gets 400 / INVALID_ARGUMENT with a message a person can act on, never 500 / INTERNAL nor an
exception's type name, and the predictor goes on serving (issue 19). Images and batches over the
pixel limits (MAX_OUTPUT_PIXELS, MAX_BATCH_PIXELS) are refused from their shape alone."""

from __future__ import annotations

import re
import socket

import grpc
import httpx
import numpy as np
import orjson
import pytest
from kserve.errors import InvalidInput
from kserve.protocol.grpc.grpc_predict_v2_pb2 import InferParameter, ModelInferRequest

from predictors.face_restore import FaceRestoreModel
from predictors.upscale import UpscaleModel
from predictors.v2codec import decode_parameters
from tests.servers import GRPC_MAX, running_predictor
from tests.v2clients import CHANNEL

# What a message must not hold: "ValueError : ...", "KeyError", "Traceback", ...
LEAKS = re.compile(r"Error :|Traceback|\b[A-Z][A-Za-z]*(Error|Exception)\b|\bint\(\)|literal")
PIXELS = bytes(2 * 2 * 3)
SHAPE = [1, 2, 2, 3]
INFER = "/v2/models/restore/infer"


# Small pixel limits, so that requests over them stay small (the defaults are 8192 x 8192).
MAX_OUTPUT_PIXELS = 64 * 64
MAX_BATCH_PIXELS = 2 * 64 * 64


@pytest.fixture(scope="module")
def predictor(weights, tmp_path_factory):
    folder = weights.model_dir("restore", "denoise")
    limits = {"MAX_OUTPUT_PIXELS": MAX_OUTPUT_PIXELS, "MAX_BATCH_PIXELS": MAX_BATCH_PIXELS}
    with running_predictor(
        "restore",
        folder,
        tmp_path_factory.mktemp("restore"),
        extra_env={name: str(value) for name, value in limits.items()},
    ) as server:
        yield server


def binary_body(
    shape=SHAPE, size=12, data=PIXELS, parameters=None, header_length=None
) -> tuple[bytes, dict]:
    """A REST request with the binary tensor extension: (body, headers)."""
    header = {
        "inputs": [
            {
                "name": "image",
                "shape": shape,
                "datatype": "UINT8",
                "parameters": {"binary_data_size": size},
            }
        ],
        "parameters": parameters or {},
    }
    text = orjson.dumps(header) if not isinstance(shape, str) else shape.encode()
    length = str(len(text)) if header_length is None else header_length
    return text + data, {"Inference-Header-Content-Length": length}


def json_body(data=None, shape=SHAPE, parameters=None) -> tuple[bytes, dict]:
    values = [0] * int(np.prod(SHAPE)) if data is None else data
    body = {
        "inputs": [{"name": "image", "shape": shape, "datatype": "UINT8", "data": values}],
        "parameters": parameters or {},
    }
    # JSON's integers beyond 64 bits: written by hand (orjson refuses them)
    text = orjson.dumps(body).replace(b"999999999", b"1" + b"0" * 30)
    return text, {"Content-Type": "application/json"}


HUGE = 999999999  # written as 10^30 in the JSON

REST_CASES = {
    "header length not a number": binary_body(header_length="abc"),
    "header length negative": binary_body(header_length="-5"),
    "header length beyond the body": binary_body(header_length="100000"),
    "header length fractional": binary_body(header_length="12.5"),
    "binary_data_size a string": binary_body(size="12"),
    "binary_data_size a fraction": binary_body(size=12.5),
    "binary_data_size negative": binary_body(size=-12),
    "binary shape with a string": binary_body(shape=[1, "a", 2, 3]),
    "binary shape fractional": binary_body(shape=[1, 2.5, 2, 3]),
    "binary shape negative": binary_body(shape=[1, -2, 2, 3]),
    "binary shape 10^30": binary_body(shape=[1, HUGE, 2, 3]),
    "binary shape not a list": binary_body(shape='{"inputs": [{"name": "image", "shape": 7}]}'),
    "json data 300": json_body(data=[300] + [0] * 11),
    "json data -1": json_body(data=[-1] + [0] * 11),
    "json data null": json_body(data=[None] + [0] * 11),
    "json data a string": json_body(data=["x"] + [0] * 11),
    "json data too few": json_body(data=[0] * 5),
    "json shape with a string": json_body(shape=[1, "a", 2, 3]),
    "json shape fractional": json_body(shape=[1, 2.5, 2, 3]),
    "json shape negative": json_body(shape=[1, -2, 2, 3]),
    "json shape 10^30": json_body(shape=[1, HUGE, 2, 3]),
    "tile_size inf (binary)": binary_body(parameters={"tile_size": "inf"}),
    "tile_size nan (binary)": binary_body(parameters={"tile_size": "nan"}),
    "tile_size inf (json)": json_body(parameters={"tile_size": "inf"}),
    "tile_size -inf (json)": json_body(parameters={"tile_size": "-inf"}),
}


def grpc_request(**changes) -> ModelInferRequest:
    message = ModelInferRequest(model_name="restore", id="hostile")
    tensor = message.inputs.add(name="image", datatype="UINT8", shape=changes.get("shape", SHAPE))
    if "contents" in changes:
        tensor.contents.uint_contents.extend(changes["contents"])
    else:
        message.raw_input_contents.append(PIXELS)
    for key, value in changes.get("parameters", {}).items():
        message.parameters[key].CopyFrom(value)
    return message


GRPC_CASES = {
    "tile_size 'inf'": grpc_request(parameters={"tile_size": InferParameter(string_param="inf")}),
    "tile_size 'nan'": grpc_request(parameters={"tile_size": InferParameter(string_param="nan")}),
    "tile_size '-inf'": grpc_request(parameters={"tile_size": InferParameter(string_param="-inf")}),
    "tile_size '1e400'": grpc_request(
        parameters={"tile_size": InferParameter(string_param="1e400")}
    ),
    "uint_contents 300": grpc_request(contents=[300] + [0] * 11),
    "uint_contents too few": grpc_request(contents=[0] * 5),
    "shape negative": grpc_request(shape=[1, -2, 2, 3]),
    "shape 2^62": grpc_request(shape=[1, 1 << 62, 2, 3]),
}


def assert_actionable(message: str) -> None:
    assert message.strip(), "an empty message"
    assert not LEAKS.search(message), message


@pytest.mark.parametrize("case", REST_CASES)
def test_rest_malformed_is_400(predictor, case):
    body, headers = REST_CASES[case]
    reply = httpx.post(f"http://{predictor.http}{INFER}", content=body, headers=headers)
    assert reply.status_code == 400, (reply.status_code, reply.text)
    assert_actionable(reply.json()["error"])


@pytest.mark.parametrize("case", GRPC_CASES)
def test_grpc_malformed_is_invalid_argument(predictor, case):
    with grpc.insecure_channel(predictor.grpc) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=ModelInferRequest.SerializeToString,
            response_deserializer=lambda data: data,
        )
        with pytest.raises(grpc.RpcError) as caught:
            call(GRPC_CASES[case], timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert_actionable(caught.value.details())


def pixels(count: int, height: int, width: int = 64) -> bytes:
    return bytes(count * height * width * 3)


# (shape, bytes of data, the limit named): the data matches the shape, or is 12 bytes only (the
# shape alone is refused, before the data is looked at).
OVER_THE_PIXEL_LIMITS = {
    "one image over MAX_OUTPUT_PIXELS": ([1, 65, 64, 3], pixels(1, 65), "MAX_OUTPUT_PIXELS"),
    "9400 x 9400 by its shape": ([1, 9400, 9400, 3], bytes(12), "MAX_OUTPUT_PIXELS"),
    "a batch over MAX_BATCH_PIXELS": ([3, 64, 64, 3], pixels(3, 64), "MAX_BATCH_PIXELS"),
    "a batch of 10^6 by its shape": ([10**6, 8, 8, 3], bytes(12), "MAX_BATCH_PIXELS"),
}


@pytest.mark.parametrize("case", OVER_THE_PIXEL_LIMITS)
def test_pixel_limits_refuse_from_the_shape_over_rest(predictor, case):
    shape, data, limit = OVER_THE_PIXEL_LIMITS[case]
    body, headers = binary_body(shape=shape, size=len(data), data=data)
    reply = httpx.post(f"http://{predictor.http}{INFER}", content=body, headers=headers)
    assert reply.status_code == 400, (reply.status_code, reply.text)
    assert limit in reply.json()["error"] and "send" in reply.json()["error"]
    assert_actionable(reply.json()["error"])


@pytest.mark.parametrize("case", OVER_THE_PIXEL_LIMITS)
def test_pixel_limits_refuse_from_the_shape_over_grpc(predictor, case):
    shape, data, limit = OVER_THE_PIXEL_LIMITS[case]
    message = ModelInferRequest(model_name="restore", id="pixels")
    message.inputs.add(name="image", datatype="UINT8", shape=shape)
    message.raw_input_contents.append(data)
    with grpc.insecure_channel(predictor.grpc, options=CHANNEL) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=ModelInferRequest.SerializeToString,
            response_deserializer=lambda data: data,
        )
        with pytest.raises(grpc.RpcError) as caught:
            call(message, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert limit in caught.value.details()
    assert_actionable(caught.value.details())


def test_a_batch_at_the_pixel_limits_is_served(predictor):
    data = pixels(2, 64)
    body, headers = binary_body(shape=[2, 64, 64, 3], size=len(data), data=data)
    reply = httpx.post(f"http://{predictor.http}{INFER}", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"][0]["shape"] == [2, 64, 64, 3]


@pytest.mark.parametrize(
    ("model", "shape", "params", "refused"),
    [
        (UpscaleModel, [1, 2048, 2048, 3], {"scale": 4}, False),  # the gateway's largest
        (UpscaleModel, [1, 2048, 2048, 3], {"scale": 5}, True),
        (UpscaleModel, [2, 2048, 2048, 3], {"scale": 4}, True),  # the batch's answers
        (FaceRestoreModel, [1, 4096, 4096, 3], {"upscale": 2}, False),
        (FaceRestoreModel, [1, 4096, 4096, 3], {"upscale": 3}, True),
        (FaceRestoreModel, [1, 64, 64, 3], {"upscale": 4, "has_aligned": True}, False),
        (FaceRestoreModel, [1, 9000, 9000, 3], {"upscale": 1, "has_aligned": True}, True),
    ],
)
def test_the_answer_s_size_counts_with_the_default_limits(tmp_path, model, shape, params, refused):
    """Each task's answer size (scale, upscale, an aligned face's 512 px) against the defaults,
    in-process: a 4x upscale of a 2048 px image (the gateway's largest) is served."""
    server = model(tmp_path)
    values = decode_parameters(params, server.params)
    if refused:
        with pytest.raises(InvalidInput, match=r"MAX_OUTPUT_PIXELS|MAX_BATCH_PIXELS"):
            server.check_pixels(shape, values)
    else:
        server.check_pixels(shape, values)


def test_rest_body_over_the_message_limit_is_413_before_it_is_read(predictor):
    """A Content-Length beyond the gRPC message limit: 413 with only the headers sent."""
    host, port = predictor.http.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"Inference-Header-Content-Length: 10\r\n"
            f"Content-Length: {int(GRPC_MAX) + 1}\r\n\r\n".encode()
        )
        reply = b""
        while chunk := conn.recv(65536):  # the server closes after its answer
            reply += chunk
    head, _, body = reply.decode(errors="replace").partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413"), head
    assert "at most" in body and "bytes" in body


def test_still_serving_after_the_hostile_requests(predictor):
    body, headers = binary_body()
    reply = httpx.post(f"http://{predictor.http}{INFER}", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    assert "Traceback" not in predictor.log()


@pytest.mark.parametrize(
    ("specs", "name", "value"),
    [
        (UpscaleModel.params, "scale", "inf"),
        (UpscaleModel.params, "scale", "nan"),
        (UpscaleModel.params, "scale", float("inf")),
        (UpscaleModel.params, "tile_size", "-inf"),
        (FaceRestoreModel.params, "fidelity", "nan"),
        (FaceRestoreModel.params, "fidelity", "inf"),
        (FaceRestoreModel.params, "fidelity", float("nan")),
    ],
)
def test_non_finite_parameters_are_refused_as_the_client_s_mistake(specs, name, value):
    """The other predictors' parameters, in-process: what the REST and gRPC cases above reach."""
    with pytest.raises(InvalidInput) as caught:
        decode_parameters({name: value}, specs)
    assert_actionable(caught.value.reason)
