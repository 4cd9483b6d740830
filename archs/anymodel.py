"""Models other than the official variants: any file whose architecture spandrel detects and whose
purpose fits the task (CONTRACT section 7).

A model is a folder holding one model file (`.pth`, `.pt`, `.ckpt`, `.safetensors`). It is served
when its sha256 is pinned (a `<file>.sha256` beside it, or the `sha256` setting) and matches, or
when unverified weights are allowed. A file under an official name keeps its official check.
"""

from __future__ import annotations

from pathlib import Path

from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

from .catalogue import DEFAULT_VARIANT, files_for, official_file
from .checkpoint import StateDict, WeightsError, recorded_sha256, sha256_of, verify_official
from .families import Detected, detect

MODEL_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")

# What each task serves, in words (the refusal names it).
FITS = {
    "upscale": "a super-resolution model (scale 2 or more)",
    "restore": "an image restoration model at scale 1 (NAFNet, SCUNet, 1x ESRGAN/SPAN/Compact...)",
    "face-restore": "a face restoration model (CodeFormer or GFPGAN)",
    "colorize": "a DDColor model",
}
FACE_ARCHITECTURES = ("CodeFormer", "GFPGAN")
COLOUR_ARCHITECTURES = ("DDColor",)


def helper_files(task: str) -> list[str]:
    """Files a task needs beside its model file (face-restore: facexlib's networks)."""
    official = files_for(task, DEFAULT_VARIANT[task])
    return [f.filename for f in official if f.role != "model"]


def model_file_in(task: str, folder: Path) -> Path:
    """The one model file in `folder` (helper networks aside)."""
    folder = Path(folder)
    helpers = set(helper_files(task))
    found = sorted(
        p
        for p in (folder.iterdir() if folder.is_dir() else ())
        if p.suffix in MODEL_SUFFIXES and p.name not in helpers and p.is_file()
    )
    if len(found) != 1:
        what = "no model file" if not found else f"{len(found)} model files"
        raise WeightsError(
            f"{folder} holds {what}: a model's folder holds exactly one "
            f"({', '.join(MODEL_SUFFIXES)})"
        )
    return found[0]


def verify_pinned(path: Path, allow_unverified: bool, sha256: str | None = None) -> None:
    """An official name keeps its official check; another file must match its pinned sha256
    (the setting, else `<file>.sha256`), or unverified weights must be allowed."""
    if official_file(path.name) is not None:
        verify_official(path, allow_unverified)
        return
    expected = (sha256 or "").strip().lower() or recorded_sha256(path)
    if expected:
        actual = sha256_of(path)
        if actual != expected:
            raise WeightsError(
                f"{path.name}'s sha256 is {actual}, but {expected} is pinned for it: "
                "the file is not the one configured (fetch it again, or pin the new hash)"
            )
        return
    if not allow_unverified:
        raise WeightsError(
            f"{path.name} is not an official file and no sha256 is pinned for it: write its "
            f"sha256 into {path.name}.sha256 beside it (sha256sum {path.name} > "
            f"{path.name}.sha256), set the model's sha256, or set ALLOW_UNVERIFIED_WEIGHTS=true"
        )


def _rgb_to_rgb(descriptor: ImageModelDescriptor) -> bool:
    return descriptor.input_channels == 3 and descriptor.output_channels == 3


def misfit(task: str, descriptor: ImageModelDescriptor) -> str | None:
    """Why the network does not fit `task` (None: it fits)."""
    arch, purpose, scale = descriptor.architecture.id, descriptor.purpose, descriptor.scale
    if task == "colorize":
        fits = arch in COLOUR_ARCHITECTURES
    elif task == "face-restore":
        fits = arch in FACE_ARCHITECTURES
    elif arch in COLOUR_ARCHITECTURES + FACE_ARCHITECTURES or not _rgb_to_rgb(descriptor):
        fits = False
    elif task == "upscale":
        fits = purpose == "SR" and scale >= 2
    else:
        fits = purpose in ("Restoration", "SR") and scale == 1
    if fits:
        return None
    return f"{task} serves {FITS[task]}; it is {arch} ({purpose.lower()}, x{scale})"


def build_any(task: str, state: StateDict, filename: str) -> tuple[ImageModelDescriptor, Detected]:
    try:
        descriptor = ModelLoader().load_from_state_dict(state)
    except UnsupportedModelError:
        raise WeightsError(f"{filename} is no architecture spandrel knows") from None
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0][:300]
        raise WeightsError(f"{filename} could not be built as a network: {first_line}") from exc
    if not isinstance(descriptor, ImageModelDescriptor):
        raise WeightsError(f"{filename} is not an image-to-image model")
    why = misfit(task, descriptor)
    if why:
        raise WeightsError(f"{filename} does not fit: {why}")
    return descriptor, detect(descriptor)
