"""What the four predictors share: loading, device and precision, V2 in/out, parameters."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, InferResponse

import archs
from archs import LoadedModel, WeightsError
from common.limits import DEFAULT_MAX_OUTPUT_PIXELS

from . import cancel, progress, v2codec
from .v2codec import BadRequest, Param

log = logging.getLogger(__name__)


WARM_UP_SIDE = 64


def _refuse_non_finite(module: torch.nn.Module, inputs: Any, output: Any) -> None:
    """Forward hook of half-precision networks: NaN or inf anywhere raises NonFinite."""
    tensor = output[0] if isinstance(output, tuple | list) else output
    if output is not None and tensor.dtype != torch.float32 and not tensor.isfinite().all():
        raise NonFinite(f"{type(module).__name__} gave NaN or inf")


class NotLoaded(GrpcException):
    """The model is loading, failed to load, or is shutting down: gRPC UNAVAILABLE, REST 503
    (predictors/surface.py). Not KServe's ModelNotReady, whose handlers log a traceback."""

    status_code = StatusCode.UNAVAILABLE

    def __init__(self, model_name: str, detail: str):
        super().__init__(f"Model with name {model_name} is not ready. {detail}")


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def choose_device(force_cpu: bool = False) -> torch.device:
    if force_cpu or env_flag("FORCE_CPU") or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# An input brighter than this that comes back all zero is a half-precision failure, not a photo.
BLACK_INPUT_MAX = 8


class NonFinite(ArithmeticError):
    """A half-precision forward gave NaN or inf."""


def choose_dtype(precision: str, device: torch.device, half: torch.dtype) -> torch.dtype:
    """`auto`: the family's half precision on CUDA, fp32 elsewhere."""
    if precision == "auto":
        return half if device.type == "cuda" else torch.float32
    try:
        return PRECISIONS[precision]
    except KeyError:
        choices = ", ".join(["auto", *PRECISIONS])
        raise ValueError(f"precision must be one of {choices}, not {precision!r}") from None


def safe_half(descriptor: Any, wanted: torch.dtype) -> torch.dtype:
    """`--precision auto`: the wanted half precision where spandrel marks the architecture safe
    in it, else the other half precision that is safe, else fp32."""
    safe = {torch.float16: descriptor.supports_half, torch.bfloat16: descriptor.supports_bfloat16}
    if wanted == torch.float32 or safe[wanted]:
        return wanted
    other = torch.bfloat16 if wanted == torch.float16 else torch.float16
    return other if safe[other] else torch.float32


_EXECUTOR: ThreadPoolExecutor | None = None


def _process_executor() -> ThreadPoolExecutor:
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
    return _EXECUTOR


