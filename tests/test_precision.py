"""Half precision: bf16 against fp32 per family on the CPU, and the guard that recomputes a
half-precision failure (NaN/inf, or black for a photo that is not) in fp32."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch

from predictors.base import choose_dtype
from predictors.colorize import ColorizeModel
from predictors.restore import RestoreModel
from predictors.upscale import UpscaleModel

CASES = {
    "upscale": (UpscaleModel, "x4anime", {"scale": 4, "tile_size": 0}),
    "restore": (RestoreModel, "denoise", {"tile_size": 0}),
    "colorize": (ColorizeModel, "paper_tiny", {"render_factor": 8}),
}


def _loaded(weights, task: str, precision: str):
    cls, variant, _ = CASES[task]
    model = cls(
        weights.model_dir(task, variant),
        variant,
        allow_unverified=True,
        device=torch.device("cpu"),
        precision=precision,
    )
    assert model.load(), model.load_error
    return model


def _answer(model, photo: np.ndarray) -> np.ndarray:
    out, _ = model._enhance_batch(photo[None], CASES[model.task][2])
    return out[0]


@pytest.fixture(scope="module")
def photo(astronaut) -> np.ndarray:
    return cv2.resize(astronaut[60:310, 130:380], (32, 32), interpolation=cv2.INTER_AREA)


def test_auto_is_half_on_cuda_only():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert choose_dtype("auto", cuda, UpscaleModel.half_dtype) == torch.float16
    assert choose_dtype("auto", cuda, RestoreModel.half_dtype) == torch.bfloat16
    assert choose_dtype("auto", cpu, UpscaleModel.half_dtype) == torch.float32
    assert choose_dtype("bf16", cpu, UpscaleModel.half_dtype) == torch.bfloat16
    with pytest.raises(ValueError, match="auto, fp32, fp16, bf16"):
        choose_dtype("fp8", cpu, torch.float16)


def test_bf16_answers_are_close_to_fp32_for_each_family(weights, photo):
    rows = {}
    for task in CASES:
        half, full = (_answer(_loaded(weights, task, p), photo) for p in ("bf16", "fp32"))
        diff = np.abs(half.astype(int) - full.astype(int))
        rows[task] = (diff.max(), np.percentile(diff, 99), diff.mean())
    print("\nbf16 vs fp32 on CPU (generated weights), grey levels: max, 99th pct, mean")
    for task, (worst, p99, mean) in rows.items():
        print(f"  {task:9} {worst:4d} {p99:6.1f} {mean:7.3f}")
    for task in ("upscale", "restore"):
        assert rows[task][2] < 2 and rows[task][1] <= 8, (task, rows[task])
    # DDColor's random look-alike predicts extreme colours: its table row is printed, not judged.


@pytest.fixture(scope="module")
def upscale_fp32_answer(weights, photo) -> np.ndarray:
    return _answer(_loaded(weights, "upscale", "fp32"), photo)


def _in_half_precision_only(module: torch.nn.Module, fault) -> None:
    """Inject `fault` into `module`'s output when it runs in half precision (fp32 stays sound)."""

    def hook(_module, _inputs, output):
        if output.dtype != torch.float32:
            fault(output)

    module.register_forward_hook(hook)


def test_a_nan_in_half_precision_is_recomputed_in_fp32(weights, photo, upscale_fp32_answer, caplog):
    model = _loaded(weights, "upscale", "bf16")
    _in_half_precision_only(model.net.model[0], lambda out: out.view(-1)[0].fill_(float("nan")))
    with caplog.at_level(logging.WARNING, logger="predictors.base"):
        answer = _answer(model, photo)
    assert np.array_equal(answer, upscale_fp32_answer)
    assert [r.getMessage() for r in caplog.records if r.name == "predictors.base"] == [
        "upscale in torch.bfloat16 gave NaN or inf: recomputing in fp32"
    ]


def test_a_black_answer_to_a_photo_is_recomputed_in_fp32(
    weights, photo, upscale_fp32_answer, caplog
):
    model = _loaded(weights, "upscale", "bf16")
    _in_half_precision_only(model.net.model[-1], lambda out: out.fill_(-1))  # clamps to black
    with caplog.at_level(logging.WARNING, logger="predictors.base"):
        answer = _answer(model, photo)
    assert np.array_equal(answer, upscale_fp32_answer)
    assert "gave an all-black answer: recomputing in fp32" in caplog.text
    # a black photo may well come back black: no recomputation
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="predictors.base"):
        _answer(model, np.zeros_like(photo))
    assert not [r for r in caplog.records if r.name == "predictors.base"]
