"""The restore predictor (NAFNet) as a real KServe process: denoise, and deblur with TLC."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spandrel import ModelLoader

from archs.nafnet_tlc import apply_tlc
from tests.servers import start_predictor
from tests.v2clients import infer_grpc, infer_rest


def noisy(photo: np.ndarray, sigma: float = 20, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, photo.shape)
    return np.clip(photo + noise, 0, 255).astype(np.uint8)


def reference(path, image: np.ndarray, tlc: bool = False) -> np.ndarray:
    model = ModelLoader().load_from_file(path).eval()
    if tlc:
        apply_tlc(model.model)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        out = model(tensor)
    return out[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def denoise(weights, tmp_path_factory):
    server = start_predictor("restore", weights.model_dir("restore", "denoise"),
                             tmp_path_factory.mktemp("restore"))
    server.wait()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def photo(astronaut):
    return noisy(astronaut[120:220, 180:300])  # 100 x 120: not a multiple of 16


def test_answer_equals_spandrel_in_process(denoise, weights, photo):
    out, _ = infer_grpc(denoise.grpc, "restore", photo)
    expected = reference(weights.model_dir("restore", "denoise") / "NAFNet-SIDD-width64.pth", photo)
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 2


def test_rest_binary_and_grpc_agree(denoise, photo):
    assert np.array_equal(
        infer_grpc(denoise.grpc, "restore", photo)[0], infer_rest(denoise.http, "restore", photo)[0]
    )


def test_tile_size_keeps_the_size(denoise, photo):
    out, _ = infer_grpc(denoise.grpc, "restore", photo, tile_size=64)
    assert out.shape == photo.shape


def test_grayscale_photo_as_rgb(denoise, camera):
    grey = np.repeat(noisy(camera[:64, :80, None]), 3, axis=2)
    out, _ = infer_grpc(denoise.grpc, "restore", grey)
    assert out.shape == (64, 80, 3)


def test_deblur_uses_the_authors_local_pooling(weights, tmp_path, astronaut):
    server = start_predictor("restore", weights.model_dir("restore", "deblur"), tmp_path,
                             variant="deblur")
    try:
        server.wait()
        big = astronaut[:416, :448].copy()  # larger than the 384 px TLC window
        out, _ = infer_grpc(server.grpc, "restore", big)
        path = weights.model_dir("restore", "deblur") / "NAFNet-GoPro-width64.pth"
        with_tlc, plain = reference(path, big, tlc=True), reference(path, big)
        assert np.abs(out.astype(int) - with_tlc.astype(int)).max() <= 2
        assert np.abs(with_tlc.astype(int) - plain.astype(int)).max() > 0
    finally:
        server.stop()