class EnhanceModel(Model):
    """A KServe model serving one task. Subclasses set `task`, `params` and `enhance`."""

    task: ClassVar[str]
    params: ClassVar[dict[str, Param]] = {}
    # What `--precision auto` uses on CUDA: bf16 unless the family is known to be fp16-safe.
    half_dtype: ClassVar[torch.dtype] = torch.bfloat16
    # channels_last memory on CUDA (no measurable gain on this project's CPU, so CUDA only).
    channels_last: ClassVar[bool] = False

    def __init__(
        self,
        model_dir: Path,
        variant: str | None = None,
        allow_unverified: bool = False,
        device: torch.device | None = None,
        precision: str = "auto",
        tile_batch: int = 1,
        compile_net: bool = False,
        max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
        max_batch_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
        name: str | None = None,
        sha256: str | None = None,
    ):
        # The OIP model name: the task for its default model, `<task>-<model>` for the others.
        super().__init__(name or self.task)
        self.model_dir = Path(model_dir)
        self.variant = variant or archs.DEFAULT_VARIANT[self.task]
        self.allow_unverified = allow_unverified
        self.sha256 = sha256
        self.device = device or choose_device()
        self.precision = precision
        self.dtype = choose_dtype(precision, self.device, self.half_dtype)
        self.tile_batch = max(1, tile_batch)
        self.compile_net = compile_net
        self.max_output_pixels = max_output_pixels
        self.max_batch_pixels = max_batch_pixels
        self.load_error: str | None = None
        self.loaded: LoadedModel | None = None
        self._fp32_now = False  # the guard's recomputation
        # One inference at a time per process, whatever the model: the event loop stays free
        # for health checks, and facexlib's detector keeps per-call state on itself.
        self._executor = _process_executor()

    @property
    def net(self) -> torch.nn.Module:
        return self.loaded.descriptor.model

    @property
    def tiling(self) -> dict[str, Any]:
        """The tiler's arguments that come from the server's settings."""
        return {"device": self.device, "tile_batch": self.tile_batch}

    def load(self) -> bool:
        try:
            self.loaded = archs.load_task_model(
                self.task, self.variant, self.model_dir, self.allow_unverified, self.sha256
            )
            if self.precision == "auto":
                self.dtype = safe_half(self.loaded.descriptor, self.dtype)
            if self.dtype != torch.float32:
                self._check_precision()
                self.net.register_forward_hook(_refuse_non_finite)
            self.loaded.descriptor.to(self.device)
            if self.channels_last and self.device.type == "cuda":
                self.net.to(memory_format=torch.channels_last)
            self.prepare()
            if self.compile_net:
                self.net.compile()
                self.warm_up()
        except (WeightsError, ValueError) as exc:
            self.load_error = str(exc)
            log.error("%s is not ready: %s", self.name, exc)
            return False
        except Exception as exc:  # e.g. facexlib failing on a helper network's file
            self.load_error = f"loading failed: {exc}"
            log.exception("%s is not ready: loading failed", self.name)
            return False
        self.ready = True
        log.info(
            "%s: %s/%s (%s) ready on %s (%s)",
            self.name,
            self.task,
            self.variant,
            self.loaded.detected,
            self.device,
            self.dtype,
        )
        return True

    def _check_precision(self) -> None:
        descriptor = self.loaded.descriptor
        safe = {
            torch.float16: descriptor.supports_half,
            torch.bfloat16: descriptor.supports_bfloat16,
        }
        if not safe[self.dtype]:
            raise ValueError(
                f"{descriptor.architecture.name} is not safe in {self.dtype}: use --precision auto"
            )

    def warm_up(self) -> None:
        """One small request, so that compilation happens before the model says it is ready."""
        grey = np.full((WARM_UP_SIDE, WARM_UP_SIDE, 3), 128, np.uint8)
        params = {name: p.default for name, p in self.params.items()}
        with torch.inference_mode():
            self.guarded_enhance(grey, params)

    @property
    def platform(self) -> str:
        """V2 model metadata's platform: the framework and the device ("pytorch-cuda"), so that
        a client (the gateway's /health) knows where the model runs before its first request."""
        return f"pytorch-{self.device.type}"

    def describe(self) -> dict[str, Any]:
        """The architecture and native scale, for the gateway's /health."""
        if self.loaded is None:
            return {}
        return {
            "architecture": self.loaded.detected.family,
            "native_scale": int(self.loaded.descriptor.scale),
        }

    @property
    def versions(self) -> list[str]:
        """V2 model metadata's versions: `<model>:<architecture>:x<scale>` once loaded."""
        found = self.describe()
        if not found:
            return []
        return [f"{self.variant}:{found['architecture']}:x{found['native_scale']}"]

    def get_input_types(self) -> list[dict]:
        return [{"name": v2codec.IMAGE, "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]

    def get_output_types(self) -> list[dict]:
        return self.get_input_types()

    def answer_size(self, height: int, width: int, params: dict[str, Any]) -> tuple[int, int]:
        """(height, width) of the answer to a height x width image with `params`."""
        return height, width

    def check_pixels(self, shape: list[int], params: dict[str, Any]) -> None:
        """Refuse (400 / INVALID_ARGUMENT) an image, or its answer, over MAX_OUTPUT_PIXELS, and a
        batch whose answers hold more than MAX_BATCH_PIXELS in all: the gateway's bounds, for
        clients that call the predictor directly (common/limits.py)."""
        count, height, width = shape[:3]
        out_h, out_w = self.answer_size(height, width, params)
        largest = max(height * width, out_h * out_w)
        if largest > self.max_output_pixels:
            raise BadRequest(
                f"the image is {width}x{height} and its answer would be {out_w}x{out_h}: "
                f"{largest:,} pixels, over this predictor's limit of {self.max_output_pixels:,} "
                "(MAX_OUTPUT_PIXELS); send a smaller image or ask for a smaller scale"
            )
        if count * out_h * out_w > self.max_batch_pixels:
            raise BadRequest(
                f"the batch's {count} images would answer {count * out_h * out_w:,} pixels in "
                f"all, over this predictor's limit of {self.max_batch_pixels:,} per request "
                "(MAX_BATCH_PIXELS); send fewer or smaller images per request"
            )

    def prepare(self) -> None:
        """Model-specific setup after the network is loaded (helper networks, input size)."""

    def enhance(self, rgb: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, dict]:
        """One HxWx3 RGB uint8 image in, the result and response parameters out."""
        raise NotImplementedError

    @staticmethod
    def to_tensor(rgb: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 -> a [1, 3, H, W] uint8 view of it (the tiler converts tile by tile).

        A request's photo is a read-only view of the received message (v2grpc.py), which torch
        does not wrap ("the given NumPy array is not writable", once per process): that one is
        copied first (12 MB for a 2048 px photo, small beside the network's work on it)."""
        if not rgb.flags.writeable:
            rgb = rgb.copy()
        return torch.from_numpy(rgb).permute(2, 0, 1)[None]

    def half_precision(self) -> torch.autocast:
        """Autocast to the chosen half precision around a network call (weights stay fp32).
        Only around our network: facexlib's helpers and numpy conversions need fp32."""
        enabled = self.dtype != torch.float32 and not self._fp32_now
        return torch.autocast(self.device.type, self.dtype, enabled=enabled)

    def run_net(self, image: torch.Tensor) -> torch.Tensor:
        """The spandrel model on [N, C, H, W] in 0..1, in the chosen precision."""
        if self.channels_last and image.is_cuda:
            image = image.contiguous(memory_format=torch.channels_last)
        with self.half_precision():
            return self.loaded.descriptor(image)

    def guarded_enhance(self, rgb: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
        """`enhance`; in half precision, an answer with NaN/inf, or black for a photo that is
        not, is computed again in fp32."""
        if self.dtype == torch.float32:
            return self.enhance(rgb, params)
        try:
            out, extra = self.enhance(rgb, params)
            if out.max() > 0 or rgb.max() <= BLACK_INPUT_MAX:
                return out, extra
            problem = "an all-black answer"
        except NonFinite:
            problem = "NaN or inf"
        log.warning("%s in %s gave %s: recomputing in fp32", self.task, self.dtype, problem)
        self._fp32_now = True
        try:
            return self.enhance(rgb, params)
        finally:
            self._fp32_now = False

    def _enhance_batch(self, images: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
        outputs, totals = [], {}
        with torch.inference_mode():
            for index, rgb in enumerate(images):
                cancel.check()
                progress.image(index, len(images))
                out, extra = self.guarded_enhance(rgb, params)
                outputs.append(out)
                for key, value in extra.items():
                    totals[key] = totals.get(key, 0) + value
        shapes = {o.shape for o in outputs}
        if len(shapes) != 1:
            raise InvalidInput("the images of one batch gave results of different sizes")
        if len(outputs) == 1:  # the usual case: a view, not a copy of a possibly 200 MB answer
            return outputs[0][np.newaxis], totals
        return np.stack(outputs), totals

    async def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None
    ) -> InferResponse:
        if not self.ready:  # KServe checks readiness on REST only
            raise NotLoaded(self.name, self.load_error or "the weights are still loading")
        if not isinstance(payload, InferRequest):
            raise BadRequest("this model speaks the Open Inference Protocol v2 only")
        tensor, shape = v2codec.image_input(payload)
        params = v2codec.decode_parameters(payload.parameters, self.params)
        self.check_pixels(shape, params)  # from the shape alone, before the data is read
        images = v2codec.decode_tensor(tensor, shape)
        outputs, extra = await cancel.run_in_thread(
            self._executor, self.task, self._enhance_batch, images, params
        )
        # variant and device let the gateway's /health say what serves each task
        extra.update(variant=self.variant, device=self.device.type, **self.describe())
        return v2codec.encode_images(payload, self.name, outputs, extra)
