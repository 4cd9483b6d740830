"""End to end: the gateway and the four predictors as real processes on 127.0.0.1.

The predictors serve the generated official-layout weights (tests/weights_factory.py) on CPU.
Images are real photos from scikit-image, kept small (48-96 px) because everything runs on a
couple of CPU cores; every route and every documented parameter is checked on the decoded answer.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from PIL import Image, ImageCms

from tests import servers
from tests.gateway_process import decoded, encoded, start_gateway
from tests.v2clients import infer_grpc

VARIANTS = {"colorize": "paper_tiny", "restore": "denoise", "face-restore": "v0.1",
            "upscale": "x4plus"}  # fmt: skip
ENV = {"MODEL_COLORIZE": "paper_tiny"}


@pytest.fixture(scope="module")
def predictors(weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e-predictors")
    started = {
        task: servers.start_predictor(task, weights.model_dir(task, variant), tmp, variant)
        for task, variant in VARIANTS.items()
    }
    try:
        for predictor in started.values():
            predictor.wait(timeout=300)
        yield started
    finally:
        for predictor in started.values():
            predictor.stop()


@pytest.fixture(scope="module")
def gateway(predictors, tmp_path_factory):
    gw = start_gateway(
        {task: p.grpc for task, p in predictors.items()},
        tmp_path_factory.mktemp("e2e-gateway"),
        env=ENV,
    )
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(base_url=gateway.url, timeout=600) as c:
        yield c


@pytest.fixture(scope="module")
def portrait(astronaut) -> np.ndarray:
    """The astronaut's head and shoulders, 64x64."""
    return np.asarray(Image.fromarray(astronaut[20:260, 120:360]).resize((64, 64)))


@pytest.fixture(scope="module")
def small(astronaut) -> np.ndarray:
    """The whole astronaut photo at 64x48 (not square: width and height cannot be confused)."""
    return np.asarray(Image.fromarray(astronaut).resize((64, 48), Image.Resampling.LANCZOS))


def post(client, route, data: bytes, fmt="image/png", **params) -> httpx.Response:
    reply = client.post(route, params=params, files={"file": ("photo", data, fmt)})
    assert reply.status_code == 200, reply.text
    return reply


def image_of(reply, container="PNG", mode="RGB") -> Image.Image:
    media = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[container]
    assert reply.headers["content-type"] == media
    im = decoded(reply.content)
    assert im.format == container and im.mode == mode
    return im


def test_health_reports_all_ready_with_variants(client):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    for task, variant in VARIANTS.items():
        assert body["models"][task]["ready"] is True
        assert body["models"][task]["variant"] == variant


@pytest.mark.parametrize(
    ("output_format", "container"),
    [("png", "PNG"), ("jpg", "JPEG"), ("jpeg", "JPEG"), ("webp", "WEBP")],
)
def test_colorize_grayscale_photo_every_output_format(client, camera, output_format, container):
    gray = np.asarray(Image.fromarray(camera).resize((80, 56)))
    reply = post(client, "/colorize", encoded(gray), render_factor=2, output_format=output_format)
    assert image_of(reply, container).size == (80, 56)
    assert reply.headers["x-steps"] == "colorize"


def test_colorize_default_render_factor(client, small):
    reply = post(client, "/colorize", encoded(small, "JPEG"), "image/jpeg")
    assert image_of(reply).size == (64, 48)


@pytest.mark.parametrize("tile_size", [0, 128])
def test_restore_tile_size(client, small, tile_size):
    reply = post(client, "/restore", encoded(small, "JPEG"), "image/jpeg", tile_size=tile_size)
    assert image_of(reply).size == (64, 48)


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_upscale_output_is_exactly_scale_times_the_input(client, small, scale):
    reply = post(client, "/upscale", encoded(small), scale=scale, tile_size=0)
    assert image_of(reply).size == (64 * scale, 48 * scale)
    assert reply.headers["x-steps"] == f"upscale x{scale}"


def test_upscale_defaults_and_tiles(client, small, astronaut):
    default = post(client, "/upscale", encoded(small))  # scale 4, tile_size 512
    assert image_of(default).size == (256, 192)
    wide = np.asarray(Image.fromarray(astronaut).resize((160, 120)))  # two 128 px tiles across
    tiled = post(client, "/upscale", encoded(wide), scale=2, tile_size=128, output_format="webp")
    assert image_of(tiled, "WEBP").size == (320, 240)


