"""Any architecture that fits the task (CONTRACT section 7): generated SPAN, Compact and SCUNet
files loaded through spandrel's detection, refused when their purpose does not fit, pinned by
sha256, padded and tiled as their architecture asks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import archs
from archs import WeightsError
from predictors import fitting
from predictors.base import safe_half
from predictors.restore import RestoreModel
from predictors.upscale import UpscaleModel


def copy_model(weights, task, name, tmp_path, pin=True):
    folder = tmp_path / name
    shutil.copytree(weights.other_model_dir(task, name), folder)
    if not pin:
        for sidecar in folder.glob("*.sha256"):
            sidecar.unlink()
    return folder


@pytest.mark.parametrize(
    ("task", "name", "family", "scale"),
    [
        ("upscale", "compact-x4", "Compact", 4),
        ("upscale", "span-x2", "SPAN", 2),
        ("restore", "compact-x1", "Compact", 1),
        ("restore", "scunet", "SCUNet", 1),
    ],
)
def test_a_pinned_model_of_a_fitting_architecture_loads(weights, task, name, family, scale):
    folder = weights.other_model_dir(task, name)
    loaded = archs.load_task_model(task, name, folder, allow_unverified=False)
    assert loaded.detected.family == family
    assert loaded.descriptor.scale == scale


@pytest.mark.parametrize(
    ("task", "source", "says"),
    [
        ("upscale", ("restore", "compact-x1"), "upscale serves a super-resolution model"),
        ("restore", ("upscale", "compact-x4"), "restore serves an image restoration model"),
        ("colorize", ("upscale", "span-x2"), "colorize serves a DDColor model"),
        ("face-restore", ("restore", "scunet"), "needs detection_Resnet50_Final.pth"),
    ],
)
def test_a_model_of_another_purpose_is_refused(weights, tmp_path, task, source, says):
    folder = copy_model(weights, *source, tmp_path)
    with pytest.raises(WeightsError, match=says):
        archs.load_task_model(task, "mine", folder, allow_unverified=True)


def test_an_unpinned_file_needs_allow_unverified(weights, tmp_path):
    folder = copy_model(weights, "upscale", "compact-x4", tmp_path, pin=False)
    with pytest.raises(WeightsError, match=r"no sha256 is pinned.*ALLOW_UNVERIFIED_WEIGHTS"):
        archs.load_task_model("upscale", "compact-x4", folder)
    assert archs.load_task_model("upscale", "compact-x4", folder, allow_unverified=True)
    pin = weights.other_model_dir("upscale", "compact-x4") / "compact_x4.pth.sha256"
    digest = pin.read_text().split()[0]
    assert archs.load_task_model("upscale", "compact-x4", folder, sha256=digest)


def test_a_pin_that_does_not_match_is_refused_even_when_unverified_is_allowed(weights, tmp_path):
    folder = copy_model(weights, "upscale", "span-x2", tmp_path)
    with pytest.raises(WeightsError, match="is pinned for it"):
        archs.load_task_model("upscale", "span-x2", folder, True, sha256="0" * 64)


def test_a_folder_without_exactly_one_model_file_says_so(weights, tmp_path):
    with pytest.raises(WeightsError, match="holds no model file"):
        archs.load_task_model("upscale", "empty", tmp_path)
    folder = copy_model(weights, "upscale", "compact-x4", tmp_path)
    shutil.copy(folder / "compact_x4.pth", folder / "other.pth")
    with pytest.raises(WeightsError, match="holds 2 model files"):
        archs.load_task_model("upscale", "compact-x4", folder, True)


def test_safetensors_are_read_without_pickle(weights, monkeypatch):
    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load called for a .safetensors file")

    monkeypatch.setattr(torch, "load", no_pickle)
    folder = weights.other_model_dir("upscale", "span-x2")
    assert archs.load_task_model("upscale", "span-x2", folder).detected.family == "SPAN"


def loaded_model(cls, weights, task, name):
    model = cls(weights.other_model_dir(task, name), name, device=torch.device("cpu"))
    assert model.load(), model.load_error
    return model


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (9, 12, 3)).astype(np.float32)
    import cv2

    return cv2.resize(base, (75, 53), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def test_compact_x4_upscales_to_any_scale_and_tiles_equal_the_whole_image(weights, photo):
    model = loaded_model(UpscaleModel, weights, "upscale", "compact-x4")
    with torch.inference_mode():
        whole, _ = model.enhance(photo, {"scale": 4, "tile_size": 0})
        tiled, _ = model.enhance(photo, {"scale": 4, "tile_size": 32})
        three, _ = model.enhance(photo, {"scale": 3, "tile_size": 0})
    assert whole.shape == (53 * 4, 75 * 4, 3)
    assert three.shape == (53 * 3, 75 * 3, 3)
    # Compact's receptive field is a few pixels: overlapped tiles give the same answer.
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1
    assert model.describe() == {"architecture": "Compact", "native_scale": 4}


def test_span_x2_answers_its_native_scale(weights, photo):
    model = loaded_model(UpscaleModel, weights, "upscale", "span-x2")
    with torch.inference_mode():
        out, _ = model.enhance(photo, {"scale": 2, "tile_size": 0})
    assert out.shape == (106, 150, 3)


def test_scunet_is_padded_to_its_minimum_and_not_tiled(weights):
    model = loaded_model(RestoreModel, weights, "restore", "scunet")
    descriptor = model.loaded.descriptor
    assert descriptor.size_requirements.minimum > 20
    small = np.full((20, 30, 3), 120, np.uint8)
    with torch.inference_mode():
        out, _ = model.enhance(small, {"tile_size": 0})
    assert out.shape == small.shape
    # SCUNet discourages tiling: the whole image within the memory bound, tiles beyond it.
    assert fitting.choose_tile(descriptor, 128, 600, 800) == 0
    side = int(fitting.WHOLE_IMAGE_MAX_PIXELS**0.5) + 64
    assert fitting.choose_tile(descriptor, 128, side, side) == 128


def test_sizes_are_padded_to_what_the_architecture_asks(weights):
    esrgan_x2 = archs.load_task_model(
        "upscale", "x2plus", weights.model_dir("upscale", "x2plus"), allow_unverified=True
    ).descriptor
    multiple = esrgan_x2.size_requirements.multiple_of
    assert multiple > 1
    height, width = fitting.padded_size(esrgan_x2, 33, 50)
    assert height % multiple == 0 and width % multiple == 0 and height >= 33 and width >= 50


def test_auto_precision_takes_a_half_precision_only_where_spandrel_marks_it_safe(weights):
    nafnet = archs.load_task_model(
        "restore", "denoise", weights.model_dir("restore", "denoise"), allow_unverified=True
    ).descriptor
    assert not nafnet.supports_half and nafnet.supports_bfloat16
    assert safe_half(nafnet, torch.float16) == torch.bfloat16
    compact = loaded_model(UpscaleModel, weights, "upscale", "compact-x4").loaded.descriptor
    assert safe_half(compact, torch.float16) == torch.float16
