"""Fuzzing the predictors' own surface, as OIP v2 clients reach it (issue 19): schemathesis
against each predictor's REST OpenAPI (/openapi.json, KServe's routes and ours), hypothesis-made
OIP v2 REST bodies with the binary tensor extension, and hypothesis-made ModelInferRequest
messages (and bytes that are none) against its gRPC port. No answer is a server error: no 5xx,
no INTERNAL or UNKNOWN; refusals are 4xx / INVALID_ARGUMENT and the like.

Real restore and upscale predictors (generated weights, CPU). Half the requests name the served
model, so that they reach its decoding and, when well-formed, the model itself (images of at
most 24 px). Bounded, derandomized examples keep each test to seconds.
"""

from __future__ import annotations

import json
from collections import Counter

import grpc
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from kserve.protocol.grpc.grpc_predict_v2_pb2 import InferParameter, ModelInferRequest
from schemathesis import GenerationMode

from tests.servers import running_predictor
from tests.v2clients import CHANNEL

EXAMPLES = 10  # per operation and mode (REST), and per fuzz test
SERVER_ERRORS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
FUZZ = settings(
    max_examples=EXAMPLES * 5,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


@pytest.fixture(scope="module", params=[("restore", "denoise"), ("upscale", "x4plus")])
def predictor(request, weights, tmp_path_factory):
    task, variant = request.param
    folder = weights.model_dir(task, variant)
    with running_predictor(task, folder, tmp_path_factory.mktemp(task), variant) as server:
        yield server


def no_tracebacks(predictor) -> None:
    assert predictor.process.poll() is None, predictor.log()[-3000:]
    assert "Traceback" not in predictor.log(), predictor.log()[-5000:]


def test_rest_openapi_no_server_errors(predictor):
    api = schemathesis.openapi.from_url(f"http://{predictor.http}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert any(op.path.endswith("/infer") for op in operations)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode), ours=st.booleans())
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def check(case, ours):
                if ours and "model_name" in (case.path_parameters or {}):
                    case.path_parameters["model_name"] = predictor.task
                response = case.call(timeout=60)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path}: {response.status_code} "
                    f"{response.text[:500]}"
                )

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid: an operation without parameters
                assert mode == GenerationMode.NEGATIVE, operation.label
    no_tracebacks(predictor)


DIMENSIONS = st.integers(-2, 24) | st.sampled_from([0, 1 << 31, 1 << 62, 10**30])
SHAPES = st.lists(DIMENSIONS, max_size=5) | st.tuples(
    st.integers(1, 2), st.integers(1, 24), st.integers(1, 24), st.just(3)
).map(list)
DATATYPES = st.sampled_from(["UINT8", "UINT8", "FP32", "BYTES", "INT64", "uint8", ""])
JSON_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False)
    | st.sampled_from(["inf", "nan", "-1", "12", "abc", "1e400", ""])
)
PARAMETER_NAMES = st.sampled_from(["tile_size", "scale", "binary_data_size", "x"])


def _size(shape: list[int]) -> int:
    count = 1
    for dimension in shape:
        count *= max(dimension, 0)
    return count


@st.composite
def binary_rest_bodies(draw, task: str) -> tuple[bytes, dict]:
    """A REST body with the binary tensor extension: JSON head (often right, often not) and
    tensor bytes (often as many as the shape needs, often not)."""
    shape = draw(SHAPES)
    wanted = _size(shape)
    data = draw(st.just(bytes(wanted)) if wanted <= 24 * 24 * 3 * 2 else st.binary(max_size=64))
    data = draw(st.just(data) | st.binary(max_size=64))
    size = draw(st.just(len(data)) | JSON_VALUES)
    head = {
        "inputs": [
            {
                "name": draw(st.sampled_from(["image", "other"])),
                "shape": shape,
                "datatype": draw(DATATYPES),
                "parameters": {"binary_data_size": size},
            }
        ],
        "parameters": draw(st.dictionaries(PARAMETER_NAMES, JSON_VALUES, max_size=3)),
    }
    text = json.dumps(head).encode()
    length = draw(st.just(str(len(text))) | st.sampled_from(["", "0", "-1", "abc", "99999999"]))
    headers = {"Content-Type": "application/octet-stream"}
    if length:
        headers["Inference-Header-Content-Length"] = length
    return text + data, headers


