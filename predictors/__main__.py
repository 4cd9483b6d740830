"""`python -m predictors <task> --model_dir DIR [--variant V] [KServe ModelServer flags]`."""

from __future__ import annotations

import argparse
import logging
import os
import threading

from kserve import ModelServer, model_server
from kserve.protocol.dataplane import DataPlane

import archs

from .base import EnhanceModel, choose_device, env_flag
from .colorize import ColorizeModel
from .face_restore import FaceRestoreModel
from .restore import RestoreModel
from .upscale import UpscaleModel

MODELS: dict[str, type[EnhanceModel]] = {
    m.task: m for m in (ColorizeModel, RestoreModel, FaceRestoreModel, UpscaleModel)
}


class LoadAwareDataPlane(DataPlane):
    """KServe reports a predictor server ready at once; ours is ready when its model is loaded."""

    async def ready(self) -> bool:
        models = self.model_registry.get_models().values()
        return bool(models) and all([await m.healthy() for m in models])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(parents=[model_server.parser], conflict_handler="resolve")
    parser.add_argument("task", choices=sorted(MODELS))
    parser.add_argument("--model_dir", required=True, help="folder with the official files")
    parser.add_argument("--variant", help="default: $MODEL_<TASK> or the task's default")
    parser.add_argument(
        "--allow_unverified_weights", action="store_true",
        help="serve files whose size/sha256 differ from the official release",
    )
    parser.add_argument("--force_cpu", action="store_true")
    args, _ = parser.parse_known_args()
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO)
    variant = args.variant or os.environ.get(archs.VARIANT_ENV[args.task]) or None
    model = MODELS[args.task](
        args.model_dir,
        variant,
        allow_unverified=args.allow_unverified_weights or env_flag("ALLOW_UNVERIFIED_WEIGHTS"),
        device=choose_device(args.force_cpu),
    )
    server = ModelServer()
    server.dataplane = LoadAwareDataPlane(server.registered_models)
    server.register_model(model)
    # Serve liveness at once; readiness follows the load (large checkpoints take a while).
    threading.Thread(target=model.load, name="load", daemon=True).start()
    server.start([])


if __name__ == "__main__":
    main()
