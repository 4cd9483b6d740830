"""`python -m predictors <task> --model_dir DIR [--variant V] [KServe ModelServer flags]`."""

from __future__ import annotations

import argparse
import logging
import os
import threading

from kserve import model_server
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane

import archs
from common.limits import max_batch_pixels, max_output_pixels, max_render_factor
from common.logs import configure_logging

from . import surface
from .base import PRECISIONS, EnhanceModel, NotLoaded, choose_device, env_flag
from .colorize import ColorizeModel
from .face_restore import FaceRestoreModel
from .limits import DEFAULT_MAX_FACES, env_int
from .restore import RestoreModel
from .shutdown import GracefulShutdown
from .upscale import UpscaleModel
from .v2codec import BadRequest, json_header_length, request_from_binary_rest
from .v2grpc import PredictorServer

KSERVE_DEFAULT_NAME = "model"  # KServe's --model_name when not given
# The chart's terminationGracePeriodSeconds (30) less time to cancel and exit.
DEFAULT_SHUTDOWN_GRACE = 25

MODELS: dict[str, type[EnhanceModel]] = {
    m.task: m for m in (ColorizeModel, RestoreModel, FaceRestoreModel, UpscaleModel)
}


class PredictorDataPlane(DataPlane):
    """KServe's data plane with these changes: the server is ready only when its model is loaded
    (KServe says ready at once), REST tensors sent as bytes stay bytes (KServe makes lists),
    model metadata names the platform with its device, and an unknown model or an unreadable
    body is the client's mistake in one log line (KServe logs a traceback for each)."""

    async def ready(self) -> bool:
        models = self.model_registry.get_models().values()
        return bool(models) and all([await m.healthy() for m in models])

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False):
        if self.model_registry.get_model(model_name) is None:
            raise surface.UnknownModel(model_name)
        ready = await super().model_ready(model_name, disable_predictor_health_check)
        if not ready and disable_predictor_health_check:
            # Only KServe's REST inference routes ask so; they would raise ModelNotReady, whose
            # handler logs a traceback: NotLoaded answers 503 with the reason, quietly.
            model = self.model_registry.get_model(model_name)
            raise NotLoaded(model_name, model.load_error or "the weights are still loading")
        return ready

    async def model_metadata(self, model_name: str) -> dict:
        metadata = await super().model_metadata(model_name)  # KServe leaves platform empty
        model = self.model_registry.get_model(model_name)
        # versions: "<model>:<architecture>:x<scale>" once loaded, for the gateway's /health
        return {**metadata, "platform": model.platform, "versions": model.versions}

    def get_model_from_registry(self, name: str):
        model = self.model_registry.get_model(name)
        if model is None:
            raise surface.UnknownModel(name)
        return model

    async def get_model(self, name: str):
        # KServe's loads a model that is not ready, on the event loop, once per request; ours
        # loads once in the background and its predict answers "not ready" meanwhile.
        model = self.model_registry.get_model(name)
        if model is None:
            raise surface.UnknownModel(name)
        return model

    def decode(self, body, headers, *args, **kwargs):
        try:
            return super().decode(body, headers, *args, **kwargs)
        except InvalidInput as exc:  # KServe's handler would log a traceback for each
            if isinstance(exc, BadRequest):
                raise
            raise BadRequest(exc.reason) from None

    def decode_inference_request(self, body, headers, model_name):
        if isinstance(body, bytes):
            # Without the length header the body is all JSON (Triton's client sends it so,
            # without a Content-Type, and KServe would refuse it).
            json_length = json_header_length(
                headers.get(INFERENCE_CONTENT_LENGTH_HEADER), len(body)
            )
            return request_from_binary_rest(body, json_length, model_name)
        return super().decode_inference_request(body, headers, model_name)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(parents=[model_server.parser], conflict_handler="resolve")
    parser.add_argument("task", choices=sorted(MODELS))
    parser.add_argument("--model_dir", required=True, help="folder with the official files")
    parser.add_argument(
        "--variant",
        help="default: $MODEL_<TASK>, else the variant whose file is the only one in --model_dir, "
        "else the task's default",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="several models in this process (comma-separated, as $MODELS_<TASK> names them "
        "for make run): --model_dir is then the task's folder, each model loaded from its "
        "subfolder <model_dir>/<name>/; the default one (--variant) is served as the OIP "
        "model <task>, each other one as "
        "<task>-<name>",
    )
    parser.add_argument(
        "--sha256",
        default=os.environ.get("MODEL_SHA256", "").strip() or None,
        help="a single model's pinned sha256 ($MODEL_SHA256): a file that is not an official "
        "release is served when it matches, without --allow_unverified_weights",
    )
    parser.add_argument(
        "--allow_unverified_weights",
        action="store_true",
        help="serve files whose size/sha256 differ from the official release",
    )
    parser.add_argument("--force_cpu", action="store_true")
    parser.add_argument(
        "--precision",
        choices=["auto", *PRECISIONS],
        default=os.environ.get("PRECISION", "auto"),
        help="auto (default, $PRECISION): fp16 for Real-ESRGAN, bf16 for the others on CUDA, "
        "fp32 on CPU",
    )
    parser.add_argument(
        "--tile_batch",
        type=int,
        default=env_int("TILE_BATCH", 1, minimum=1),
        help="equal-size tiles per forward ($TILE_BATCH, 1)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        default=env_flag("COMPILE"),
        help="torch.compile the network, warmed up before ready ($COMPILE)",
    )
    parser.add_argument(
        "--max_faces",
        type=int,
        default=env_int("MAX_FACES", DEFAULT_MAX_FACES),
        help="face-restore: faces restored per image, the largest first (env MAX_FACES)",
    )
    parser.add_argument(
        "--max_render_factor",
        type=int,
        default=max_render_factor(os.environ),
        help="colorize: the largest render_factor served (env MAX_RENDER_FACTOR)",
    )
    parser.add_argument(
        "--max_output_pixels",
        type=int,
        default=max_output_pixels(os.environ),
        help="the most pixels of one image and of its answer (env MAX_OUTPUT_PIXELS, the "
        "gateway's number; default 8192 x 8192)",
    )
    parser.add_argument(
        "--max_batch_pixels",
        type=int,
        default=max_batch_pixels(os.environ),
        help="the most answer pixels of one request, all its images together "
        "(env MAX_BATCH_PIXELS; default: MAX_OUTPUT_PIXELS)",
    )
    parser.add_argument(
        "--bind_address",
        default=os.environ.get("BIND_ADDRESS", "").strip() or None,
        help="the address the HTTP and gRPC servers listen on, e.g. 127.0.0.1 ($BIND_ADDRESS; "
        "default: every interface, HTTP on 0.0.0.0 and gRPC on [::], as a pod needs)",
    )
    parser.add_argument(
        "--shutdown_grace_seconds",
        type=float,
        default=env_int("SHUTDOWN_GRACE_SECONDS", DEFAULT_SHUTDOWN_GRACE),
        help="on SIGTERM, how long running work may finish before it is cancelled "
        "(env SHUTDOWN_GRACE_SECONDS; keep it below the pod's terminationGracePeriodSeconds)",
    )
    # Strict: a mistyped flag (in a chart, say) stops the predictor instead of being ignored.
    args = parser.parse_args()
    if args.max_faces < 1 or not 1 <= args.max_render_factor <= 100:
        parser.error("--max_faces must be >= 1 and --max_render_factor in 1..100")
    if min(args.max_output_pixels, args.max_batch_pixels) < 1:
        parser.error("--max_output_pixels and --max_batch_pixels must be >= 1")
    if args.bind_address and args.workers > 1:  # KServe's worker processes bind 0.0.0.0
        parser.error("--bind_address works with one HTTP worker (--workers 1)")
    return args


