"""archs/: reading, verification, family and variant checks, TLC, DDColor's input size."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from spandrel import ModelLoader

import archs
from archs.catalogue import model_file
from archs.checkpoint import read_state_dict, sha256_of
from archs.nafnet_tlc import LocalMeanPool, apply_tlc

GENERATED = [
    ("upscale", "x4plus", "ESRGAN (x4, 23 blocks)"),
    ("upscale", "x4anime", "ESRGAN (x4, 6 blocks)"),
    ("upscale", "x2plus", "ESRGAN (x2, 23 blocks)"),
    ("restore", "denoise", "NAFNet (width 8, encoder [2, 2, 4, 8], middle 12)"),
    ("restore", "deblur", "NAFNet (width 8, encoder [1, 1, 1, 28], middle 1)"),
    ("colorize", "paper_tiny", "DDColor (convnext-t)"),
]


@pytest.mark.parametrize(("task", "variant", "described"), GENERATED)
def test_each_variant_is_detected_from_its_keys(weights, task, variant, described):
    loaded = archs.load_task_model(task, variant, weights.model_dir(task, variant), True)
    assert str(loaded.detected) == described
    assert loaded.detected.variant == variant


def test_params_ema_nesting_is_unwrapped(weights):
    path = weights.model_dir("upscale", "x4plus") / "RealESRGAN_x4plus.pth"
    assert "params_ema" in torch.load(path, weights_only=True)
    assert "conv_first.weight" in read_state_dict(path)


def test_wrong_family_is_refused_naming_what_the_file_is(weights, tmp_path):
    shutil.copy(
        weights.model_dir("upscale", "x4plus") / "RealESRGAN_x4plus.pth",
        tmp_path / "NAFNet-SIDD-width64.pth",
    )
    with pytest.raises(archs.WeightsError, match=r"restore expects NAFNet, .* is ESRGAN \(x4"):
        archs.load_task_model("restore", "denoise", tmp_path, allow_unverified=True)


def test_wrong_variant_of_the_right_family_is_refused(weights, tmp_path):
    shutil.copy(
        weights.model_dir("upscale", "x4anime") / "RealESRGAN_x4plus_anime_6B.pth",
        tmp_path / "RealESRGAN_x4plus.pth",
    )
    with pytest.raises(archs.WeightsError, match=r"x4plus.*6 blocks\) \(x4anime\)"):
        archs.load_task_model("upscale", "x4plus", tmp_path, allow_unverified=True)


def test_official_name_with_other_content_needs_the_operator_to_allow_it(weights):
    folder = weights.model_dir("upscale", "x4plus")
    with pytest.raises(archs.WeightsError, match=r"not the official release.*ALLOW_UNVERIFIED"):
        archs.load_task_model("upscale", "x4plus", folder, allow_unverified=False)
    assert archs.load_task_model("upscale", "x4plus", folder, allow_unverified=True)


def test_recorded_hash_of_an_unpublished_file_is_enforced(weights, tmp_path):
    source = weights.model_dir("colorize", "paper_tiny") / "ddcolor_paper_tiny.pth"
    shutil.copy(source, tmp_path / source.name)
    (tmp_path / f"{source.name}.sha256").write_text(f"{sha256_of(source)}  {source.name}\n")
    assert archs.load_task_model("colorize", "paper_tiny", tmp_path, allow_unverified=False)
    (tmp_path / f"{source.name}.sha256").write_text("0" * 64 + "\n")
    with pytest.raises(archs.WeightsError, match="sha256"):
        archs.load_task_model("colorize", "paper_tiny", tmp_path, allow_unverified=False)


def test_truncated_file_is_refused(weights, tmp_path):
    data = (weights.model_dir("upscale", "x4plus") / "RealESRGAN_x4plus.pth").read_bytes()
    (tmp_path / "RealESRGAN_x4plus.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(archs.WeightsError, match="truncated"):
        archs.load_task_model("upscale", "x4plus", tmp_path, allow_unverified=True)


class Payload:
    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_a_checkpoint_holding_code_is_never_unpickled(tmp_path):
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": {"x": Payload()}}, path)
    with pytest.raises(archs.WeightsError):
        read_state_dict(path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(archs.WeightsError, match=r"detection_Resnet50_Final\.pth"):
        archs.load_task_model("face-restore", "v0.1", tmp_path)


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(ValueError, match="x4plus, x4anime, x2plus"):
        model_file("upscale", "x8")


@pytest.mark.parametrize(("factor", "side"), [(32, 512), (8, 128), (9, 160), (1, 32)])
def test_ddcolor_input_side(factor, side):
    assert archs.ddcolor_input_side(factor) == side


def _nafnet(weights, variant):
    path = weights.model_dir("restore", variant) / model_file("restore", variant).filename
    return ModelLoader().load_from_file(path).model.eval()


def test_tlc_equals_the_plain_model_when_the_image_fits_the_window(weights):
    plain, local = _nafnet(weights, "deblur"), apply_tlc(_nafnet(weights, "deblur"))
    image = torch.rand(1, 3, 96, 128)
    with torch.inference_mode():
        assert torch.allclose(plain(image), local(image), atol=1e-5)


def test_tlc_pools_locally_on_images_larger_than_the_window(weights):
    plain, local = _nafnet(weights, "deblur"), apply_tlc(_nafnet(weights, "deblur"))
    image = torch.rand(1, 3, 448, 480)
    with torch.inference_mode():
        assert (plain(image) - local(image)).abs().max() > 1e-4


def test_local_mean_pool_is_the_mean_of_the_window():
    x = torch.rand(1, 2, 10, 12)
    out = LocalMeanPool(4)(x)
    assert out.shape == x.shape
    # an interior pixel whose window is complete: window rows 3..6, cols 4..7 (centred)
    assert torch.allclose(out[0, :, 4, 5], x[0, :, 3:7, 4:8].mean(dim=(-1, -2)), atol=1e-6)
    assert torch.allclose(LocalMeanPool(16)(x), x.mean(dim=(-1, -2), keepdim=True))


def test_the_gateway_names_tasks_and_variant_variables_as_the_catalogue_does():
    # The transformer image ships without archs/ (no torch), so it keeps its own copy.
    from transformer import config

    assert config.TASKS == archs.TASKS
    assert config.VARIANT_ENV == archs.VARIANT_ENV
    assert config.DEFAULT_VARIANT == archs.DEFAULT_VARIANT


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("verified", [True, False])
def test_a_flipped_byte_is_refused_verified_or_not(weights, tmp_path, verified):
    # paper_tiny has no published hash: verified means its recorded hash (trust on first use).
    path = tmp_path / "ddcolor_paper_tiny.pth"
    shutil.copy(weights.model_dir("colorize", "paper_tiny") / path.name, path)
    _flip_a_byte(path)
    if verified:  # recorded from the damaged file itself: only the CRCs can tell
        (tmp_path / f"{path.name}.sha256").write_text(sha256_of(path))
    with pytest.raises(archs.WeightsError, match=r"is corrupt: .* fails its CRC check"):
        archs.load_task_model("colorize", "paper_tiny", tmp_path, allow_unverified=not verified)


def test_every_unverified_file_served_is_logged_with_its_sha256(weights, caplog):
    folder = weights.model_dir("upscale", "x4anime")
    with caplog.at_level(logging.WARNING, logger="archs.checkpoint"):
        archs.load_task_model("upscale", "x4anime", folder, allow_unverified=True)
    digest = sha256_of(folder / "RealESRGAN_x4plus_anime_6B.pth")
    assert f"served anyway: unverified weights are allowed; sha256 {digest}" in caplog.text