def test_rest_binary_bodies_no_server_errors(predictor):
    url = f"http://{predictor.http}/v2/models/{predictor.task}/infer"
    seen: Counter = Counter()

    @given(request=binary_rest_bodies(predictor.task))
    @FUZZ
    def check(request):
        body, headers = request
        reply = httpx.post(url, content=body, headers=headers, timeout=60)
        seen[reply.status_code] += 1
        assert reply.status_code < 500, (reply.status_code, reply.text[:500], headers, body[:300])

    check()
    assert seen[200] and seen[400], seen  # the model was reached, and refusals were made
    no_tracebacks(predictor)


PARAMETER_VALUES = (
    st.integers(-(1 << 63), (1 << 63) - 1).map(lambda v: InferParameter(int64_param=v))
    | st.integers(-2, 600).map(lambda v: InferParameter(int64_param=v))
    | st.booleans().map(lambda v: InferParameter(bool_param=v))
    | st.sampled_from(["inf", "nan", "-1", "4", "abc", "1e400", ""]).map(
        lambda v: InferParameter(string_param=v)
    )
    | st.just(InferParameter())
)


@st.composite
def infer_requests(draw, task: str) -> bytes:
    """A serialized ModelInferRequest, well-formed or not, or bytes that are no message."""
    kind = draw(st.sampled_from(["bytes", "well-formed", "any", "any"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "well-formed":  # only its parameters are fuzzed
        shape = [draw(st.integers(1, 2)), draw(st.integers(1, 24)), draw(st.integers(1, 24)), 3]
        message = ModelInferRequest(model_name=task, id="fuzz")
        message.inputs.add(name="image", datatype="UINT8", shape=shape)
        message.raw_input_contents.append(bytes(_size(shape)))
        for name, value in draw(st.dictionaries(PARAMETER_NAMES, PARAMETER_VALUES)).items():
            message.parameters[name].CopyFrom(value)
        return message.SerializeToString()
    message = ModelInferRequest(
        model_name=draw(st.sampled_from([task, task, "other", ""])),
        id=draw(st.text(max_size=8)),
    )
    for _ in range(draw(st.integers(0, 2))):
        shape = draw(SHAPES)
        tensor = message.inputs.add(
            name=draw(st.sampled_from(["image", "image", "x"])),
            datatype=draw(DATATYPES),
            shape=[min(max(d, -(1 << 63)), (1 << 63) - 1) for d in shape],
        )
        wanted = _size(shape)
        how = draw(st.sampled_from(["raw", "raw", "contents", "none"]))
        if how == "raw":
            fits = wanted <= 24 * 24 * 3 * 2
            data = bytes(wanted) if fits and draw(st.booleans()) else draw(st.binary(max_size=64))
            message.raw_input_contents.append(data)
        elif how == "contents":
            values = draw(st.lists(st.integers(0, 300), max_size=16))
            tensor.contents.uint_contents.extend(values)
    for name, value in draw(st.dictionaries(PARAMETER_NAMES, PARAMETER_VALUES, max_size=3)).items():
        message.parameters[name].CopyFrom(value)
    return message.SerializeToString()


def test_grpc_infer_requests_no_server_errors(predictor):
    with grpc.insecure_channel(predictor.grpc, options=CHANNEL) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )

        seen: Counter = Counter()

        @given(request=infer_requests(predictor.task))
        @FUZZ
        def check(request):
            try:
                call(request, timeout=60)
                seen[grpc.StatusCode.OK] += 1
            except grpc.RpcError as exc:
                seen[exc.code()] += 1
                assert exc.code() not in SERVER_ERRORS, (exc.code(), exc.details(), request[:300])

        check()
    assert seen[grpc.StatusCode.OK] and seen[grpc.StatusCode.INVALID_ARGUMENT], seen
    no_tracebacks(predictor)
