"""V2 (Open Inference Protocol) gRPC clients for the four task predictors.

One `kserve.InferenceGRPCClient` per task (KServe's own client factory caches a single client for
the whole process). Images travel as `UINT8 [1, H, W, 3]` raw tensor contents, never as number
lists. gRPC failures become the contract's statuses: 503 (with Retry-After) when the predictor is
unreachable or its model is not ready, 504 when it does not answer in time; 503 without
Retry-After for a task that has no predictor address (this gateway does not offer it).

Each call waits its turn in the task's queue (admission.py) and carries the request's time left
as its gRPC deadline (budget.py); cancelling the awaiting task cancels the call. A call made for
a job with a progress listener (progress.py) goes over ModelStreamInfer instead of ModelInfer,
with the same request bytes, queue, deadline and errors, and gives the same answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from kserve import InferenceGRPCClient
from kserve.protocol.grpc.grpc_predict_v2_pb2 import InferParameter, ModelInferRequest

from . import budget, metrics, progress
from .admission import Admission
from .config import ADDRESS_ENV, Settings, flag_name
from .errors import GatewayError, not_offered
from .v2wire import Progress, RawTensorClient, Reply, StreamError, encode_request

logger = logging.getLogger("transformer.predictors")


class _QuietClientFailures(logging.Filter):
    """kserve's gRPC client logs a traceback for every failed call (a predictor still loading,
    one that is down); the gateway answers those with 503/504 and logs its own line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Failed to infer", "Failed to get"))


# kserve.inference_client logs through `kserve.trace` (a logger's filters do not apply to its
# children's records, so the filter goes on the very logger that logs).
logging.getLogger("kserve.trace").addFilter(_QuietClientFailures())

IMAGE = "image"
HEALTH_TIMEOUT_S = 3.0
# gRPC's default reconnect backoff grows to 120 s: a predictor that restarts after a minute away
# would sit unused for up to a minute more. Its address is ours and cheap to dial: retry often.
# (grpc.min_reconnect_backoff_ms stays unset: gRPC uses it as the connect timeout, 20 s.)
RECONNECT_BACKOFF_MS = {
    "grpc.initial_reconnect_backoff_ms": 250,
    "grpc.max_reconnect_backoff_ms": 1000,
}
# CANCELLED: the predictor's side ended the call (our own cancellations raise CancelledError,
# not an RpcError); it did under an HTTP/2 rapid-reset flood of its port (issue 19).
_UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.CANCELLED)
# A server without ModelStreamInfer answers UNIMPLEMENTED; when it does so while our request is
# still being sent, grpc's core reports INTERNAL ("Internal error from Core") instead. Either way
# the unary call is tried (a real failure then fails there too).
_NO_STREAM = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL)


def to_parameter(value: Any) -> InferParameter:
    """A Python value as a V2 gRPC parameter. KServe's proto has no double field (Triton's has):
    a float travels as its decimal string, which the predictors parse (CONTRACT section 2)."""
    if isinstance(value, bool):
        return InferParameter(bool_param=value)
    if isinstance(value, int):
        return InferParameter(int64_param=value)
    if isinstance(value, float):
        return InferParameter(string_param=repr(value))
    if isinstance(value, str):
        return InferParameter(string_param=value)
    raise TypeError(f"unsupported parameter type {type(value).__name__}")


def from_parameter(value: Any) -> Any:
    if isinstance(value, InferParameter):
        kind = value.WhichOneof("parameter_choice")
        return getattr(value, kind) if kind else None
    return value


@dataclass
class Answer:
    image: np.ndarray  # uint8 [H, W, 3]
    parameters: dict[str, Any]
    seconds: float