def test_face_restore_detects_and_upscales(client, portrait):
    reply = post(
        client, "/face-restore", encoded(portrait), fidelity=0.3, upscale=2, only_center_face=True
    )
    assert image_of(reply).size == (128, 128)
    assert int(reply.headers["x-faces"]) in (0, 1)
    assert int(reply.headers["x-faces-found"]) >= int(reply.headers["x-faces"])


def test_face_restore_aligned_crop(client, portrait):
    reply = post(
        client, "/face-restore", encoded(portrait, "JPEG"), "image/jpeg",
        has_aligned=True, upscale=1, fidelity=1.0, output_format="jpg",
    )  # fmt: skip
    assert image_of(reply, "JPEG").size == (512, 512)  # CodeFormer's aligned face size
    assert reply.headers["x-faces"] == "1"


def test_pipeline_upscales_into_the_box(client, small):
    reply = post(
        client, "/pipeline", encoded(small), face_restore=False, width=300, height=200,
        render_factor=2, restore_tile_size=0, upscale_tile_size=0,
    )  # fmt: skip
    # 64x48 fits 300x200 4.17 times: x4 upscale (256x192), then resized into the box. A colour
    # photo keeps its colours (colorize=auto, the default).
    assert image_of(reply).size == (267, 200)
    steps = "colorize skipped (colour photo),restore,upscale x4,resize 267x200"
    assert reply.headers["x-steps"] == steps


def test_pipeline_colorizes_a_grey_or_sepia_photo_by_default(client, camera):
    grey = np.asarray(Image.fromarray(camera).resize((48, 48)))
    sepia = (grey[..., None] * np.array([1.0, 0.85, 0.65])).astype(np.uint8)
    for photo in (grey, sepia):
        reply = post(
            client, "/pipeline", encoded(photo), restore=False, upscale=False,
            face_restore=False, width=48, height=48, render_factor=2,
        )  # fmt: skip
        assert reply.headers["x-steps"] == "colorize"
        assert image_of(reply).size == (48, 48)


def test_pipeline_steps_can_be_switched_off(client, small):
    reply = post(
        client, "/pipeline", encoded(small), colorize=False, restore=False, upscale=False,
        face_restore=False, width=32, height=32,
    )  # fmt: skip
    assert image_of(reply).size == (32, 24)
    assert reply.headers["x-steps"] == "resize 32x24"
    bigger_than_box = post(
        client, "/pipeline", encoded(small), colorize=False, restore=True, face_restore=False,
        width=40, height=100, restore_tile_size=128, output_format="webp",
    )  # fmt: skip
    assert image_of(bigger_than_box, "WEBP").size == (40, 30)  # no upscale: it is too big already
    assert bigger_than_box.headers["x-steps"] == "restore,resize 40x30"


def test_pipeline_all_steps_with_faces_last(client, portrait):
    reply = post(
        client, "/pipeline", encoded(portrait, "JPEG"), "image/jpeg", width=100, height=80,
        render_factor=2, restore_tile_size=0, upscale_tile_size=128, fidelity=0.9,
        only_center_face=True, output_format="jpeg", colorize=True,
    )  # fmt: skip
    assert image_of(reply, "JPEG").size == (80, 80)
    steps = reply.headers["x-steps"].split(",")
    assert steps == ["colorize", "restore", "upscale x2", "resize 80x80", "face-restore"]
    assert int(reply.headers["x-faces"]) in (0, 1)


def test_alpha_is_carried_to_png_and_webp_and_dropped_for_jpeg(client, small):
    alpha = np.zeros((48, 64), np.uint8)
    alpha[:, 32:] = 255
    rgba = encoded(np.dstack([small, alpha]))
    # Upscale: the alpha is resized with the image.
    reply = post(client, "/upscale", rgba, scale=2, tile_size=0)
    im = image_of(reply, "PNG", mode="RGBA")
    assert im.size == (128, 96)
    a = np.asarray(im)[..., 3]
    assert a[:, :56].max() < 20 and a[:, 72:].min() > 235
    reply = post(client, "/colorize", rgba, render_factor=2, output_format="webp")
    im = image_of(reply, "WEBP", mode="RGBA")
    assert im.size == (64, 48)
    assert np.abs(np.asarray(im)[..., 3].astype(int) - alpha).max() <= 2
    reply = post(client, "/colorize", rgba, render_factor=2, output_format="jpg")
    assert image_of(reply, "JPEG").size == (64, 48)


