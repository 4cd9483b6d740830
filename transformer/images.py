"""Decode uploads into RGB arrays and encode answers (CONTRACT section 1, "Input handling").

- The type is decided from the bytes (magic numbers), never from a file name or Content-Type.
- The pixel count is checked from the header, before any pixel is decoded (decompression bombs).
- EXIF orientation is applied; grayscale, palette, CMYK and 16-bit images become 8-bit RGB.
- Alpha is split off, resized with the image, and put back on PNG/WebP output.
- Images whose longer side exceeds the limit are downscaled before inference.
- An RGB ICC profile is carried to the answer only when it is small and parses (untrusted bytes).
- Answers: PNG through fpng (about 10x faster than zlib level 1, files within 10% of it),
  JPEG and WebP through Pillow (libjpeg-turbo, libwebp at its fastest method); see bench/codecs.py.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from dataclasses import dataclass

import fpng
import numpy as np
from PIL import Image, ImageCms, ImageOps

# Register the plugins of the accepted formats (Image.open with `formats` does not load them all).
from PIL import (  # noqa: F401  isort: skip
    BmpImagePlugin,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from .errors import bad_request, too_large, unsupported_type

ACCEPTED = "JPEG, PNG, WebP, BMP or TIFF"
# What Pillow may open (its JPEG opener also yields MPO: JPEGs with a multi-picture index).
PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")

# Formats people upload that we do not take: named so the 415 says what was recognised.
_OTHER_MAGIC = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "Photoshop PSD"),
)

OUTPUT_FORMATS = {
    "png": ("PNG", "image/png"),
    "jpg": ("JPEG", "image/jpeg"),
    "jpeg": ("JPEG", "image/jpeg"),
    "webp": ("WEBP", "image/webp"),
}
# The largest side each container can hold.
MAX_OUTPUT_SIDE = {"PNG": 2**31 - 1, "JPEG": 65_500, "WEBP": 16_383}
JPEG_QUALITY = 95
WEBP_QUALITY = 95
# libwebp's fastest method: 3x faster than Pillow's default (4) at 2048 px, about the same file
# size, 0.5 dB lower PSNR at quality 95 (bench/codecs.py).
WEBP_METHOD = 0
# Real RGB profiles are a few KB (sRGB 3 KB, Display P3 0.5 KB); big LUT profiles stay under this.
ICC_MAX_BYTES = 1 << 20

logger = logging.getLogger("transformer.images")

# decode() checks the pixel count itself, from the header and against MAX_PIXELS, with a message
# that names the size; Pillow's own global check (89 MP) would refuse first with another limit.
Image.MAX_IMAGE_PIXELS = None

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass
class Decoded:
    rgb: np.ndarray  # uint8 [H, W, 3]
    alpha: np.ndarray | None  # uint8 [H, W], same size as rgb
    format: str  # the detected container: JPEG, PNG, WEBP, BMP, TIFF
    original_size: tuple[int, int]  # (width, height) after EXIF orientation, before downscaling
    icc_profile: bytes | None  # the RGB colour profile to carry to the output


def sniff(data: bytes) -> str | None:
    """The accepted container the bytes start with, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    return None


def _reject_type(data: bytes) -> None:
    for magic, name in _OTHER_MAGIC:
        if data.startswith(magic):
            raise unsupported_type(f"{name} images are not accepted; send {ACCEPTED}")
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        raise unsupported_type(f"HEIC/AVIF images are not accepted; send {ACCEPTED}")
    raise unsupported_type(f"the upload is not an image of an accepted type ({ACCEPTED})")


def _to_8bit_rgb(im: Image.Image) -> tuple[Image.Image, bool]:
    """An RGB or RGBA image with 8 bits per channel; True when it carries alpha."""
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if im.mode in _SIXTEEN_BIT_MODES:
        # 16-bit grayscale: scale 0..65535 to 0..255 (Pillow's convert would clip instead).
        wide = np.asarray(im).astype(np.float64)
        narrow = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(narrow, "L").convert("RGB"), False
    if im.mode == "F":
        narrow = np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8)
        return Image.fromarray(narrow, "L").convert("RGB"), False
    target = "RGBA" if has_alpha else "RGB"
    if im.mode == target:
        return im, has_alpha
    try:
        return im.convert(target), has_alpha
    except (ValueError, OSError) as exc:
        raise bad_request(f"unsupported colour mode {im.mode}: {exc}") from None


