"""The V2 codec: parameters from both protocols, images, and the REST binary fast path."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from kserve.errors import InvalidInput
from kserve.protocol.grpc.grpc_predict_v2_pb2 import InferParameter
from kserve.protocol.infer_type import InferRequest

from predictors.v2codec import Param, decode_images, decode_parameters, request_from_binary_rest

SPECS = {
    "scale": Param(int, 4, 1, 8),
    "fidelity": Param(float, 0.5, 0, 1),
    "has_aligned": Param(bool, False),
}


def test_rest_and_grpc_parameters_decode_alike():
    rest = decode_parameters({"scale": 2, "fidelity": 0.7, "has_aligned": True}, SPECS)
    grpc = decode_parameters(
        {
            "scale": InferParameter(int64_param=2),
            "fidelity": InferParameter(string_param="0.7"),
            "has_aligned": InferParameter(bool_param=True),
        },
        SPECS,
    )
    assert rest == grpc == {"scale": 2, "fidelity": 0.7, "has_aligned": True}
    assert decode_parameters(None, SPECS) == {"scale": 4, "fidelity": 0.5, "has_aligned": False}


@pytest.mark.parametrize(
    "raw",
    [
        {"scale": 2.5},
        {"scale": "x"},
        {"has_aligned": "maybe"},
        {"fidelity": -0.1},
        {"scale": InferParameter()},
    ],
)
def test_bad_parameters_are_invalid_input(raw):
    with pytest.raises(InvalidInput):
        decode_parameters(raw, SPECS)


def _binary_body(image: np.ndarray, declared: int | None = None) -> tuple[bytes, int]:
    raw = image.tobytes()
    header = orjson.dumps(
        {
            "id": "r1",
            "inputs": [
                {
                    "name": "image",
                    "shape": list(image.shape),
                    "datatype": "UINT8",
                    "parameters": {"binary_data_size": declared or len(raw)},
                }
            ],
            "parameters": {"scale": 2},
            "outputs": [{"name": "image", "parameters": {"binary_data": True}}],
        }
    )
    return header + raw, len(header)


def test_binary_rest_request_keeps_bytes_and_equals_kserves_decoding():
    image = np.random.default_rng(0).integers(0, 256, (1, 20, 30, 3), dtype=np.uint8)
    body, length = _binary_body(image)
    ours = request_from_binary_rest(body, length, "upscale")
    theirs = InferRequest.from_bytes(body, length, "upscale")
    assert np.array_equal(decode_images(ours), decode_images(theirs))
    assert np.array_equal(decode_images(ours), image)
    assert ours.id == "r1" and ours.parameters == {"scale": 2}
    assert [o.binary_data for o in ours.request_outputs] == [True]


def test_binary_rest_request_with_a_wrong_size_is_invalid():
    image = np.zeros((1, 4, 4, 3), np.uint8)
    body, length = _binary_body(image, declared=10)
    with pytest.raises(InvalidInput, match="binary data holds 48 bytes"):
        request_from_binary_rest(body, length, "upscale")
    with pytest.raises(InvalidInput, match="unrecognised"):
        request_from_binary_rest(b"{nope" + bytes(48), 5, "upscale")
