"""/pipeline?colorize=auto (the default): colorize only a photo without colour of its own.

The colour test itself (transformer/colour.py) on scikit-image's photos and old-photo variants of
them (tests/photo_variants.py), then the gateway as a real process: its colorize predictor is a
closed port, so a request that decides to colorize answers 503 naming colorize at once, and one
that leaves the photo's colours alone answers 200 without any predictor.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from PIL import Image

from tests import photo_variants as pv
from tests.gateway_process import decoded, encoded, start_gateway
from tests.servers import free_port
from transformer import colour

SKIPPED = "colorize skipped (colour photo)"
# Documented in transformer/colour.py: colour faded to a third of its saturation, and the mostly
# black deep-field photo faded at all, count as no colour; a colour photo through the clipping
# sepia matrix keeps some colour.
DOCUMENTED = {
    ("hubble_deep_field", "faded"),
    ("hubble_deep_field", "faded+jpeg"),
    ("astronaut", "sepia matrix"),
    ("astronaut", "sepia matrix+jpeg"),
    ("coffee", "sepia matrix+jpeg"),
    ("immunohistochemistry", "sepia matrix"),
    ("immunohistochemistry", "sepia matrix+jpeg"),
    ("colorwheel", "sepia matrix+jpeg"),
}
CASES = [
    (name, variant, expected)
    for names, variants in ((pv.COLOUR, pv.COLOUR_VARIANTS), (pv.GREY, pv.GREY_VARIANTS))
    for name in names
    for variant, (_, expected) in variants.items()
    if variant != "faded hard" and (name, variant) not in DOCUMENTED
]


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: pv.photo(name) for name in (*pv.COLOUR, *pv.GREY)}


@pytest.mark.parametrize(("name", "variant", "expected"), CASES)
def test_colour_test_on_real_photos(photos, name, variant, expected):
    variants = pv.COLOUR_VARIANTS if name in pv.COLOUR else pv.GREY_VARIANTS
    make = variants[variant][0]
    spread = colour.colour_spread(make(photos[name]))
    assert colour.has_own_colour(make(photos[name])) is expected, spread


def test_documented_exceptions_are_as_documented(photos):
    """The few photos on the other side of the threshold, as transformer/colour.py says."""
    for name, variant in DOCUMENTED:
        make = pv.COLOUR_VARIANTS[variant][0]
        expected = "sepia matrix" in variant  # clipped sepia keeps colour; faded loses it
        assert colour.has_own_colour(make(photos[name])) is expected, (name, variant)


def test_grey_is_zero_and_small_or_odd_images_work():
    grey = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    assert colour.colour_spread(np.repeat(grey, 40, axis=0)) == 0.0
    assert colour.colour_spread(np.zeros((1, 1, 3), np.uint8)) == 0.0
    # Red and green at every lightness: no one tint explains both.
    ramp = np.linspace(40, 255, 32)[:, None]
    red_and_green = np.zeros((32, 8, 3), np.uint8)
    red_and_green[:, 0::2, 0] = ramp
    red_and_green[:, 1::2, 1] = ramp * 0.8
    assert colour.has_own_colour(red_and_green)
    assert not colour.has_own_colour(np.full((3000, 7, 3), (200, 180, 150), np.uint8))


def test_lab_conversion_matches_reference_values():
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]]], np.uint8)
    lab = colour.srgb_to_lab(rgb)[0]
    expected = [[100, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20], [32.30, 79.19, -107.86]]
    np.testing.assert_allclose(lab, expected, atol=0.05)


# ---- through the gateway -----------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    closed = f"127.0.0.1:{free_port()}"  # a colorize predictor that is down: 503 when asked
    gw = start_gateway({"colorize": closed}, tmp_path_factory.mktemp("colorize-auto"))
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        yield c


def small(rgb: np.ndarray) -> np.ndarray:
    height, width = rgb.shape[:2]
    scale = 96 / max(height, width)
    size = (round(width * scale), round(height * scale))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def pipeline(client, data: bytes, content_type="image/png", **params) -> httpx.Response:
    # Only colorize can run: no other step is asked for and the box is the photo's own size.
    width, height = decoded(data).size
    query = {"restore": False, "face_restore": False, "upscale": False, "width": width,
             "height": height, **params}  # fmt: skip
    return client.post("/pipeline", params=query, files={"file": ("p", data, content_type)})


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_colour_photo_keeps_its_colours(client, photos, name):
    rgb = small(photos[name])
    reply = pipeline(client, encoded(rgb))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-steps"] == SKIPPED
    assert np.array_equal(np.asarray(decoded(reply.content).convert("RGB")), rgb)


def test_faded_colour_photo_as_jpeg_keeps_its_colours(client, photos):
    reply = pipeline(client, encoded(small(pv.faded_colour(photos["coffee"])), "JPEG"),
                     "image/jpeg")  # fmt: skip
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-steps"] == SKIPPED


@pytest.mark.parametrize(
    ("name", "make", "fmt"),
    [
        ("camera", lambda x: x, "PNG"),
        ("coffee", pv.sepia, "JPEG"),
        ("astronaut", pv.cyanotype_faded, "PNG"),
        ("page", pv.yellowed_scan, "JPEG"),
    ],
)
def test_photo_without_colour_of_its_own_goes_to_colorize(client, photos, name, make, fmt):
    data = encoded(small(make(photos[name])), fmt)
    reply = pipeline(client, data, f"image/{fmt.lower()}")
    assert reply.status_code == 503, reply.text  # it asked the (stopped) colorize predictor
    assert "colorize" in reply.json()["detail"] and reply.headers["retry-after"]


def test_grey_upload_of_mode_l_goes_to_colorize(client, photos):
    reply = pipeline(client, encoded(small(photos["camera"])[..., 0]))  # an 8-bit grey PNG
    assert reply.status_code == 503 and "colorize" in reply.json()["detail"]


FORCED = [("true", True), ("yes", True), ("1", True), ("false", False), ("off", False)]


@pytest.mark.parametrize(("value", "runs"), [*FORCED, ("AUTO", None)])
def test_true_and_false_force_the_step(client, photos, value, runs):
    colour_photo, grey_photo = small(photos["astronaut"]), small(photos["camera"])
    for rgb, auto_runs in ((colour_photo, False), (grey_photo, True)):
        reply = pipeline(client, encoded(rgb), colorize=value)
        expect_run = auto_runs if runs is None else runs
        assert reply.status_code == (503 if expect_run else 200), (value, reply.text)
        if not expect_run:
            steps = SKIPPED if runs is None else ""
            assert reply.headers["x-steps"] == steps


def test_openapi_documents_auto_as_the_default(client):
    spec = client.get("/openapi.json").json()
    (param,) = [p for p in spec["paths"]["/pipeline"]["post"]["parameters"]
                if p["name"] == "colorize"]  # fmt: skip
    assert param["schema"]["default"] == "auto"
    assert param["schema"]["enum"] == ["auto", "true", "false"]
    assert SKIPPED in param["description"]
