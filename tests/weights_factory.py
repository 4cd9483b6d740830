"""Random-weight checkpoints in the official key layout, nesting and file names.

The official files cannot be downloaded here, so the suite makes look-alikes: the same keys and
outer nesting (`params_ema`, `params`, facexlib's `module.` prefix) so that the real loading path
runs. Sizes are small where detection does not depend on them (Real-ESRGAN and NAFNet widths) and
real where the architecture is fixed (CodeFormer, DDColor tiny, facexlib's nets). Files are cached
under `.cache/test-weights/<version>/` and laid out `<task>/<variant>/<official name>`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

CACHE_VERSION = "v5"
ROOT = Path(__file__).resolve().parent.parent
CACHE = (
    Path(os.environ.get("TEST_WEIGHTS_DIR", ROOT / ".cache" / "test-weights")).resolve()
    / CACHE_VERSION
)


def _conv(out_ch: int, in_ch: int, gen: torch.Generator, k: int = 3, gain: float = 1.0):
    std = gain / (in_ch * k * k) ** 0.5
    return torch.randn(out_ch, in_ch, k, k, generator=gen) * std, torch.zeros(out_ch)


def realesrgan_state(scale: int, blocks: int, nf: int = 16, gc: int = 32, seed: int = 0) -> dict:
    """basicsr RRDBNet names: conv_first, body.N.rdbK.convM, conv_body, conv_up1/2, conv_hr..."""
    gen = torch.Generator().manual_seed(seed)
    in_ch = {4: 3, 2: 12, 1: 48}[scale]  # Real-ESRGAN pixel-unshuffles x2 and x1 inputs
    state = {}

    def put(name, out_ch, in_ch_, gain=1.0):
        state[f"{name}.weight"], state[f"{name}.bias"] = _conv(out_ch, in_ch_, gen, gain=gain)

    put("conv_first", nf, in_ch)
    for b in range(blocks):
        for r in (1, 2, 3):
            for c in range(1, 5):
                put(f"body.{b}.rdb{r}.conv{c}", gc, nf + (c - 1) * gc, gain=0.2)
            put(f"body.{b}.rdb{r}.conv5", nf, nf + 4 * gc, gain=0.2)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        put(name, nf, nf, gain=0.5)
    put("conv_last", 3, nf, gain=0.5)
    state["conv_last.bias"] += 0.5  # a mid-grey output, far from the clamps
    return {"params_ema": state}


def nafnet_state(enc, middle, dec, width: int = 8, seed: int = 0) -> dict:
    from spandrel.architectures.NAFNet import NAFNet

    torch.manual_seed(seed)
    net = NAFNet(width=width, enc_blk_nums=enc, middle_blk_num=middle, dec_blk_nums=dec)
    for name, p in net.named_parameters():  # NAFNet starts its residual gates at zero
        if name.endswith(("beta", "gamma")):
            torch.nn.init.normal_(p, std=0.1)
    return {"params": net.state_dict()}


def codeformer_state(seed: int = 0) -> dict:
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(seed)
    net = CodeFormer(
        dim_embd=512,
        n_head=8,
        n_layers=9,
        codebook_size=1024,
        connect_list=["32", "64", "128", "256"],
    )
    return {"params_ema": net.state_dict()}


def ddcolor_net(encoder_name: str, input_side: int) -> torch.nn.Module:
    """DDColor as the official checkpoints configure it: convnext-t (paper_tiny) or convnext-l."""
    from spandrel_extra_arches.architectures.DDColor import DDColor

    return DDColor(
        encoder_name=encoder_name,
        decoder_name="MultiScaleColorDecoder",
        input_size=(input_side, input_side),
        nf=512,
        num_output_channels=2,
        last_norm="Spectral",
        num_queries=100,
        num_scales=3,
        dec_layers=9,
    )


def ddcolor_tiny_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return {"params": ddcolor_net("convnext-t", 256).state_dict()}


# Five points (eyes, nose, mouth corners) in tenths of the anchor's size, around its centre.
ONE_FACE_LANDMARKS = (-1.2, -0.3, 1.2, -0.3, 0.0, 1.1, -1.0, 2.2, 1.0, 2.2)


def retinaface_state(
    seed: int = 0,
    *,
    level: int = 2,
    landmarks: tuple[float, ...] = ONE_FACE_LANDMARKS,
    stretched: bool = True,
) -> dict:
    """facexlib's RetinaFace (resnet50) with its heads set so that it finds exactly one face.

    Random weights would find faces at random (often dozens: slow, and untestable). Here only the
    larger anchor of `level` scores as a face (by default the 512 px anchors of the coarsest
    level), its boxes are `stretched` far past the image so non-maximum suppression keeps one
    (otherwise a grid of faces remains: a crowd), and the landmarks form a plausible 5-point
    face around the anchor centre, so detection, alignment and paste-back really run.
    """
    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(seed)
    net = RetinaFace(network_name="resnet50", half=False, device="cpu")
    # Each location has two anchors (at level 2: 256 and 512 px at stride 32); outputs are per
    # anchor, the larger one second.
    with torch.no_grad():
        for head in (*net.ClassHead, *net.BboxHead, *net.LandmarkHead):
            head.conv1x1.weight.zero_()
            head.conv1x1.bias.zero_()
        for index, head in enumerate(net.ClassHead):
            face = [-10.0, 10.0] if index == level else [10.0, -10.0]
            head.conv1x1.bias.copy_(torch.tensor([10.0, -10.0, *face]))
        if stretched:
            net.BboxHead[level].conv1x1.bias.copy_(torch.tensor([0, 0, 0, 0, 0, 0, 10.0, 10.0]))
        net.LandmarkHead[level].conv1x1.bias.copy_(torch.tensor([0.0] * 10 + list(landmarks)))
    return {f"module.{k}": v for k, v in net.state_dict().items()}


def parsenet_state(seed: int = 0) -> dict:
    from facexlib.parsing.parsenet import ParseNet

    torch.manual_seed(seed)
    return ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict()


MAKERS = {
    ("upscale", "x4plus", "RealESRGAN_x4plus.pth"): lambda: realesrgan_state(4, 23),
    ("upscale", "x4anime", "RealESRGAN_x4plus_anime_6B.pth"): lambda: realesrgan_state(4, 6),
    ("upscale", "x2plus", "RealESRGAN_x2plus.pth"): lambda: realesrgan_state(2, 23),
    ("restore", "denoise", "NAFNet-SIDD-width64.pth"): lambda: nafnet_state(
        [2, 2, 4, 8], 12, [2, 2, 2, 2]
    ),
    ("restore", "deblur", "NAFNet-GoPro-width64.pth"): lambda: nafnet_state(
        [1, 1, 1, 28], 1, [1, 1, 1, 1]
    ),
    ("face-restore", "v0.1", "codeformer.pth"): codeformer_state,
    ("face-restore", "v0.1", "detection_Resnet50_Final.pth"): retinaface_state,
    ("face-restore", "v0.1", "parsing_parsenet.pth"): parsenet_state,
    ("colorize", "paper_tiny", "ddcolor_paper_tiny.pth"): ddcolor_tiny_state,
}


def compact_net(scale: int, seed: int = 0) -> torch.nn.Module:
    """spandrel's SRVGGNetCompact (realesr-general-x4v3's family), small."""
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    return Compact(num_feat=16, num_conv=4, upscale=scale)


def span_net(scale: int, seed: int = 0) -> torch.nn.Module:
    from spandrel.architectures.SPAN import SPAN

    torch.manual_seed(seed)
    return SPAN(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=scale)


def scunet_net(seed: int = 0) -> torch.nn.Module:
    """SCUNet: a restoration model that needs 40 px at least and discourages tiling."""
    from spandrel.architectures.SCUNet import SCUNet

    torch.manual_seed(seed)
    return SCUNet(dim=64, config=[1, 1, 1, 1, 1, 1, 1])


# Models of other architectures (CONTRACT section 7), each in its folder <task>/<name>/ under
# a name of its own, with its sha256 pinned in `<file>.sha256` beside it (but those of
# PINNED_BY_THE_CHART: their sha256 comes only from the chart's `sha256` value).
OTHER_MODELS = {
    ("upscale", "compact-x4", "compact_x4.pth"): lambda: compact_net(4),
    # values-kind.yaml's realesr-general-x4v3 (Compact x4), under its official file name
    ("upscale", "general-x4v3", "realesr-general-x4v3.pth"): lambda: compact_net(4, seed=1),
    ("upscale", "span-x2", "span_x2.safetensors"): lambda: span_net(2),
    ("restore", "compact-x1", "compact_x1.pth"): lambda: compact_net(1),
    ("restore", "scunet", "scunet.safetensors"): scunet_net,
}
PINNED_BY_THE_CHART = {("upscale", "general-x4v3")}


def other_model_dir(task: str, name: str) -> Path:
    """The folder of one generated model of another architecture, made on first use."""
    from safetensors.torch import save_file

    from archs.checkpoint import sha256_of

    folder = CACHE / task / name
    for (t, n, filename), make in OTHER_MODELS.items():
        if (t, n) != (task, name) or (folder / filename).is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f"{filename}.{os.getpid()}.part"
        state = make().state_dict()
        if filename.endswith(".safetensors"):
            save_file({k: v.contiguous() for k, v in state.items()}, str(part))
        else:
            torch.save(state, part)
        if (task, name) not in PINNED_BY_THE_CHART:
            (folder / f"{filename}.sha256").write_text(f"{sha256_of(part)}  {filename}\n")
        part.replace(folder / filename)
    if not folder.is_dir():
        raise KeyError(f"no generated model {task}/{name}")
    return folder


def folder_of(task: str, name: str) -> Path:
    """The generated folder of a model: an official variant's (model_dir) or another's."""
    from archs.catalogue import CATALOGUE

    return model_dir(task, name) if (task, name) in CATALOGUE else other_model_dir(task, name)


def weights_dir() -> Path:
    return CACHE


def model_dir(task: str, variant: str) -> Path:
    """The generated files of one task/variant, made on first use (atomically)."""
    folder = CACHE / task / variant
    for (t, v, name), make in MAKERS.items():
        if (t, v) != (task, variant) or (folder / name).is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f"{name}.{os.getpid()}.part"
        torch.save(make(), part)
        part.replace(folder / name)
    if not folder.is_dir():
        raise KeyError(f"no generated weights for {task}/{variant}")
    return folder


def all_weights() -> Path:
    for task, variant, _ in MAKERS:
        model_dir(task, variant)
    return CACHE