def _trusted_icc(profile: bytes | None) -> bytes | None:
    """The profile when it is small and parses as an RGB profile; otherwise None, logged."""
    if not profile:
        return None
    if len(profile) > ICC_MAX_BYTES:
        logger.warning(
            "dropped an ICC profile of %d bytes (over %d); answering without it",
            len(profile), ICC_MAX_BYTES,
        )  # fmt: skip
        return None
    try:
        space = ImageCms.ImageCmsProfile(io.BytesIO(profile)).profile.xcolor_space
    except (OSError, ValueError, ImageCms.PyCMSError) as exc:
        logger.warning("dropped an ICC profile that does not parse (%s); answering without it", exc)
        return None
    if space.strip() != "RGB":
        logger.warning("dropped an ICC profile for %s, not RGB; answering without it", space)
        return None
    return profile


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is at most max_side."""
    longer = max(width, height)
    if longer <= max_side:
        return width, height
    scale = max_side / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode(data: bytes, max_pixels: int, max_side: int) -> Decoded:
    """Bytes of an uploaded image -> 8-bit RGB (and alpha), oriented, at most max_side."""
    if not data:
        raise bad_request("the uploaded file is empty")
    kind = sniff(data)
    if kind is None:
        _reject_type(data)
    try:
        im = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
    except (OSError, SyntaxError, ValueError) as exc:
        raise bad_request(f"the {kind} image could not be read: {exc}") from None
    width, height = im.size
    if width < 1 or height < 1:
        raise bad_request(f"the {kind} image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise too_large(
            f"the image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (MAX_PIXELS); send a smaller image"
        )
    try:
        if im.format in ("JPEG", "MPO"):
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still covers the target.
            im.draft("RGB", fit_size(width, height, max_side))
        icc = _trusted_icc(im.info.get("icc_profile")) if im.mode in ("RGB", "RGBA") else None
        im = ImageOps.exif_transpose(im)
        im.load()
        im, has_alpha = _to_8bit_rgb(im)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise bad_request(f"the {kind} image could not be decoded: {exc}") from None
    oriented = im.size
    target = fit_size(*oriented, max_side)
    if target != im.size:
        im = im.resize(target, Image.Resampling.LANCZOS)
    pixels = np.asarray(im)
    if has_alpha:
        return Decoded(
            np.ascontiguousarray(pixels[..., :3]),
            np.ascontiguousarray(pixels[..., 3]),
            kind,
            oriented,
            icc,
        )
    return Decoded(np.ascontiguousarray(pixels), None, kind, oriented, icc)


def resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 [H, W, 3] resized to [height, width, 3] (Lanczos)."""
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    im = Image.fromarray(rgb, "RGB").resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(im)


def fit_into_box(width: int, height: int, box_w: int, box_h: int) -> tuple[int, int]:
    """The largest (w, h) with the same aspect ratio that fits in box_w x box_h."""
    scale = min(box_w / width, box_h / height)
    return (
        min(box_w, max(1, round(width * scale))),
        min(box_h, max(1, round(height * scale))),
    )


def check_output_size(output_format: str, width: int, height: int) -> None:
    """Refuse, before any inference, an answer the chosen container cannot hold."""
    container, _ = OUTPUT_FORMATS[output_format]
    limit = MAX_OUTPUT_SIDE[container]
    if max(width, height) > limit:
        raise bad_request(
            f"the result would be {width}x{height}, larger than {output_format} allows "
            f"({limit} px per side); choose png or a smaller scale"
        )


def encode(
    rgb: np.ndarray,
    alpha: np.ndarray | None,
    output_format: str,
    icc_profile: bytes | None = None,
) -> tuple[bytes, str]:
    """RGB (plus alpha for PNG/WebP, resized to match) -> (encoded bytes, media type)."""
    try:
        container, media_type = OUTPUT_FORMATS[output_format]
    except KeyError:
        raise bad_request(f"unknown output_format {output_format!r}") from None
    if alpha is not None and container in ("PNG", "WEBP"):
        if alpha.shape != rgb.shape[:2]:
            mask = Image.fromarray(alpha, "L").resize(
                (rgb.shape[1], rgb.shape[0]), Image.Resampling.LANCZOS
            )
            alpha = np.asarray(mask)
        pixels = np.dstack([rgb, alpha])
    else:
        pixels = np.ascontiguousarray(rgb)
    if container == "PNG":
        return _png(pixels, icc_profile), media_type
    options: dict[str, object] = {"quality": JPEG_QUALITY}
    if container == "WEBP":
        options = {"quality": WEBP_QUALITY, "method": WEBP_METHOD}
    if icc_profile:
        options["icc_profile"] = icc_profile
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=container, **options)
    return out.getvalue(), media_type


def _png(pixels: np.ndarray, icc_profile: bytes | None) -> bytes:
    """fpng's PNG, with the ICC profile as an iCCP chunk after IHDR (fpng writes none)."""
    data = fpng.from_ndarray(pixels)
    if not icc_profile:
        return data
    body = b"ICC profile\x00\x00" + zlib.compress(icc_profile)
    kind = b"iCCP"
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length and type, IHDR data, CRC
    return data[:ihdr_end] + chunk + data[ihdr_end:]
