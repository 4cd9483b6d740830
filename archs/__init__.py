"""Our layer over spandrel: safe reading, verification, family/variant checks, and what spandrel
cannot know about the official pipelines (DDColor's input size, NAFNet deblur's TLC)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from spandrel import ImageModelDescriptor

from . import anymodel
from .anymodel import build_any, model_file_in, verify_pinned
from .catalogue import (
    DEFAULT_VARIANT,
    TASK_FAMILY,
    TASKS,
    VARIANT_ENV,
    OfficialFile,
    files_for,
    model_file,
    variants,
)
from .checkpoint import WeightsError, check_archive, read_state_dict, verify_official
from .families import Detected, build_for_task
from .nafnet_tlc import apply_tlc

__all__ = [
    "DDCOLOR_INPUT_STEP",
    "DEFAULT_VARIANT",
    "TASKS",
    "TASK_FAMILY",
    "VARIANT_ENV",
    "LoadedModel",
    "OfficialFile",
    "WeightsError",
    "ddcolor_input_side",
    "files_for",
    "load_task_model",
    "model_file",
    "variant_in_folder",
    "variants",
]

log = logging.getLogger(__name__)

# DDColor's input side is 16 x render_factor (render_factor 32 = 512 px, the official setting).
DDCOLOR_INPUT_STEP = 16
# Its ConvNeXt encoder downsamples 32x and the decoder's skips must line up: round up to that.
DDCOLOR_SIDE_MULTIPLE = 32


def ddcolor_input_side(render_factor: int) -> int:
    side = DDCOLOR_INPUT_STEP * render_factor
    return -(-side // DDCOLOR_SIDE_MULTIPLE) * DDCOLOR_SIDE_MULTIPLE


@dataclass
class LoadedModel:
    descriptor: ImageModelDescriptor
    detected: Detected
    path: Path


def required_files(task: str, variant: str, model_dir: Path) -> list[Path]:
    paths = [model_dir / f.filename for f in files_for(task, variant)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise WeightsError(
            f"{task}/{variant} needs {', '.join(missing)} in {model_dir} "
            f"(fetch them with: hack/fetch-weights {task} --variant {variant})"
        )
    return paths


def variant_in_folder(task: str, model_dir: Path) -> str | None:
    """The variant whose official model file is the only one of `task`'s in `model_dir`."""
    folder = Path(model_dir)
    found = [v for v in variants(task) if (folder / model_file(task, v).filename).is_file()]
    return found[0] if len(found) == 1 else None


def load_task_model(
    task: str,
    variant: str,
    model_dir: Path,
    allow_unverified: bool = False,
    sha256: str | None = None,
) -> LoadedModel:
    """Verify every file the task needs (official hash, zip CRCs), then build its network;
    raises WeightsError. An official variant's name means its official file and layout; any
    other name is a model of any fitting architecture (anymodel.py), pinned by `sha256`."""
    model_dir = Path(model_dir)
    if variant not in variants(task):
        return load_any_model(task, variant, model_dir, allow_unverified, sha256)
    paths = required_files(task, variant, model_dir)
    for path in paths:
        verify_official(path, allow_unverified)
        check_archive(path)  # facexlib's files too: they are read by facexlib's own torch.load
    path = model_dir / model_file(task, variant).filename
    descriptor, detected = build_for_task(task, variant, read_state_dict(path), path.name)
    if task == "restore" and variant == "deblur":
        apply_tlc(descriptor.model)
    descriptor.model.eval()
    log.info("%s/%s: loaded %s from %s", task, variant, detected, path)
    return LoadedModel(descriptor, detected, path)


def load_any_model(
    task: str, name: str, model_dir: Path, allow_unverified: bool, sha256: str | None
) -> LoadedModel:
    path = model_file_in(task, model_dir)
    verify_pinned(path, allow_unverified, sha256)
    check_archive(path)
    for helper in anymodel.helper_files(task):  # face-restore: facexlib's networks
        helper_path = model_dir / helper
        if not helper_path.is_file():
            raise WeightsError(f"{task}/{name} needs {helper} in {model_dir} beside its model")
        verify_official(helper_path, allow_unverified)
        check_archive(helper_path)
    descriptor, detected = build_any(task, read_state_dict(path), path.name)
    descriptor.model.eval()
    log.info("%s/%s: loaded %s from %s", task, name, detected, path)
    return LoadedModel(descriptor, detected, path)
