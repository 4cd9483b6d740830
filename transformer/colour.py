"""Does a photo have colour of its own? `/pipeline?colorize=auto` colorizes only when it does not.

"No colour of its own" means grayscale or a single tint: sepia, a cyanotype, a yellowed scan of a
black-and-white print. In all of these the colour is a function of the lightness (the toning
maps each grey level to one colour), plus at most a slow cast across the picture (uneven
yellowing, a phone photo of a print under mixed light). A colour photo, even a faded one, has
different colours at the same lightness: skin and sky, a red shirt and green grass.

The test, on a 64 px thumbnail (area average, so JPEG's and a scanner's pixel noise averages
out while the colour of an object stays):

1. convert to CIELAB (sRGB, D65);
2. fit a* and b* by least squares as a piecewise-linear function of L* (knots every 5 L*) plus a
   linear gradient in x and y: the best "one tint and a cast" explanation of the colours;
3. the spread is the 95th percentile of what the fit leaves (the colour difference in a*b*,
   Delta E*ab units): the colour that no single tint explains, in at least 5% of the picture.

The photo has colour of its own when the spread is at least THRESHOLD (2.9): midway between the
highest one-tint photo measured (2.8) and the lowest half-faded colour photo (3.0).

Measured with bench/colour_auto.py on scikit-image's photos and variants of them made by
tests/photo_variants.py (spread, Delta E*ab; "+jpeg" = saved as JPEG quality 60, 4:2:0 chroma):

| photos | has colour | spread |
|---|---|---|
| astronaut, chelsea, coffee, rocket, retina, immunohisto., motorbike, colorwheel | yes | 8.2-65.5 |
| hubble_deep_field (black sky, a few coloured galaxies) | yes | 4.9 |
| the colour photos faded (saturation x0.5, contrast x0.7, warm cast), +jpeg | yes | 3.0-26.5 |
| hubble_deep_field faded so | yes | 1.5 |
| the colour photos faded harder (saturation x0.35) | yes | 1.1-18.9 |
| camera, coins, moon, page, text, clock, brick, grass, gravel, +jpeg | no: grey | 0.0 |
| every photo sepia-toned from its grey levels, +jpeg | no: one tint | 0.5-1.9 |
| every photo as a faded cyanotype, +jpeg | no: one tint | 0.5-2.4 |
| the grey photos as a yellowed scan (cast gradient, noise), +jpeg | no: one tint | 1.5-2.6 |
| the grey photos as a phone photo of a print (warm to cool light), +jpeg | no: one tint | 1.2-2.8 |
| the colour photos through the CSS sepia() matrix (clips), +jpeg | no: one tint | 0.5-4.7 |

Every colour photo as is, every grey one and every one toned from its grey levels is on its side
of the threshold. Between them:
- a colour photo through the sepia matrix: where it clips, bright saturated colours stay apart
  (astronaut 4.7, immunohistochemistry 3.5, coffee 3.4, colorwheel 3.0): they count as colour and
  colorize is skipped;
- colour faded to a third of its saturation (rocket 2.8, retina 2.1) and the mostly black
  hubble_deep_field faded to half (1.5) count as no colour and are colorized.
Photos with colour keep it unless little of it is left. A grey photo with one small coloured
part (under 5% of it) counts as grey. `colorize=true` or `false` decides for any photo.
The measurement takes about 10 ms at 2048 px.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

THUMB_SIDE = 64
THRESHOLD = 2.9  # Delta E*ab, 95th percentile of the colour no single tint explains
PERCENTILE = 95
_KNOT_STEP = 5.0  # L* between knots of the tint curve
_KNOTS = int(100 / _KNOT_STEP) + 1

# sRGB (D65) linear RGB -> XYZ, divided by the D65 white so that white is (1, 1, 1).
_RGB_TO_XYZ = (
    np.array(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ],
        np.float64,
    )
    / np.array([0.95047, 1.0, 1.08883])[:, None]
)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB [..., 3] -> CIELAB [..., 3] (L* 0..100, a*, b*), D65."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


def thumbnail(rgb: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """Area-averaged copy whose longer side is at most `side`."""
    height, width = rgb.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))


def colour_spread(rgb: np.ndarray) -> float:
    """Delta E*ab that no single tint (a colour per lightness, plus a linear cast) explains,
    in at least 100 - PERCENTILE % of the photo. 0 for grayscale."""
    small = np.ascontiguousarray(thumbnail(rgb))
    height, width = small.shape[:2]
    if np.array_equal(small[..., 0], small[..., 1]) and np.array_equal(
        small[..., 1], small[..., 2]
    ):
        return 0.0
    lab = srgb_to_lab(small).reshape(-1, 3)
    lightness, chroma = lab[:, 0], lab[:, 1:]
    # Hat functions on L*: a continuous piecewise-linear tint curve.
    t = np.clip(lightness, 0, 100) / _KNOT_STEP
    knot = np.minimum(t.astype(int), _KNOTS - 2)
    frac = t - knot
    rows = np.arange(lightness.size)
    basis = np.zeros((lightness.size, _KNOTS + 2))
    basis[rows, knot] = 1 - frac
    basis[rows, knot + 1] = frac
    ys, xs = np.mgrid[0:height, 0:width]
    basis[:, _KNOTS] = xs.ravel() / max(width - 1, 1) * 2 - 1
    basis[:, _KNOTS + 1] = ys.ravel() / max(height - 1, 1) * 2 - 1
    coef, *_ = np.linalg.lstsq(basis, chroma, rcond=None)
    left = chroma - basis @ coef
    return float(np.percentile(np.hypot(left[:, 0], left[:, 1]), PERCENTILE))


def has_own_colour(rgb: np.ndarray) -> bool:
    return colour_spread(rgb) >= THRESHOLD
