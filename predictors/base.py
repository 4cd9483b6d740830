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

from . import cancel, v2codec
from .v2codec import Param

log = logging.getLogger(__name__)


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


class EnhanceModel(Model):
    """A KServe model serving one task. Subclasses set `task`, `params` and `enhance`."""

    task: ClassVar[str]
    params: ClassVar[dict[str, Param]] = {}
    # Precision on CUDA; only families that are numerically safe in half precision lower it.
    cuda_dtype: ClassVar[torch.dtype] = torch.float32

    def __init__(
        self,
        model_dir: Path,
        variant: str | None = None,
        allow_unverified: bool = False,
        device: torch.device | None = None,
    ):
        super().__init__(self.task)
        self.model_dir = Path(model_dir)
        self.variant = variant or archs.DEFAULT_VARIANT[self.task]
        self.allow_unverified = allow_unverified
        self.device = device or choose_device()
        self.dtype = self.cuda_dtype if self.device.type == "cuda" else torch.float32
        self.load_error: str | None = None
        self.loaded: LoadedModel | None = None
        # One inference at a time per process: the event loop stays free for health checks,
        # and facexlib's detector keeps per-call state on itself.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.task)

    @property
    def net(self) -> torch.nn.Module:
        return self.loaded.descriptor.model

    def load(self) -> bool:
        try:
            self.loaded = archs.load_task_model(
                self.task, self.variant, self.model_dir, self.allow_unverified
            )
            self.loaded.descriptor.to(self.device, self.dtype)
            self.prepare()
        except (WeightsError, ValueError) as exc:
            self.load_error = str(exc)
            log.error("%s is not ready: %s", self.task, exc)
            return False
        except Exception as exc:  # e.g. facexlib failing on a helper network's file
            self.load_error = f"loading failed: {exc}"
            log.exception("%s is not ready: loading failed", self.task)
            return False
        self.ready = True
        log.info("%s/%s ready on %s (%s)", self.task, self.variant, self.device, self.dtype)
        return True

    def get_input_types(self) -> list[dict]:
        return [{"name": v2codec.IMAGE, "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]

    def get_output_types(self) -> list[dict]:
        return self.get_input_types()

    def prepare(self) -> None:
        """Model-specific setup after the network is loaded (helper networks, input size)."""

    def enhance(self, rgb: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, dict]:
        """One HxWx3 RGB uint8 image in, the result and response parameters out."""
        raise NotImplementedError

    def to_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 -> [1, 3, H, W] float in 0..1, on the host."""
        return torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255)

    @staticmethod
    def to_image(tensor: torch.Tensor) -> np.ndarray:
        """[1, 3, H, W] float in 0..1 -> HxWx3 uint8."""
        array = tensor[0].clamp_(0, 1).mul_(255).round_().byte().permute(1, 2, 0)
        return np.ascontiguousarray(array.numpy())

    def _enhance_batch(self, images: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
        outputs, totals = [], {}
        with torch.inference_mode():
            for rgb in images:
                cancel.check()
                out, extra = self.enhance(rgb, params)
                outputs.append(out)
                for key, value in extra.items():
                    totals[key] = totals.get(key, 0) + value
        shapes = {o.shape for o in outputs}
        if len(shapes) != 1:
            raise InvalidInput("the images of one batch gave results of different sizes")
        return np.stack(outputs), totals

    async def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None
    ) -> InferResponse:
        if not self.ready:  # KServe checks readiness on REST only
            raise NotLoaded(self.name, self.load_error or "the weights are still loading")
        if not isinstance(payload, InferRequest):
            raise InvalidInput("this model speaks the Open Inference Protocol v2 only")
        images = v2codec.decode_images(payload)
        params = v2codec.decode_parameters(payload.parameters, self.params)
        outputs, extra = await cancel.run_in_thread(
            self._executor, self.task, self._enhance_batch, images, params
        )
        # variant and device let the gateway's /health say what serves each task
        extra.update(variant=self.variant, device=self.device.type)
        return v2codec.encode_images(payload, self.name, outputs, extra)