@dataclass
class Predictors:
    """The gRPC clients, created on first use inside the running event loop."""

    settings: Settings
    admission: Admission | None = None
    _clients: dict[str, InferenceGRPCClient] = field(default_factory=dict)
    reported: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant/device seen
    _was_ready: dict[str, bool] = field(default_factory=dict)
    _unary_only: set[str] = field(default_factory=set)  # tasks whose predictor cannot stream

    def __post_init__(self) -> None:
        if self.admission is None:
            s = self.settings
            self.admission = Admission(s.max_inflight_per_task, s.max_queue_per_task)

    def _unavailable(self, task: str, why: str) -> GatewayError:
        return GatewayError(
            503,
            f"the {task} model is not available: {why}; retry later",
            {"Retry-After": str(self.settings.retry_after_s)},
        )

    def client(self, task: str) -> InferenceGRPCClient:
        address = self.settings.addresses.get(task)
        if not address:
            raise not_offered(task, f"{ADDRESS_ENV[task]} or --{flag_name(task)}")
        client = self._clients.get(task)
        if client is None:
            limit = self.settings.grpc_max_message
            client = RawTensorClient(
                address,
                channel_args=[
                    ("grpc.max_send_message_length", limit),
                    ("grpc.max_receive_message_length", limit),
                    *RECONNECT_BACKOFF_MS.items(),
                ],
                timeout=self.settings.predictor_timeout_s,
                retries=2,  # retried only on UNAVAILABLE (kserve's retry policy)
            )
            self._clients[task] = client
        return client

    async def infer(self, task: str, image: np.ndarray, parameters: dict[str, Any]) -> Answer:
        """Send one uint8 [H, W, 3] RGB image to the task's predictor; its image comes back."""
        client = self.client(task)
        tensor = ModelInferRequest.InferInputTensor(
            name=IMAGE, datatype="UINT8", shape=[1, *image.shape]
        )
        message = ModelInferRequest(
            model_name=task,
            id=str(uuid.uuid4()),
            inputs=[tensor],
            parameters={key: to_parameter(value) for key, value in parameters.items()},
        )
        request = encode_request(message, [image])
        request_budget = budget.current.get()
        listener = progress.current.get()
        async with self.admission.queue(task).slot(request_budget):
            timeout = self.settings.predictor_timeout_s
            if request_budget is not None:
                timeout = request_budget.check(f"before the {task} step started")
            start = time.perf_counter()
            outcome = "error"
            try:
                response = await self._call(client, task, request, listener, timeout)
                outcome = "ok"
            except grpc.RpcError as exc:
                outcome = exc.code().name.lower() if hasattr(exc, "code") else "error"
                raise self._map_error(task, exc) from None
            except StreamError as exc:  # a predictor that does not honour triton_grpc_error
                raise RuntimeError(f"{task} predictor failed: {exc}") from None
            except asyncio.CancelledError:
                outcome = "cancelled"  # the client hung up: grpc.aio cancelled the call
                raise
            finally:
                elapsed = time.perf_counter() - start
                metrics.PREDICTOR_SECONDS.labels(task, outcome).observe(elapsed)
        answer = self._image_of(task, response)
        params = {k: from_parameter(v) for k, v in response.message.parameters.items()}
        seen = {k: params[k] for k in ("variant", "device") if params.get(k)}
        if seen:
            self.reported[task] = seen
        return Answer(answer, params, elapsed)

    async def _call(
        self,
        client: RawTensorClient,
        task: str,
        request: bytes,
        listener: progress.Listener | None,
        timeout: float,
    ) -> Reply:
        """ModelStreamInfer when someone listens to progress, else (or when the predictor has no
        stream: any OIP v2 server of KServe's own) the unary ModelInfer."""
        if listener is None or task in self._unary_only:
            return await client.infer(request, timeout=timeout)
        try:
            return await client.stream_infer(
                request, self._progress_to(listener, task), timeout=timeout
            )
        except grpc.RpcError as exc:
            if exc.code() not in _NO_STREAM:
                raise
        logger.info("%s: the predictor has no ModelStreamInfer; no progress within its step", task)
        self._unary_only.add(task)  # until the predictor is ready again (maybe a new version)
        return await client.infer(request, timeout=timeout)

    @staticmethod
    def _progress_to(listener: progress.Listener, task: str):
        """The stream's progress handler: each report to `listener`, whose failure is logged
        and does not fail the call."""

        def report(update: Progress) -> None:
            if not 0 <= update.done <= update.total or update.total < 1:
                logger.warning("%s: progress %s ignored (not 0 <= done <= total)", task, update)
                return
            try:
                listener(task, update.done, update.total, update.stage)
            except Exception:
                logger.exception("%s: the progress listener failed", task)

        return report

    def _image_of(self, task: str, response: Reply) -> np.ndarray:
        """The answer's image: a read-only view into the received message, not a copy."""
        outputs = list(response.message.outputs)
        index = next((i for i, o in enumerate(outputs) if o.name == IMAGE), 0)
        if not outputs or len(response.raw_outputs) != len(outputs):
            raise RuntimeError(f"the {task} predictor answered without a raw output tensor")
        output, raw = outputs[index], response.raw_outputs[index]
        shape = list(output.shape)
        if output.datatype != "UINT8" or len(shape) != 4 or shape[-1] != 3 or shape[0] < 1:
            raise RuntimeError(
                f"the {task} predictor answered {output.datatype} {shape}, "
                "expected UINT8 [1, H, W, 3]"
            )
        if len(raw) != np.prod(shape):
            raise RuntimeError(f"the {task} predictor answered {len(raw)} bytes for {shape}")
        return np.frombuffer(raw, np.uint8).reshape(shape)[0]

    def _map_error(self, task: str, exc: grpc.RpcError) -> Exception:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        address = self.settings.addresses.get(task)
        if code in _UNAVAILABLE:
            return self._unavailable(task, f"its predictor at {address} answered {code.name}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return GatewayError(
                504,
                f"the {task} model did not answer within {self.settings.predictor_timeout_s:g} s "
                "(PREDICTOR_TIMEOUT_S); try a smaller image or a smaller tile_size",
            )
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
            # bounds.py should have refused it first
            return GatewayError(413, f"the {task} step's image is over a message limit: {details}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # its server's own bounds (flooded)
            return self._unavailable(task, f"its predictor at {address} is overloaded")
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return GatewayError(400, f"the {task} model refused the request: {details}")
        # Anything else is ours to fix: logged with the details, answered as a plain 500.
        return RuntimeError(f"{task} predictor at {address} failed: {code}: {details}")

    async def ready(self, task: str) -> tuple[bool, str]:
        """(ready, why not) from the predictor's V2 ModelReady."""
        if not self.settings.addresses.get(task):
            return False, f"not configured (no predictor address in {ADDRESS_ENV[task]})"
        client = self.client(task)
        try:
            ok = await client.is_model_ready(task, timeout=HEALTH_TIMEOUT_S)
            if ok and not self._was_ready.get(task):  # newly ready, maybe a new process
                self._unary_only.discard(task)
                await self._learn_device(task, client)
        except grpc.RpcError as exc:
            ok = False
            code = exc.code().name if hasattr(exc, "code") else "error"
            why = f"predictor at {self.settings.addresses[task]}: {code}"
            if code == "UNAVAILABLE":  # e.g. make run restarting it, or its pod rescheduled
                why += " (not reachable: down or restarting)"
        else:
            why = "" if ok else "model loading or failed to load (see the predictor's log)"
        self._was_ready[task] = ok
        return ok, why

    async def _learn_device(self, task: str, client: RawTensorClient) -> None:
        platform = await client.platform(task, timeout=HEALTH_TIMEOUT_S)
        framework, _, device = platform.partition("-")
        if framework == "pytorch" and device:
            self.reported.setdefault(task, {})["device"] = device

    async def health(self, tasks: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        results = await asyncio.gather(*(self.ready(task) for task in tasks))
        report = {}
        for task, (ok, why) in zip(tasks, results, strict=True):
            seen = self.reported.get(task, {})
            entry = {
                "ready": ok,
                "variant": seen.get("variant", self.settings.variants.get(task)),
                "device": seen.get("device", "unknown"),
                "predictor": self.settings.addresses.get(task),
            }
            if why:
                entry["detail"] = why
            report[task] = entry
        return report

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