def task_options(args: argparse.Namespace) -> dict:
    """The settings only one task reads."""
    if args.task == "face-restore":
        return {"max_faces": args.max_faces}
    if args.task == "colorize":
        return {"max_render_factor": args.max_render_factor}
    return {}


def oip_name(task: str, model: str, default: str) -> str:
    """The OIP model name of `model`: the task for its default model, else `<task>-<model>`."""
    return task if model == default else f"{task}-{model}"


def build_models(args: argparse.Namespace) -> list[EnhanceModel]:
    """The models this process serves, the default first."""
    variant = args.variant or os.environ.get(archs.VARIANT_ENV[args.task]) or None
    names = [n.strip() for n in (args.models or "").split(",") if n.strip()]
    options = dict(
        allow_unverified=args.allow_unverified_weights or env_flag("ALLOW_UNVERIFIED_WEIGHTS"),
        device=choose_device(args.force_cpu),
        precision=args.precision,
        tile_batch=args.tile_batch,
        compile_net=args.compile,
        max_output_pixels=args.max_output_pixels,
        max_batch_pixels=args.max_batch_pixels,
        **task_options(args),
    )
    if names:
        default = variant or names[0]
        if default not in names:
            names.insert(0, default)
        names.sort(key=lambda n: n != default)
        return [
            MODELS[args.task](
                os.path.join(args.model_dir, name),
                name,
                name=oip_name(args.task, name, default),
                **options,
            )
            for name in names
        ]
    if variant is None and (variant := archs.variant_in_folder(args.task, args.model_dir)):
        logging.getLogger("predictors").info(
            "%s: no variant given; %s holds only %s's file: serving it",
            args.task,
            args.model_dir,
            variant,
        )
    # KServe's own --model_name (default "model"): the OIP name of a single model, the task
    # unless given; in the cluster <task>-<name> for a model that is not the task's default.
    name = args.model_name if args.model_name != KSERVE_DEFAULT_NAME else None
    model = MODELS[args.task](args.model_dir, variant, name=name, sha256=args.sha256, **options)
    return [model]


def load_all(models: list[EnhanceModel]) -> None:
    for model in models:
        model.load()


def main() -> None:
    try:
        args = parse_args()
    except ValueError as exc:  # a malformed setting in the environment (common/env.py)
        raise SystemExit(f"predictor: {exc}") from None
    configure_logging()  # LOG_FORMAT=text|json, LOG_LEVEL; before KServe's ModelServer
    models = build_models(args)
    server = PredictorServer(
        bind_address=args.bind_address, grace_period=max(1, round(args.shutdown_grace_seconds))
    )
    server.dataplane = PredictorDataPlane(server.registered_models)
    server.model_repository_extension = surface.ClosedRepository(server.registered_models)
    surface.install_routes(
        model_server.app, server.dataplane, max_body=args.grpc_max_receive_message_length
    )
    GracefulShutdown(models, args.shutdown_grace_seconds).install(model_server.app)
    for model in models:
        server.register_model(model)
    # Serve liveness at once; readiness follows the load (large checkpoints take a while).
    threading.Thread(target=load_all, args=(models,), name="load", daemon=True).start()
    server.start([])
    logging.getLogger("predictors").info("%s: stopped", args.task)
    # Everything is closed; the interpreter's own teardown (grpc's poller, torch) takes seconds
    # more, which the pod's grace period may not have.
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
