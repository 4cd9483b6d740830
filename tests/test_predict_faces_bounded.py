"""Face-restore's work is bounded: MAX_FACES faces per image, the largest first, and an abandoned
request stops between faces. One real process with a RetinaFace that sees a crowd.

The generated RetinaFace of weights_factory finds exactly one face; the one here marks every
128 px anchor of the middle level as a face with unstretched boxes, so non-maximum suppression
keeps a grid of dozens of faces (a crowd photo), each with a plausible 5-point layout.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import grpc
import pytest
import torch
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from predictors.face_restore import keep_largest_faces
from tests import weights_factory
from tests.servers import running_predictor
from tests.v2clients import CHANNEL, infer_grpc

MAX_FACES = 2


def crowd_detector_state() -> dict:
    """Every 128 px anchor of the middle level a face, boxes unstretched: a grid of faces."""
    landmarks = (-1.8, -0.5, 1.8, -0.5, 0.0, 1.6, -1.5, 3.2, 1.5, 3.2)
    return weights_factory.retinaface_state(level=1, landmarks=landmarks, stretched=False)


@pytest.fixture(scope="module")
def crowd(weights, tmp_path_factory):
    folder = tmp_path_factory.mktemp("crowd")
    source = weights.model_dir("face-restore", "v0.1")
    for name in ("codeformer.pth", "parsing_parsenet.pth"):
        (folder / name).symlink_to(source / name)
    torch.save(crowd_detector_state(), folder / "detection_Resnet50_Final.pth")
    env = {"MAX_FACES": str(MAX_FACES)}
    with running_predictor("face-restore", folder, folder, extra_env=env) as server:
        yield server


@pytest.fixture(scope="module")
def photo(astronaut):
    return astronaut[::3, ::3].copy()  # 171 px


@pytest.fixture(scope="module")
def capped(crowd, photo):
    """The crowd photo restored once: (seconds, response parameters)."""
    start = time.monotonic()
    out, params = infer_grpc(crowd.grpc, "face-restore", photo, upscale=1)
    assert out.shape == photo.shape
    return time.monotonic() - start, params


def test_at_most_max_faces_are_restored_and_the_answer_says_how_many_were_found(capped):
    _, params = capped
    assert params["faces"] == MAX_FACES
    assert params["faces_found"] > 3 * MAX_FACES


def test_the_largest_faces_are_kept():
    boxes = [[0, 0, 10, 10, 1], [0, 0, 40, 30, 1], [5, 5, 25, 25, 1], [0, 0, 50, 50, 1]]
    helper = SimpleNamespace(det_faces=boxes, all_landmarks_5=["a", "b", "c", "d"])
    assert keep_largest_faces(helper, 2) == 4
    assert helper.all_landmarks_5 == ["d", "b"] and helper.det_faces == [boxes[3], boxes[1]]


def test_an_abandoned_request_stops_between_faces(crowd, photo, capped):
    seconds, _ = capped
    request = pb.ModelInferRequest(model_name="face-restore")
    request.inputs.add(name="image", datatype="UINT8", shape=[1, *photo.shape])
    request.raw_input_contents.append(photo.tobytes())
    request.parameters["upscale"].int64_param = 1

    async def abandon():
        async with grpc.aio.insecure_channel(crowd.grpc, options=CHANNEL) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                await GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=seconds / 4)
            return caught.value.code()

    assert asyncio.run(abandon()) == grpc.StatusCode.DEADLINE_EXCEEDED
    start = time.monotonic()
    _, params = infer_grpc(crowd.grpc, "face-restore", photo[:64, :64], has_aligned=True)
    wait = time.monotonic() - start
    # Unstopped, the abandoned request would hold the thread for ~3/4 of `seconds` more; stopped,
    # it finishes one face (~1/MAX_FACES of it) and the aligned face costs about one more.
    assert params["faces"] == 1 and wait < 0.6 * seconds, (wait, seconds)
    assert "stopping its work" in crowd.log()
