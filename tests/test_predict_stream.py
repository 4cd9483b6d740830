"""ModelStreamInfer on real predictor processes (generated weights), with Triton's own client
(tests/triton_stream.py, in a process of its own) and with the gateway's.

A tiled restore reports its tiles and answers the unary answer's pixels; a face-restore with a
crowd detector reports each face; cancelling the stream (or its deadline) stops the work within a
tile, sized from a measured tile as in tests/test_predict_cancel.py; errors come as Triton gives
them; the gateway's call with a progress listener streams and returns the unary call's answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.servers import ROOT, running_predictor
from tests.test_predict_cancel import MAX_BIG_SIDE, MIN_BIG_COST_S, MIN_BIG_SIDE, TILE, tile_count
from tests.test_predict_faces_bounded import crowd_detector_state
from tests.v2clients import infer_grpc
from transformer import progress as gateway_progress
from transformer.config import Settings
from transformer.predictors import Predictors

FACES = 3  # MAX_FACES of the crowd predictor
STREAM = "grpc method: /inference.GRPCInferenceService/ModelStreamInfer"


@pytest.fixture(scope="module")
def restore(weights, tmp_path_factory):
    with running_predictor(
        "restore", weights.model_dir("restore", "denoise"), tmp_path_factory.mktemp("stream")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def crowd(weights, tmp_path_factory):
    """Face-restore whose detector finds a crowd; the FACES largest are restored."""
    folder = tmp_path_factory.mktemp("stream-crowd")
    source = weights.model_dir("face-restore", "v0.1")
    for name in ("codeformer.pth", "parsing_parsenet.pth"):
        (folder / name).symlink_to(source / name)
    torch.save(crowd_detector_state(), folder / "detection_Resnet50_Final.pth")
    env = {"MAX_FACES": str(FACES)}
    with running_predictor("face-restore", folder, folder, extra_env=env) as server:
        yield server


def triton_stream(address: str, folder, requests: list[dict], **spec) -> list[dict]:
    """Runs tests/triton_stream.py: `requests` ({"model", "id", "image", "parameters"}) on one
    stream; returns the lines it printed (one per response, then {"ended"})."""
    for request in requests:
        path = folder / f"{request['id']}.npy"
        np.save(path, request["image"][None])
        request["image"] = str(path)
    spec_path = folder / "spec.json"
    spec_path.write_text(json.dumps({"address": address, "requests": requests, **spec}))
    run = subprocess.run(
        [sys.executable, "-m", "tests.triton_stream", str(spec_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return [json.loads(line) for line in run.stdout.splitlines()]


def progress_of(lines: list[dict], request_id: str) -> list[dict]:
    return [line for line in lines if line.get("id") == request_id and not line["final"]]


def answer_of(lines: list[dict], request_id: str) -> dict:
    (answer,) = [line for line in lines if line.get("id") == request_id and line["final"]]
    return answer


def assert_monotone_to_the_total(reports: list[dict], total: int) -> None:
    dones = [r["done"] for r in reports]
    assert dones == sorted(dones) and dones[-1] == total, dones
    assert {r["total"] for r in reports} == {total}


def test_tiles_are_reported_and_the_answer_is_the_unary_ones(restore, astronaut, tmp_path):
    photo = astronaut[:384, :384].copy()
    tiles = tile_count(384)
    lines = triton_stream(
        restore.grpc,
        tmp_path,
        [{"model": "restore", "id": "p1", "image": photo, "parameters": {"tile_size": TILE}}],
    )
    reports, answer = progress_of(lines, "p1"), answer_of(lines, "p1")
    assert_monotone_to_the_total(reports, tiles)
    assert all(re.fullmatch(rf"restore: tile \d+ of {tiles}", r["stage"]) for r in reports)
    assert all(r["final"] is False for r in reports) and answer["final"] is True
    # rate-limited: at most ~10 a second, plus the last
    assert len(reports) <= 10 * answer["t"] + 2, (len(reports), answer["t"])
    unary, params = infer_grpc(restore.grpc, "restore", photo, tile_size=TILE)
    assert np.array_equal(np.load(answer["output"])[0], unary)
    assert answer["parameters"]["triton_final_response"] is True
    # ModelInfer is unchanged: its answer carries none of the stream's parameters
    assert not {"triton_final_response", "progress_done"} & set(params)
    assert params == {k: v for k, v in answer["parameters"].items() if k in params}


def test_faces_are_reported_one_by_one(crowd, astronaut, tmp_path):
    photo = astronaut[::3, ::3].copy()  # 171 px: a grid of faces to the crowd detector
    lines = triton_stream(
        crowd.grpc,
        tmp_path,
        [{"model": "face-restore", "id": "f1", "image": photo, "parameters": {"upscale": 1}}],
    )
    reports, answer = progress_of(lines, "f1"), answer_of(lines, "f1")
    assert [r["done"] for r in reports] == list(range(FACES + 1))  # a face takes >> 0.1 s
    assert_monotone_to_the_total(reports, FACES)
    assert [r["stage"] for r in reports][-1] == f"face-restore: face {FACES} of {FACES}"
    assert answer["parameters"]["faces"] == FACES
    assert np.load(answer["output"]).shape == (1, *photo.shape)


def test_errors_come_in_the_stream_or_end_it_as_triton_does(restore, astronaut, tmp_path):
    small = astronaut[200:264, 200:264].copy()
    requests = [
        {"model": "restore", "id": "bad", "image": small, "parameters": {"tile_size": 1}},
        {"model": "restore", "id": "good", "image": small},
    ]
    # Triton's default: the error is a response with error_message; the stream goes on
    lines = triton_stream(restore.grpc, tmp_path, [dict(r) for r in requests])
    (error,) = [line for line in lines if "error" in line]
    assert error["status"] is None
    assert error["error"].startswith("[request id: bad] parameter 'tile_size' must be 0")
    assert np.load(answer_of(lines, "good")["output"])[0].shape == small.shape
    # with the triton_grpc_error header, the error ends the stream with ModelInfer's status
    lines = triton_stream(
        restore.grpc, tmp_path, [dict(requests[0])], headers={"triton_grpc_error": "true"}
    )
    (error,) = [line for line in lines if "error" in line]
    assert error["status"] == "StatusCode.INVALID_ARGUMENT" and "'tile_size'" in error["error"]
    assert lines[-1]["ended"] == "stream error"


@pytest.fixture(scope="module")
def big(restore, astronaut):
    """(photo, seconds its tiles would take): sized from one measured tile (a 256 px photo of 9
    tiles) so that the whole takes MIN_BIG_COST_S, as in tests/test_predict_cancel.py."""
    sample = astronaut[:256, :256]
    infer_grpc(restore.grpc, "restore", sample[:128, :128], tile_size=TILE)  # warm up
    start = time.monotonic()
    infer_grpc(restore.grpc, "restore", sample, tile_size=TILE)
    per_tile = (time.monotonic() - start) / tile_count(256)
    side = MIN_BIG_SIDE
    while per_tile * tile_count(side) < MIN_BIG_COST_S:
        side += 512
        assert side <= MAX_BIG_SIDE, f"one tile takes {per_tile * 1000:.1f} ms: too fast to test"
    return np.tile(astronaut, (side // 512, side // 512, 1)), per_tile * tile_count(side)


@pytest.mark.parametrize("how", [{"cancel_after": 3}, {"stream_timeout": 3}])
def test_ending_the_stream_stops_the_work_within_a_tile(restore, astronaut, big, tmp_path, how):
    photo, cost = big
    stopped_before = restore.log().count("stopping its work")
    request = {"model": "restore", "id": "big", "image": photo, "parameters": {"tile_size": TILE}}
    lines = triton_stream(restore.grpc, tmp_path, [request], **how)
    reports = progress_of(lines, "big")
    assert reports and reports[-1]["done"] < reports[-1]["total"]  # it was running
    if "stream_timeout" in how:
        assert lines[-2]["status"] == "StatusCode.DEADLINE_EXCEEDED"
    small = astronaut[200:264, 200:264].copy()
    start = time.monotonic()
    out, _ = infer_grpc(restore.grpc, "restore", small)
    wait = time.monotonic() - start
    print(f"{how}: big request ~{cost:.1f} s, the next small one waited {wait:.2f} s")
    assert out.shape == small.shape
    assert wait < cost / 10, (wait, cost)  # what was left of the big one is ~cost - 3 s
    assert restore.log().count("stopping its work") == stopped_before + 1
    # The tiles it looked at before it stopped: far from all of them. Cancelled after three
    # reports (a few tenths of a second of work), it stopped within the first tenth (>= 2 s of
    # work as measured); at its deadline (3 s) the share done depends on this machine's speed.
    checks = int(re.findall(r"stopped after (\d+) step", restore.log())[-1])
    assert checks < tile_count(len(photo)) / (10 if "cancel_after" in how else 1), checks


def test_the_gateway_with_a_listener_streams_and_gets_the_unary_answer(restore, astronaut):
    photo = astronaut[:384, :384].copy()
    tiles = tile_count(384)

    async def both():
        settings = Settings(addresses={"restore": restore.grpc})
        settings.grpc_max_message = 256 << 20
        predictors = Predictors(settings)
        reports = []
        try:
            plain = await predictors.infer("restore", photo, {"tile_size": TILE})
            token = gateway_progress.current.set(lambda *report: reports.append(report))
            try:
                streamed = await predictors.infer("restore", photo, {"tile_size": TILE})
            finally:
                gateway_progress.current.reset(token)
        finally:
            await predictors.close()
        return plain, streamed, reports

    streams_before = restore.log().count(STREAM)
    plain, streamed, reports = asyncio.run(both())
    assert restore.log().count(STREAM) == streams_before + 1  # only the call with a listener
    assert np.array_equal(streamed.image, plain.image)
    assert streamed.parameters == plain.parameters
    assert {task for task, *_ in reports} == {"restore"}
    assert_monotone_to_the_total(
        [{"done": d, "total": t} for _, d, t, _ in reports], tiles
    )  # fmt: skip
    assert reports[-1][3] == f"restore: tile {tiles} of {tiles}"