def test_raw_image_body_is_accepted(client, small):
    reply = client.post(
        "/restore", content=encoded(small, "WEBP"), headers={"content-type": "image/webp"}
    )
    assert reply.status_code == 200, reply.text
    assert image_of(reply).size == (64, 48)


def test_exif_orientation_is_applied_before_inference(client, small):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees
    reply = post(client, "/restore", encoded(small, "JPEG", exif=exif), "image/jpeg")
    assert image_of(reply).size == (48, 64)


def test_bmp_and_16_bit_tiff_uploads(client, camera, small):
    reply = post(client, "/upscale", encoded(small, "BMP"), "image/bmp", scale=2, tile_size=0)
    assert image_of(reply).size == (128, 96)
    wide = np.asarray(Image.fromarray(camera).resize((40, 32))).astype(np.uint16) * 257
    reply = post(client, "/restore", encoded(wide, "TIFF"), "image/tiff")
    assert image_of(reply).size == (40, 32)


def test_icc_profiles_real_ones_carried_junk_dropped_with_one_log_line(client, gateway, small):
    """An 8 MB junk profile in a 32 px JPEG must not come back as an 8 MB answer."""
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    reply = post(client, "/restore", encoded(small, "JPEG", icc_profile=srgb), "image/jpeg")
    assert image_of(reply).info.get("icc_profile") == srgb
    junk = np.random.default_rng(2).bytes(8 << 20)
    upload = encoded(small[:32, :32], "JPEG", icc_profile=junk)
    reply = post(client, "/restore", upload, "image/jpeg")
    assert len(reply.content) < 20_000
    assert "icc_profile" not in image_of(reply).info
    assert gateway.log().count("dropped an ICC profile") == 1


@pytest.mark.parametrize(
    ("route", "params"),
    [("/upscale", {"scale": 4, "tile_size": 0}), ("/restore", {"tile_size": 0})],
)
def test_gateway_gives_the_same_pixels_as_the_predictor(client, predictors, small, route, params):
    """PNG in, PNG out: the gateway adds nothing to what the predictor computes."""
    task = route.strip("/")
    direct, _ = infer_grpc(predictors[task].grpc, task, small, **params)
    reply = post(client, route, encoded(small), **params)
    assert np.array_equal(np.asarray(image_of(reply)), direct)


def test_metrics_count_requests_and_predictor_calls(client):
    text = client.get("/metrics").text
    assert 'photo_enhance_request_seconds_count{route="upscale",status="200"}' in text
    assert 'photo_enhance_predictor_seconds_count{outcome="ok",task="colorize"}' in text


@pytest.fixture
def own_restore(weights, tmp_path):
    """A restore predictor of its own, so that stopping it leaves the shared ones alone."""
    folder = weights.model_dir("restore", "denoise")
    predictor = servers.start_predictor("restore", folder, tmp_path)
    predictor.wait(timeout=300)
    yield predictor
    predictor.stop()


def test_stopped_predictor_is_503_while_the_others_work(predictors, own_restore, small, tmp_path):
    addresses = {task: p.grpc for task, p in predictors.items()}
    addresses["restore"] = own_restore.grpc
    gw = start_gateway(addresses, tmp_path, env=ENV)
    try:
        with httpx.Client(base_url=gw.url, timeout=300) as c:
            assert post(c, "/restore", encoded(small)).status_code == 200
            own_restore.stop()
            reply = c.post("/restore", files={"file": ("p", encoded(small), "image/png")})
            assert reply.status_code == 503
            assert "restore" in reply.json()["detail"]
            assert int(reply.headers["retry-after"]) > 0
            assert image_of(post(c, "/upscale", encoded(small), scale=2, tile_size=0))
            assert image_of(post(c, "/colorize", encoded(small), render_factor=2))
            health = c.get("/health").json()
            assert health["status"] == "degraded"
            assert health["models"]["restore"]["ready"] is False
            assert health["models"]["upscale"]["ready"] is True
    finally:
        gw.stop()
