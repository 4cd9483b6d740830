"""Old-photo looks made from scikit-image's photos, for the colour test of /pipeline?colorize=auto
(transformer/colour.py, bench/colour_auto.py): toned black-and-white prints, faded colour prints,
scans and phone photos of prints, and JPEG round trips."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from skimage import data

COLOUR = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "stereo_motorcycle", "colorwheel",
)  # fmt: skip
GREY = ("camera", "coins", "moon", "page", "text", "clock", "brick", "grass", "gravel")


def photo(name: str) -> np.ndarray:
    """scikit-image's photo as uint8 RGB [H, W, 3] (grey ones as three equal channels)."""
    image = getattr(data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def grey(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma, float32 0..255."""
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _tone(y: np.ndarray, dark, light) -> np.ndarray:
    dark, light = np.array(dark, np.float32), np.array(light, np.float32)
    return np.clip(dark + (light - dark) * (y[..., None] / 255), 0, 255).astype(np.uint8)


def sepia(rgb: np.ndarray) -> np.ndarray:
    """A sepia-toned print: the grey levels mapped from dark brown to cream."""
    return _tone(grey(rgb), (40, 20, 5), (255, 240, 205))


def sepia_matrix(rgb: np.ndarray) -> np.ndarray:
    """The CSS / photo-editor sepia filter (a 3x3 matrix on RGB, clipped), on the colour image."""
    m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
    return np.clip(rgb.astype(np.float32) @ m.T, 0, 255).astype(np.uint8)


def cyanotype_faded(rgb: np.ndarray) -> np.ndarray:
    """A faded cyanotype: Prussian blue to a bluish white, contrast down to 60%."""
    return _tone(64 + 0.6 * grey(rgb), (20, 50, 110), (225, 232, 238))


def faded_colour(rgb: np.ndarray, saturation: float = 0.5) -> np.ndarray:
    """A faded colour print: saturation down, blacks lifted, contrast x0.7, a warm cast (the
    cyan dye fades first)."""
    f = rgb.astype(np.float32)
    y = grey(f)[..., None]
    f = 60 + 0.7 * (y + saturation * (f - y))
    return np.clip(f * np.array([1.06, 0.97, 0.85], np.float32), 0, 255).astype(np.uint8)


def yellowed_scan(rgb: np.ndarray) -> np.ndarray:
    """A black-and-white print gone yellow unevenly (more on the right), scanned with noise."""
    y = grey(rgb)
    ramp = np.linspace(0, 1, y.shape[1], dtype=np.float32)[None, :]
    cast = np.stack([np.ones_like(y), 0.97 - 0.05 * ramp + 0 * y, 0.90 - 0.12 * ramp + 0 * y], -1)
    noise = np.random.default_rng(0).normal(0, 2, (*y.shape, 3))
    return np.clip(y[..., None] * cast + noise, 0, 255).astype(np.uint8)


def phone_print(rgb: np.ndarray) -> np.ndarray:
    """A phone photo of a black-and-white print: warm lamp light on the left, cool daylight on
    the right, sensor noise."""
    y = grey(rgb)
    t = np.linspace(0, 1, y.shape[1], dtype=np.float32)[None, :, None]
    warm, cool = np.array([1.0, 0.93, 0.80], np.float32), np.array([0.92, 0.96, 1.0], np.float32)
    out = y[..., None] * (warm * (1 - t) + cool * t)
    out += np.random.default_rng(1).normal(0, 3, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, quality: int = 60) -> np.ndarray:
    """Saved as JPEG (Pillow's 4:2:0 chroma subsampling) and read back."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


# name -> (make, has colour of its own), for the colour photos and for the grey ones.
COLOUR_VARIANTS = {
    "": (lambda x: x, True),
    "+jpeg": (jpeg, True),
    "faded": (faded_colour, True),
    "faded+jpeg": (lambda x: jpeg(faded_colour(x)), True),
    "faded hard": (lambda x: faded_colour(x, 0.35), True),
    "sepia": (sepia, False),
    "sepia+jpeg": (lambda x: jpeg(sepia(x)), False),
    "sepia matrix": (sepia_matrix, False),
    "sepia matrix+jpeg": (lambda x: jpeg(sepia_matrix(x)), False),
    "cyanotype": (cyanotype_faded, False),
    "cyanotype+jpeg": (lambda x: jpeg(cyanotype_faded(x)), False),
}
GREY_VARIANTS = {
    "": (lambda x: x, False),
    "+jpeg": (jpeg, False),
    "sepia+jpeg": (lambda x: jpeg(sepia(x)), False),
    "cyanotype+jpeg": (lambda x: jpeg(cyanotype_faded(x)), False),
    "yellowed scan+jpeg": (lambda x: jpeg(yellowed_scan(x)), False),
    "phone photo of a print+jpeg": (lambda x: jpeg(phone_print(x), 75), False),
}
