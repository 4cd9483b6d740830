"""The restore predictor (NAFNet) as a real KServe process: denoise, and deblur with TLC."""

from __future__ import annotations

import numpy as np
import pytest

from tests.reference import spandrel_reference
from tests.servers import running_predictor
from tests.v2clients import infer_grpc, infer_rest


def noisy(photo: np.ndarray, sigma: float = 20, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, photo.shape)
    return np.clip(photo + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def denoise(weights, tmp_path_factory):
    with running_predictor(
        "restore", weights.model_dir("restore", "denoise"), tmp_path_factory.mktemp("restore")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def photo(astronaut):
    return noisy(astronaut[120:220, 180:300])  # 100 x 120: not a multiple of 16


def test_answer_equals_spandrel_in_process(denoise, weights, photo):
    out, _ = infer_grpc(denoise.grpc, "restore", photo)
    expected = spandrel_reference(
        weights.model_dir("restore", "denoise") / "NAFNet-SIDD-width64.pth", photo
    )
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 2


def test_rest_binary_and_grpc_agree(denoise, photo):
    assert np.array_equal(
        infer_grpc(denoise.grpc, "restore", photo)[0], infer_rest(denoise.http, "restore", photo)[0]
    )


def test_tile_size_keeps_the_size(denoise, photo):
    out, _ = infer_grpc(denoise.grpc, "restore", photo, tile_size=128)
    assert out.shape == photo.shape


def test_grayscale_photo_as_rgb(denoise, camera):
    grey = np.repeat(noisy(camera[:64, :80, None]), 3, axis=2)
    out, _ = infer_grpc(denoise.grpc, "restore", grey)
    assert out.shape == (64, 80, 3)


def test_deblur_uses_the_authors_local_pooling(weights, tmp_path, astronaut):
    deblur = weights.model_dir("restore", "deblur")
    with running_predictor("restore", deblur, tmp_path, variant="deblur") as server:
        big = astronaut[:416, :448].copy()  # larger than the 384 px TLC window
        out, _ = infer_grpc(server.grpc, "restore", big)
        path = weights.model_dir("restore", "deblur") / "NAFNet-GoPro-width64.pth"
        with_tlc, plain = spandrel_reference(path, big, tlc=True), spandrel_reference(path, big)
        assert np.abs(out.astype(int) - with_tlc.astype(int)).max() <= 2
        assert np.abs(with_tlc.astype(int) - plain.astype(int)).max() > 0
