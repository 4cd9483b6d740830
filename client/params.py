"""The gateway's query parameters per task, as command-line options.

A copy of the routes' parameters (transformer/routes.py) kept here so that `--help` works without
a server; tests/test_cli.py checks it against the gateway's /openapi.json (names, types,
defaults, ranges, choices). Only the options a user gives are sent; the server applies its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

FORMATS = ("png", "jpg", "jpeg", "webp")


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # int, float, bool or str
    default: object
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _tile(name: str, default: int) -> Param:
    return Param(name, int, default, "tile side in px; 0 = whole image at once", minimum=0)


OUTPUT_FORMAT = Param(
    "output_format", str, "png", "encoding of the results (png keeps alpha)", choices=FORMATS
)
# Its maximum is a deployment setting of the gateway (MAX_RENDER_FACTOR): the gateway checks it.
RENDER_FACTOR = Param(
    "render_factor", int, 32, "colorize model input side = 16 x render_factor px", 1, None
)


def _model(name: str = "model", task: str = "") -> Param:
    """A model choice: the server's list (`photo-enhance health` shows it), checked there."""
    step = f"{task} step's " if task else ""
    return Param(
        name,
        str,
        None,
        f"the {step}model, one the server serves (photo-enhance health lists them; 422 names them)",
    )


# Bounds left to the gateway, as (parameter, "minimum" | "maximum").
GATEWAY_BOUNDS = {("render_factor", "maximum")}

TASK_PARAMS: dict[str, tuple[Param, ...]] = {
    "colorize": (RENDER_FACTOR, OUTPUT_FORMAT, _model()),
    "restore": (_tile("tile_size", 0), OUTPUT_FORMAT, _model()),
    "face-restore": (
        Param("fidelity", float, 0.5, "0 = best quality, 1 = closest to the input", 0, 1),
        Param("upscale", int, 2, "the result is upscale x the input", 1, 4),
        Param("only_center_face", bool, False, "restore the central face only"),
        Param("has_aligned", bool, False, "the input is one aligned 512x512 face crop"),
        OUTPUT_FORMAT,
        _model(),
    ),
    "upscale": (
        Param("scale", int, 4, "the result is exactly scale x the input", 1, 8),
        _tile("tile_size", 512),
        OUTPUT_FORMAT,
        _model(),
    ),
    "pipeline": (
        Param("restore", bool, True, "run the restore model"),
        Param("face_restore", bool, True, "restore faces (last step)"),
        Param(
            "colorize",
            str,
            "auto",
            "run the colorize model (first step); auto: only on photos without colour of their "
            "own (grayscale, sepia)",
            choices=("auto", "true", "false"),
        ),
        Param("upscale", bool, True, "upscale with the model when smaller than the box"),
        Param("width", int, 2400, "target box width in px", 16, 16384),
        Param("height", int, 2400, "target box height in px", 16, 16384),
        RENDER_FACTOR,
        _tile("restore_tile_size", 0),
        Param(
            "fidelity", float, 0.7, "face step: 0 = best quality, 1 = closest to the input", 0, 1
        ),
        _tile("upscale_tile_size", 512),
        Param("only_center_face", bool, False, "face step: restore the central face only"),
        OUTPUT_FORMAT,
        _model("colorize_model", "colorize"),
        _model("restore_model", "restore"),
        _model("upscale_model", "upscale"),
        _model("face_restore_model", "face-restore"),
    ),
}
TASKS = tuple(TASK_PARAMS)
TASK_HELP = {
    "colorize": "colour black-and-white photos (DDColor)",
    "restore": "remove noise or blur (NAFNet)",
    "face-restore": "restore faces (CodeFormer)",
    "upscale": "enlarge 1..8x (Real-ESRGAN)",
    "pipeline": "colorize, restore, upscale into a box, then faces",
}
