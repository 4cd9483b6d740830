"""The gateway's image decoding and encoding (transformer/images.py), on real photos."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from transformer import images
from transformer.errors import GatewayError
from transformer.tasks import predictor_scale

LIMIT = 100_000_000


def encode(array: np.ndarray, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt, **options)
    return out.getvalue()


def status_of(data: bytes, max_pixels: int = LIMIT, max_side: int = 2048) -> tuple[int, str]:
    with pytest.raises(GatewayError) as info:
        images.decode(data, max_pixels, max_side)
    return info.value.status, info.value.detail


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with almost no pixel data behind it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("fmt", "lossless"),
    [("PNG", True), ("BMP", True), ("TIFF", True), ("WEBP", False), ("JPEG", False)],
)
def test_accepted_formats_decode_to_rgb(astronaut, fmt, lossless):
    photo = astronaut[:96, :128]
    decoded = images.decode(encode(photo, fmt), LIMIT, 2048)
    assert decoded.format == fmt
    assert decoded.rgb.shape == (96, 128, 3) and decoded.rgb.dtype == np.uint8
    assert decoded.alpha is None
    error = np.abs(decoded.rgb.astype(int) - photo.astype(int)).mean()
    assert error == 0 if lossless else error < 6


def test_type_comes_from_the_bytes_not_the_name(astronaut):
    """A PNG is a PNG whatever the client calls it; decode never sees a name at all."""
    decoded = images.decode(encode(astronaut[:32, :32], "PNG"), LIMIT, 2048)
    assert decoded.format == "PNG"


def test_grayscale_becomes_three_equal_channels(camera):
    decoded = images.decode(encode(camera[:64, :80], "PNG"), LIMIT, 2048)
    assert decoded.rgb.shape == (64, 80, 3)
    assert np.array_equal(decoded.rgb[..., 0], camera[:64, :80])
    assert np.array_equal(decoded.rgb[..., 0], decoded.rgb[..., 2])


def test_sixteen_bit_grayscale_is_scaled_not_clipped(camera):
    wide = camera[:48, :48].astype(np.uint16) * 257  # 0..65535
    im = Image.fromarray(wide)  # mode I;16
    out = io.BytesIO()
    im.save(out, "PNG")
    decoded = images.decode(out.getvalue(), LIMIT, 2048)
    assert decoded.rgb.shape == (48, 48, 3)
    assert np.array_equal(decoded.rgb[..., 1], camera[:48, :48])


def test_sixteen_bit_tiff(camera):
    wide = camera[:40, :56].astype(np.uint16) * 257
    out = io.BytesIO()
    Image.fromarray(wide).save(out, "TIFF")
    decoded = images.decode(out.getvalue(), LIMIT, 2048)
    assert decoded.format == "TIFF"
    assert np.array_equal(decoded.rgb[..., 0], camera[:40, :56])


def test_alpha_is_split_off_and_kept(astronaut):
    rgba = np.dstack([astronaut[:64, :64], np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))])
    decoded = images.decode(encode(rgba, "PNG"), LIMIT, 2048)
    assert decoded.rgb.shape == (64, 64, 3)
    assert np.array_equal(decoded.rgb, astronaut[:64, :64])
    assert np.array_equal(decoded.alpha, rgba[..., 3])


def test_palette_with_transparency_keeps_alpha(astronaut):
    im = Image.fromarray(astronaut[:32, :32]).convert("P", palette=Image.Palette.ADAPTIVE)
    im.info["transparency"] = 0
    out = io.BytesIO()
    im.save(out, "PNG", transparency=0)
    decoded = images.decode(out.getvalue(), LIMIT, 2048)
    assert decoded.alpha is not None and decoded.alpha.min() == 0
    assert decoded.rgb.shape == (32, 32, 3)


def test_cmyk_jpeg_becomes_rgb(astronaut):
    out = io.BytesIO()
    Image.fromarray(astronaut[:32, :48]).convert("CMYK").save(out, "JPEG")
    decoded = images.decode(out.getvalue(), LIMIT, 2048)
    assert decoded.rgb.shape == (32, 48, 3)


@pytest.mark.parametrize(("orientation", "shape"), [(1, (40, 64)), (6, (64, 40)), (3, (40, 64))])
def test_exif_orientation_is_applied(astronaut, orientation, shape):
    photo = astronaut[:40, :64]
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = images.decode(encode(photo, "JPEG", exif=exif, quality=95), LIMIT, 2048)
    assert decoded.rgb.shape[:2] == shape
    if orientation == 3:  # rotated 180 degrees: the top-left corner is now bottom-right
        expected = photo[::-1, ::-1].astype(int)
        assert np.abs(decoded.rgb.astype(int) - expected).mean() < 8


def test_longer_side_is_downscaled_to_the_limit(astronaut):
    decoded = images.decode(encode(astronaut[:, :400], "PNG"), LIMIT, 128)
    assert decoded.rgb.shape == (128, 100, 3)
    assert decoded.original_size == (400, 512)


def test_large_jpeg_downscale_uses_the_draft_path(astronaut):
    big = np.asarray(Image.fromarray(astronaut).resize((2048, 2048)))
    decoded = images.decode(encode(big, "JPEG", quality=90), LIMIT, 256)
    assert decoded.rgb.shape == (256, 256, 3)
    reference = np.asarray(Image.fromarray(big).resize((256, 256), Image.Resampling.LANCZOS))
    assert np.abs(decoded.rgb.astype(int) - reference.astype(int)).mean() < 6


def test_empty_upload_is_400():
    status, detail = status_of(b"")
    assert status == 400 and "empty" in detail


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (np.random.default_rng(0).bytes(4096), "not an image"),
        (b"hello, this is a text file named photo.jpg\n" * 20, "not an image"),
        (b"GIF89a" + bytes(64), "GIF"),
        (b"%PDF-1.7\n" + bytes(64), "PDF"),
    ],
)
def test_other_bytes_are_415(data, named):
    status, detail = status_of(data)
    assert status == 415
    assert named in detail and "JPEG, PNG, WebP, BMP or TIFF" in detail


def test_truncated_jpeg_is_400(astronaut):
    data = encode(astronaut, "JPEG")
    status, detail = status_of(data[: len(data) // 3])
    assert status == 400 and "JPEG" in detail


def test_corrupt_png_is_400(astronaut):
    data = bytearray(encode(astronaut[:64, :64], "PNG"))
    data[100:200] = bytes(100)
    status, _ = status_of(bytes(data))
    assert status == 400


def test_pixel_bomb_is_413_from_the_header():
    status, detail = status_of(png_claiming(60000, 60000))
    assert status == 413
    assert "60000x60000" in detail and "MAX_PIXELS" in detail


def test_pixel_limit_is_configurable(astronaut):
    status, _ = status_of(encode(astronaut[:100, :100], "PNG"), max_pixels=9_999)
    assert status == 413
    assert images.decode(encode(astronaut[:100, :100], "PNG"), 10_000, 2048).rgb.shape[0] == 100


@pytest.mark.parametrize(
    ("fmt", "container"), [("png", "PNG"), ("jpg", "JPEG"), ("jpeg", "JPEG"), ("webp", "WEBP")]
)
def test_encode_formats(astronaut, fmt, container):
    body, media_type = images.encode(astronaut[:50, :70], None, fmt)
    im = Image.open(io.BytesIO(body))
    assert im.format == container and im.size == (70, 50) and im.mode == "RGB"
    assert media_type == {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[container]


def test_alpha_is_resized_to_the_output_and_dropped_for_jpeg(astronaut):
    alpha = np.zeros((32, 32), np.uint8)
    alpha[:, 16:] = 255
    rgb = astronaut[:64, :64]  # a 2x result of a 32x32 input
    for fmt in ("png", "webp"):
        im = Image.open(io.BytesIO(images.encode(rgb, alpha, fmt)[0]))
        assert im.mode == "RGBA" and im.size == (64, 64)
        a = np.asarray(im)[..., 3]
        assert a[:, :28].max() < 20 and a[:, 36:].min() > 235
    im = Image.open(io.BytesIO(images.encode(rgb, alpha, "jpg")[0]))
    assert im.mode == "RGB"


def test_png_round_trip_is_lossless(astronaut):
    body, _ = images.encode(astronaut, None, "png")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(body))), astronaut)


def test_webp_size_limit_is_checked_before_inference():
    images.check_output_size("webp", 16383, 100)
    with pytest.raises(GatewayError) as info:
        images.check_output_size("webp", 16384, 100)
    assert info.value.status == 400 and "png" in info.value.detail


def test_fit_into_box():
    assert images.fit_into_box(512, 256, 2400, 2400) == (2400, 1200)
    assert images.fit_into_box(512, 256, 300, 200) == (300, 150)
    assert images.fit_into_box(100, 400, 300, 200) == (50, 200)


def test_predictor_scale_keeps_the_answer_within_one_grpc_message():
    limit = 256 << 20
    assert predictor_scale(512, 512, 8, limit) == 8
    assert predictor_scale(2048, 2048, 4, limit) == 4  # ~201 MB
    assert predictor_scale(2048, 2048, 8, limit) == 4  # 805 MB would not fit: resized after


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_corrupted_uploads_never_escape_as_unexpected_errors(astronaut, fmt):
    """Random byte flips and cuts: each upload decodes or is refused with a client status."""
    rng = np.random.default_rng(7)
    base = encode(astronaut[:48, :64], fmt)
    for i in range(120):
        data = bytearray(base)
        for _ in range(rng.integers(1, 8)):
            data[rng.integers(0, min(len(data), 200 if i % 2 else len(data)))] = rng.integers(256)
        if i % 5 == 0:
            data = data[: rng.integers(8, len(data))]
        try:
            images.decode(bytes(data), LIMIT, 2048)
        except GatewayError as exc:
            assert exc.status in (400, 413, 415)


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("side", [1, 7, 97])
def test_png_answers_are_lossless_with_and_without_alpha(astronaut, side):
    """Odd sizes too: the fast PNG writer must not pad or crop rows."""
    rgb = np.ascontiguousarray(astronaut[:side, 100 : 100 + side])
    alpha = np.ascontiguousarray(astronaut[:side, :side, 1])  # varied values, not just 0/255
    body, media_type = images.encode(rgb, None, "png")
    assert media_type == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(body))), rgb)
    im = Image.open(io.BytesIO(images.encode(rgb, alpha, "png")[0]))
    assert im.mode == "RGBA"
    assert np.array_equal(np.asarray(im), np.dstack([rgb, alpha]))


@pytest.mark.parametrize(("upload", "answer"), [("JPEG", "png"), ("PNG", "jpg"), ("WEBP", "webp")])
def test_an_rgb_icc_profile_is_carried_to_the_answer(astronaut, upload, answer):
    profile = srgb_profile()
    decoded = images.decode(encode(astronaut[:48, :48], upload, icc_profile=profile), LIMIT, 2048)
    assert decoded.icc_profile == profile
    body, _ = images.encode(decoded.rgb, None, answer, decoded.icc_profile)
    im = Image.open(io.BytesIO(body))
    im.load()  # the whole file reads (chunk CRCs included)
    assert im.info.get("icc_profile") == profile


def test_a_huge_junk_icc_profile_is_dropped_with_one_log_line(astronaut, caplog):
    """Untrusted bytes: an 8 MB profile in a 32 px JPEG must not make an 8 MB answer."""
    junk = np.random.default_rng(1).bytes(8 << 20)
    upload = encode(astronaut[:32, :32], "JPEG", icc_profile=junk)
    assert len(upload) > 8 << 20
    with caplog.at_level("WARNING", logger="transformer.images"):
        decoded = images.decode(upload, LIMIT, 2048)
    assert decoded.icc_profile is None
    assert [r.getMessage() for r in caplog.records] == [
        f"dropped an ICC profile of {8 << 20} bytes (over {images.ICC_MAX_BYTES}); "
        "answering without it"
    ]
    body, _ = images.encode(decoded.rgb, None, "png", decoded.icc_profile)
    assert len(body) < 10_000 and "icc_profile" not in Image.open(io.BytesIO(body)).info


@pytest.mark.parametrize(
    "profile",
    [
        b"not a colour profile at all" * 100,
        ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes(),  # parses, not RGB
    ],
)
def test_an_icc_profile_that_is_not_a_usable_rgb_profile_is_dropped(astronaut, profile, caplog):
    with caplog.at_level("WARNING", logger="transformer.images"):
        decoded = images.decode(
            encode(astronaut[:32, :32], "JPEG", icc_profile=profile), LIMIT, 2048
        )
    assert decoded.icc_profile is None
    assert len(caplog.records) == 1 and "dropped an ICC profile" in caplog.records[0].getMessage()
    assert decoded.rgb.shape == (32, 32, 3)
