"""The face-restore predictor (CodeFormer + facexlib) as a real KServe process.

The generated RetinaFace finds exactly one face in any photo (see weights_factory), so the
detection, alignment and ParseNet paste-back path really runs.
"""

from __future__ import annotations

import asyncio
import struct

import cv2
import numpy as np
import pytest
from kserve.protocol.grpc.grpc_predict_v2_pb2 import InferParameter

from tests.servers import running_predictor
from tests.v2clients import V2Error, infer_grpc, infer_grpc_async, infer_rest


@pytest.fixture(scope="module")
def face(weights, tmp_path_factory):
    with running_predictor(
        "face-restore", weights.model_dir("face-restore", "v0.1"), tmp_path_factory.mktemp("face")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def portraits(astronaut):
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 2)
    return [cv2.resize(blurred, (96, 96)), cv2.resize(blurred[:400, 100:500], (120, 120))]


# (portrait index, upscale, only_center_face): made one by one, then concurrently.
REQUESTS = [(0, 1, True), (1, 2, False)]


def _params(upscale: int, only_center_face: bool) -> dict:
    return {"upscale": upscale, "only_center_face": only_center_face, "fidelity": "0.5"}


@pytest.fixture(scope="module")
def sequential(face, portraits):
    return [
        infer_grpc(face.grpc, "face-restore", portraits[i], **_params(up, center))
        for i, up, center in REQUESTS
    ]


def test_detected_face_is_restored_and_pasted_back(sequential, portraits):
    out, params = sequential[0]
    assert out.shape == portraits[0].shape and params["faces"] == 1
    assert np.abs(out.astype(int) - portraits[0].astype(int)).mean() > 1  # the face changed


def test_upscale_applies_to_the_whole_image(sequential):
    out, params = sequential[1]
    assert out.shape == (240, 240, 3) and params["faces"] == 1


def test_aligned_input_skips_detection(face, portraits):
    # OIP v2 gRPC parameters hold no floats: fidelity travels as a string there, a number in REST.
    out, params = infer_grpc(
        face.grpc, "face-restore", portraits[0], has_aligned=True, upscale=1, fidelity="1.0"
    )
    assert out.shape == (512, 512, 3) and params["faces"] == 1
    other, _ = infer_rest(
        face.http, "face-restore", portraits[0], has_aligned=True, upscale=1, fidelity=0.0
    )
    assert not np.array_equal(out, other)  # fidelity reaches the network


# What Triton's gRPC client puts on the wire for fidelity=0.3 and upscale=1: its double_param
# (field 4, fixed64) and uint64_param (field 5, varint), fields OIP v2's InferParameter lacks.
TRITON_DOUBLE = InferParameter.FromString(b"\x21" + struct.pack("<d", 0.3))
TRITON_UINT64 = InferParameter.FromString(b"\x28\x01")


def test_tritons_double_and_uint64_parameters_are_read(face, portraits):
    as_strings, _ = infer_grpc(
        face.grpc, "face-restore", portraits[0], has_aligned=True, fidelity="0.3", upscale=1
    )
    as_triton, _ = infer_grpc(
        face.grpc,
        "face-restore",
        portraits[0],
        has_aligned=True,
        fidelity=TRITON_DOUBLE,
        upscale=TRITON_UINT64,
    )
    assert as_triton.shape == (512, 512, 3)
    assert np.array_equal(as_triton, as_strings)


def test_an_empty_grpc_parameter_is_refused_clearly(face, portraits):
    with pytest.raises(V2Error, match="has no bool, int64, string, double or uint64 value"):
        infer_grpc(
            face.grpc, "face-restore", portraits[0], has_aligned=True, fidelity=InferParameter()
        )


def test_fidelity_out_of_range_is_refused(face, portraits):
    with pytest.raises(V2Error, match="fidelity"):
        infer_grpc(face.grpc, "face-restore", portraits[0], fidelity="1.5")
    assert face.is_ready()


def test_concurrent_requests_never_share_an_images_state(face, portraits, sequential):
    order = [0, 1, 0, 1]
    requests = [(portraits[REQUESTS[k][0]], _params(*REQUESTS[k][1:])) for k in order]
    images, params = zip(*requests, strict=True)
    concurrent = asyncio.run(infer_grpc_async(face.grpc, "face-restore", images, params))
    for k, got in zip(order, concurrent, strict=True):
        assert np.array_equal(got, sequential[k][0])
