"""A predictor given bad weights stays up, not ready, and says why."""

from __future__ import annotations

import shutil
import time

import httpx
import numpy as np
import pytest

from tests.servers import start_predictor
from tests.v2clients import V2Error, infer_grpc


def _wrong_family(weights, folder):
    src = weights.model_dir("restore", "denoise") / "NAFNet-SIDD-width64.pth"
    shutil.copy(src, folder / "RealESRGAN_x4plus.pth")
    return "upscale expects ESRGAN, RealESRGAN_x4plus.pth is NAFNet"


def _truncated(weights, folder):
    data = (weights.model_dir("upscale", "x4plus") / "RealESRGAN_x4plus.pth").read_bytes()
    (folder / "RealESRGAN_x4plus.pth").write_bytes(data[: len(data) // 2])
    return "cannot read RealESRGAN_x4plus.pth: it is truncated"


def _not_official(weights, folder):
    shutil.copy(weights.model_dir("upscale", "x4plus") / "RealESRGAN_x4plus.pth", folder)
    return "RealESRGAN_x4plus.pth is not the official release"


def _flipped_byte(weights, folder):
    source = weights.model_dir("upscale", "x4plus") / "RealESRGAN_x4plus.pth"
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a tensor: torch.load alone would serve a wrong weight
    (folder / "RealESRGAN_x4plus.pth").write_bytes(bytes(data))
    return "RealESRGAN_x4plus.pth is corrupt: "


@pytest.mark.parametrize("make", [_wrong_family, _truncated, _not_official, _flipped_byte])
def test_bad_file_keeps_the_server_up_and_not_ready(weights, tmp_path, make):
    folder = tmp_path / "models"
    folder.mkdir()
    expected = make(weights, folder)
    allow = make is not _not_official
    server = start_predictor("upscale", folder, tmp_path, allow_unverified=allow)
    try:
        server.wait(ready=False)
        deadline = time.monotonic() + 60
        while expected not in server.log() and time.monotonic() < deadline:
            time.sleep(0.2)  # the load runs beside the server
        assert expected in server.log()
        assert "upscale is not ready" in server.log()
        assert server.process.poll() is None and server.is_live() and not server.is_ready()
        reply = httpx.get(f"http://{server.http}/v2/models/upscale/ready")
        assert reply.status_code == 503
        unavailable = r"UNAVAILABLE.*not ready"
        with pytest.raises(V2Error, match=unavailable):
            infer_grpc(server.grpc, "upscale", np.zeros((8, 8, 3), np.uint8))
    finally:
        server.stop()


def test_a_broken_helper_network_keeps_face_restore_not_ready(weights, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    source = weights.model_dir("face-restore", "v0.1")
    for name in ("codeformer.pth", "parsing_parsenet.pth"):
        (folder / name).symlink_to(source / name)
    data = (source / "detection_Resnet50_Final.pth").read_bytes()
    (folder / "detection_Resnet50_Final.pth").write_bytes(data[: len(data) // 4])
    server = start_predictor("face-restore", folder, tmp_path)
    try:
        server.wait(ready=False)
        deadline = time.monotonic() + 120
        while "is not ready" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "face-restore is not ready: loading failed" in server.log()
        assert server.process.poll() is None and server.is_live() and not server.is_ready()
        with pytest.raises(V2Error, match=r"UNAVAILABLE.*loading failed"):
            infer_grpc(server.grpc, "face-restore", np.zeros((8, 8, 3), np.uint8))
    finally:
        server.stop()
