"""Model load and per-image time of each predictor, in process, on this machine's device.

    .venv/bin/python bench/predictors.py [--sizes 256 512] [--repeat 2]

Official weights cannot be downloaded everywhere, so this builds random-weight look-alikes at
the official sizes (Real-ESRGAN x4plus 64 features/23 blocks, NAFNet width 64, CodeFormer,
DDColor paper_tiny, facexlib's nets) in a temporary folder: timings match the official files,
pixels do not. Face-restore is timed on an aligned face (`has_aligned`) and on a detected one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from predictors.base import choose_device
from predictors.colorize import ColorizeModel
from predictors.face_restore import FaceRestoreModel
from predictors.restore import RestoreModel
from predictors.upscale import UpscaleModel
from tests import weights_factory as wf

CASES = [
    (
        UpscaleModel,
        "x4plus",
        {"RealESRGAN_x4plus.pth": lambda: wf.realesrgan_state(4, 23, 64, 32)},
        {"scale": 4, "tile_size": 512},
    ),
    (
        RestoreModel,
        "denoise",
        {
            "NAFNet-SIDD-width64.pth": lambda: wf.nafnet_state(
                [2, 2, 4, 8], 12, [2, 2, 2, 2], width=64
            )
        },
        {"tile_size": 0},
    ),
    (
        ColorizeModel,
        "paper_tiny",
        {"ddcolor_paper_tiny.pth": wf.ddcolor_tiny_state},
        {"render_factor": 32},
    ),
    (
        FaceRestoreModel,
        "v0.1",
        {
            "codeformer.pth": wf.codeformer_state,
            "detection_Resnet50_Final.pth": wf.retinaface_state,
            "parsing_parsenet.pth": wf.parsenet_state,
        },
        {"fidelity": 0.5, "upscale": 2, "only_center_face": True, "has_aligned": False},
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", default=None)
    args = parser.parse_args()
    device = choose_device()
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    photo = data.astronaut()
    with tempfile.TemporaryDirectory() as tmp:
        for cls, variant, files, params in CASES:
            if args.tasks and cls.task not in args.tasks:
                continue
            folder = Path(tmp) / cls.task
            folder.mkdir()
            for name, make in files.items():
                torch.save(make(), folder / name)
            model = cls(folder, variant, allow_unverified=True, device=device)
            start = time.perf_counter()
            assert model.load(), model.load_error
            load_s = time.perf_counter() - start
            for size in args.sizes:
                image = np.ascontiguousarray(
                    torch.nn.functional.interpolate(
                        torch.from_numpy(photo).permute(2, 0, 1)[None].float(),
                        size=(size, size),
                        mode="area",
                    )[0]
                    .permute(1, 2, 0)
                    .round()
                    .byte()
                    .numpy()
                )
                model._enhance_batch(image[None], params)  # warm-up
                times = []
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    model._enhance_batch(image[None], params)
                    times.append(time.perf_counter() - start)
                print(
                    f"{cls.task:13s} {variant:10s} load {load_s:6.2f} s   {size:4d} px: "
                    f"{min(times):7.2f} s/image (best of {args.repeat})",
                    flush=True,
                )


if __name__ == "__main__":
    main()
