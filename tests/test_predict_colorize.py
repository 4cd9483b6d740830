"""The colorize predictor (DDColor, Lab pipeline) as a real KServe process."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.servers import running_predictor
from tests.v2clients import V2Error, infer_grpc, infer_rest

MAX_RENDER_FACTOR = 24  # this server's bound on memory (the default is 64)


@pytest.fixture(scope="module")
def colorize(weights, tmp_path_factory):
    with running_predictor(
        "colorize",
        weights.model_dir("colorize", "paper_tiny"),
        tmp_path_factory.mktemp("colorize"),
        variant="paper_tiny",
        extra_env={"MAX_RENDER_FACTOR": str(MAX_RENDER_FACTOR)},
    ) as server:
        yield server


@pytest.fixture(scope="module")
def grey(camera):
    small = cv2.resize(camera, (120, 96), interpolation=cv2.INTER_AREA)
    return np.repeat(small[:, :, None], 3, axis=2)


def lightness(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[:, :, 0]


@pytest.mark.parametrize("render_factor", [4, 9])
def test_keeps_size_and_full_resolution_lightness(colorize, grey, render_factor):
    out, _ = infer_grpc(colorize.grpc, "colorize", grey, render_factor=render_factor)
    assert out.shape == grey.shape and out.dtype == np.uint8
    # L is the input's own at full resolution; only ab come from the network. Random weights
    # saturate ab, so gamut clipping moves L, but the picture's light and shade must remain.
    correlation = np.corrcoef(lightness(out).ravel(), lightness(grey).ravel())[0, 1]
    assert correlation > 0.8, correlation
    assert np.abs(out[:, :, 0].astype(int) - out[:, :, 2].astype(int)).max() > 0  # colour added


def test_rest_binary_and_grpc_agree(colorize, grey):
    by_grpc, _ = infer_grpc(colorize.grpc, "colorize", grey, render_factor=4)
    by_rest, _ = infer_rest(colorize.http, "colorize", grey, render_factor=4)
    assert np.array_equal(by_grpc, by_rest)


@pytest.mark.parametrize("render_factor", [0, 101])
def test_render_factor_out_of_range_is_refused(colorize, grey, render_factor):
    with pytest.raises(V2Error, match="render_factor"):
        infer_grpc(colorize.grpc, "colorize", grey, render_factor=render_factor)
    assert colorize.is_ready()


def test_render_factor_over_the_servers_maximum_is_refused_with_the_reason(colorize, grey):
    with pytest.raises(V2Error, match=r"at most 24 on this server \(MAX_RENDER_FACTOR\).*memory"):
        infer_grpc(colorize.grpc, "colorize", grey, render_factor=MAX_RENDER_FACTOR + 1)
    assert colorize.is_ready()
