"""What each model is, for people: one line and its licence. `/health` serves it per model
(`about`), and the page and the CLI show it from there: this is the one place it is written.

The licences are the ones the project's README states (section "Licences"): CodeFormer's code
and weights are under the NTU S-Lab License 1.0, which forbids commercial use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class About:
    model: str  # the model family, as its authors name it
    description: str  # one line: what it does to a photo
    licence: str
    commercial_use: bool  # False: the licence forbids it (the page and CLI say so)


ABOUT: dict[str, About] = {
    "colorize": About(
        "DDColor",
        "Adds colour to a black-and-white or faded photo; keeps its lightness.",
        "Apache-2.0 (DDColor's code and weights)",
        True,
    ),
    "restore": About(
        "NAFNet",
        "Removes noise (denoise) or camera-shake blur (deblur) from the whole photo.",
        "MIT",
        True,
    ),
    "face-restore": About(
        "CodeFormer",
        "Finds faces and redraws them sharper; the rest of the photo is left as it is.",
        "NTU S-Lab License 1.0: non-commercial use only",
        False,
    ),
    "upscale": About(
        "Real-ESRGAN",
        "Enlarges the photo (x1 to x8) and redraws fine detail.",
        "BSD-3-Clause",
        True,
    ),
}


# The official variants of each task, described by ABOUT; any other model is described by its
# architecture (the predictor reports it) and the licence note below.
OFFICIAL_VARIANTS = {
    "colorize": ("modelscope", "paper_tiny", "artistic"),
    "restore": ("denoise", "deblur"),
    "face-restore": ("v0.1",),
    "upscale": ("x4plus", "x4anime", "x2plus"),
}
OTHER_MODEL_LICENCE = (
    "not recorded here: the model's own licence applies (its author's page, or OpenModelDB, "
    "states it)"
)
OTHER_MODEL_DOES = {
    "colorize": "Adds colour to a black-and-white or faded photo.",
    "restore": "Restores the whole photo at its size (noise, blur, compression: as trained).",
    "face-restore": "Finds faces and redraws them sharper.",
    "upscale": "Enlarges the photo and redraws fine detail (as trained).",
}


def about(task: str, model: str | None = None, architecture: str | None = None) -> dict:
    """The default description for an official variant; for another model, its architecture
    (once its predictor said it) and a licence note: commercial use is not known (None)."""
    if model is None or model in OFFICIAL_VARIANTS[task]:
        return asdict(ABOUT[task])
    return {
        "model": architecture or model,
        "description": OTHER_MODEL_DOES[task],
        "licence": OTHER_MODEL_LICENCE,
        "commercial_use": None,
    }
