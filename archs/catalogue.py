"""The official weight files: where they come from, their size and sha256 (see WEIGHTS.md)."""

from __future__ import annotations

from dataclasses import dataclass

TASKS = ("colorize", "restore", "face-restore", "upscale")

# The family spandrel reports for each task (its architecture id).
TASK_FAMILY = {
    "colorize": "DDColor",
    "restore": "NAFNet",
    "face-restore": "CodeFormer",
    "upscale": "ESRGAN",
}

DEFAULT_VARIANT = {
    "colorize": "modelscope",
    "restore": "denoise",
    "face-restore": "v0.1",
    "upscale": "x4plus",
}

# Environment variable naming the variant of each task (CONTRACT section 2).
VARIANT_ENV = {
    "colorize": "MODEL_COLORIZE",
    "restore": "MODEL_RESTORE",
    "face-restore": "MODEL_FACE",
    "upscale": "MODEL_UPSCALE",
}


@dataclass(frozen=True)
class OfficialFile:
    filename: str
    url: str
    size: int | None
    sha256: str | None  # None: not published, recorded on first download (trust on first use)
    role: str = "model"  # "model": the task's network; otherwise a helper network


_GH = "https://github.com"
_HF_DDCOLOR = "https://huggingface.co/piddnad/DDColor-models/resolve/main"
_NAFNET_SPACE = (
    "https://huggingface.co/spaces/chuxiaojie/NAFNet/resolve/"
    "5964ed4955416df99210106b708e4a2df9e9eca0"
)
_GDRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="

CATALOGUE: dict[tuple[str, str], tuple[OfficialFile, ...]] = {
    ("upscale", "x4plus"): (
        OfficialFile(
            "RealESRGAN_x4plus.pth",
            f"{_GH}/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
            67_040_989,
            "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
        ),
    ),
    ("upscale", "x4anime"): (
        OfficialFile(
            "RealESRGAN_x4plus_anime_6B.pth",
            f"{_GH}/xinntao/Real-ESRGAN/releases/download/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
            17_938_799,
            "f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da",
        ),
    ),
    ("upscale", "x2plus"): (
        OfficialFile(
            "RealESRGAN_x2plus.pth",
            f"{_GH}/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
            67_061_725,
            "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
        ),
    ),
    ("face-restore", "v0.1"): (
        OfficialFile(
            "codeformer.pth",
            f"{_GH}/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
            376_637_898,
            "1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
        ),
        OfficialFile(
            "detection_Resnet50_Final.pth",
            f"{_GH}/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
            109_497_761,
            "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
            role="detection",
        ),
        OfficialFile(
            "parsing_parsenet.pth",
            f"{_GH}/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
            85_331_193,
            "3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
            role="parsing",
        ),
    ),
    ("colorize", "modelscope"): (
        OfficialFile(
            "ddcolor_modelscope.pth",
            f"{_HF_DDCOLOR}/ddcolor_modelscope.pth",
            911_950_059,
            "17c460d7e55b32a598370621d77173be59e03c24b0823f06821db23a50c263ce",
        ),
    ),
    ("colorize", "artistic"): (
        OfficialFile(
            "ddcolor_artistic.pth",
            f"{_HF_DDCOLOR}/ddcolor_artistic.pth",
            911_950_059,
            "a591ee5beedad36de703d8977e92d0c30c1eedc6453fd1b300f3b460842a23a9",
        ),
    ),
    ("colorize", "paper_tiny"): (
        OfficialFile("ddcolor_paper_tiny.pth", f"{_HF_DDCOLOR}/ddcolor_paper_tiny.pth", None, None),
    ),
    ("restore", "denoise"): (
        OfficialFile(
            "NAFNet-SIDD-width64.pth",
            f"{_NAFNET_SPACE}/NAFNet-SIDD-width64.pth",
            464_154_961,
            "cd685efaae01f7c4e9951f2deab05780079c8eb1e49ed664b72f6db04dabb445",
        ),
    ),
    ("restore", "deblur"): (
        OfficialFile(
            "NAFNet-GoPro-width64.pth",
            f"{_GDRIVE}1S0PVRbyTakYY9a82kujgZLbMihfNBLfC",
            271_778_961,
            "329d3ab4077b8d6b7ff61de376e483714667960bf85be027bf4335cda701196f",
        ),
    ),
}

_BY_NAME = {f.filename: f for files in CATALOGUE.values() for f in files}


def variants(task: str) -> list[str]:
    return [variant for (t, variant) in CATALOGUE if t == task]


def files_for(task: str, variant: str) -> tuple[OfficialFile, ...]:
    try:
        return CATALOGUE[(task, variant)]
    except KeyError:
        raise ValueError(
            f"unknown variant {variant!r} for {task}; choose one of {', '.join(variants(task))}"
        ) from None


def model_file(task: str, variant: str) -> OfficialFile:
    """The file holding the task's own network (face-restore also needs helper files)."""
    return next(f for f in files_for(task, variant) if f.role == "model")


def official_file(filename: str) -> OfficialFile | None:
    return _BY_NAME.get(filename)
