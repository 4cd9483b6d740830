"""Which network a checkpoint holds, and whether it is the one a task serves.

spandrel detects the architecture from the keys; here we name the variant in the terms of the
official releases and refuse a file of the wrong family or variant with a message that says what
the file is.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import torch
from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

from .catalogue import TASK_FAMILY
from .checkpoint import StateDict, WeightsError


def _import_extra_arches() -> ModuleType:
    """spandrel_extra_arches, whose CodeFormer module (0.2) decorates its `swish`
    (x * sigmoid(x)) with torch.jit.script at import: torch 2.14 deprecates TorchScript, so every
    process that imported it printed a FutureWarning. It is imported here with torch.jit.script as
    the identity: swish stays the same PyTorch function, run eagerly (as torch.compile wants it),
    and nothing deprecated is called."""
    script = torch.jit.script
    torch.jit.script = lambda fn, *args, **kwargs: fn
    try:
        return importlib.import_module("spandrel_extra_arches")
    finally:
        torch.jit.script = script


spandrel_extra_arches = _import_extra_arches()
spandrel_extra_arches.install(ignore_duplicates=True)


@dataclass(frozen=True)
class Detected:
    family: str
    variant: str | None  # None: the keys cannot tell (e.g. DDColor modelscope vs artistic)
    shape: str  # what the keys tell, for messages: "x4, 23 blocks"

    def __str__(self) -> str:
        return f"{self.family} ({self.shape})"


def _esrgan(hp: dict, scale: int) -> tuple[str | None, str]:
    blocks = hp["num_blocks"]
    variant = {(4, 23): "x4plus", (4, 6): "x4anime", (2, 23): "x2plus"}.get((scale, blocks))
    return variant, f"x{scale}, {blocks} blocks"


def _nafnet(hp: dict) -> tuple[str | None, str]:
    layout = (tuple(hp["enc_blk_nums"]), hp["middle_blk_num"], tuple(hp["dec_blk_nums"]))
    variant = {
        ((2, 2, 4, 8), 12, (2, 2, 2, 2)): "denoise",
        ((1, 1, 1, 28), 1, (1, 1, 1, 1)): "deblur",
    }.get(layout)
    return variant, f"width {hp['width']}, encoder {list(layout[0])}, middle {layout[1]}"


def _ddcolor(descriptor: ImageModelDescriptor) -> tuple[str | None, str]:
    encoder = next(t for t in descriptor.tags if t.startswith("convnext"))
    # ConvNeXt-L is modelscope or artistic: only the hash tells them apart.
    variant = {"convnext-t": "paper_tiny", "convnext-l": None}.get(encoder, encoder)
    return variant, encoder


def detect(descriptor: ImageModelDescriptor) -> Detected:
    family = descriptor.architecture.id
    hp = getattr(descriptor.model, "hyperparameters", {})
    if family == "ESRGAN":
        variant, shape = _esrgan(hp, descriptor.scale)
    elif family == "NAFNet":
        variant, shape = _nafnet(hp)
    elif family == "DDColor":
        variant, shape = _ddcolor(descriptor)
    elif family == "CodeFormer":
        variant, shape = "v0.1", f"{len(descriptor.model.ft_layers)} transformer layers"
    else:
        variant, shape = None, f"x{descriptor.scale}"
    return Detected(family, variant, shape)


def _large_ddcolor_variants(variant: str) -> bool:
    return variant in ("modelscope", "artistic")


def build_for_task(task: str, variant: str, state: StateDict, filename: str):
    """The spandrel model for `state`, refused unless it is the task's family and variant."""
    try:
        descriptor = ModelLoader().load_from_state_dict(state)
    except UnsupportedModelError:
        raise WeightsError(
            f"{task} expects {TASK_FAMILY[task]}, but {filename} is no architecture spandrel knows"
        ) from None
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0][:300]
        raise WeightsError(f"{filename} could not be built as a network: {first_line}") from exc
    found = detect(descriptor)
    expected = TASK_FAMILY[task]
    if found.family != expected:
        raise WeightsError(f"{task} expects {expected}, {filename} is {found}")
    same_variant = found.variant == variant or (
        found.variant is None and _large_ddcolor_variants(variant)
    )
    if not same_variant:
        raise WeightsError(
            f"{task}/{variant} expects the {variant} layout, {filename} is {found}"
            + (f" ({found.variant})" if found.variant else "")
        )
    return descriptor, found
