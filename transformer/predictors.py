"""V2 (Open Inference Protocol) gRPC clients for the four task predictors.

One `kserve.InferenceGRPCClient` per predictor replica (replicas.py; KServe's own client factory
caches a single client for the whole process); a call goes to the least busy replica that is
up, and to another one when that one is busy or fails, before any 503. Images travel as
`UINT8 [1, H, W, 3]` raw tensor contents, never as number lists. gRPC failures become the
contract's statuses: 503 (with Retry-After) when no replica is reachable with its model
ready, 504 when it does not answer in time; 503 without Retry-After for a task that has no
predictor address (this gateway does not offer it).

Each call waits its turn in the task's queue (admission.py) and carries the request's time left
as its gRPC deadline (budget.py); cancelling the awaiting task cancels the call. A call made for
a job with a progress listener (progress.py) goes over ModelStreamInfer instead of ModelInfer,
with the same request bytes, queue, deadline and errors, and gives the same answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from kserve.protocol.grpc.grpc_predict_v2_pb2 import InferParameter, ModelInferRequest

from common.limits import BUSY_DETAIL

from . import budget, catalog, metrics, progress
from .admission import Admission
from .config import ADDRESS_ENV, Settings, flag_name, parse_target
from .errors import GatewayError, not_offered
from .replicas import Replica, ReplicaSet
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
# Every replica tried said busy (their own caps, other gateways' calls): wait this long, again.
BUSY_WAIT_S = 0.05
# gRPC's default reconnect backoff grows to 120 s: a predictor that restarts after a minute away
# would sit unused for up to a minute more. Its address is ours and cheap to dial: retry often.
# (grpc.min_reconnect_backoff_ms stays unset: gRPC uses it as the connect timeout, 20 s.)
RECONNECT_BACKOFF_MS = {
    "grpc.initial_reconnect_backoff_ms": 250,
    "grpc.max_reconnect_backoff_ms": 1000,
}
# What a client is told (no address, no gRPC status name: those go to the log).
_WHY_UNAVAILABLE = {
    grpc.StatusCode.UNAVAILABLE: "its server cannot be reached (starting, restarting or down)",
    grpc.StatusCode.NOT_FOUND: "its server does not serve it yet (still loading)",
    # The predictor's side ended the call (our own cancellations raise CancelledError, not an
    # RpcError); it did under an HTTP/2 rapid-reset flood of its port (issue 19).
    grpc.StatusCode.CANCELLED: "its server ended the call (overloaded or restarting)",
}
_UNAVAILABLE = tuple(_WHY_UNAVAILABLE)
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
    _replicas: dict[str, ReplicaSet] = field(default_factory=dict)
    reported: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant/device seen
    _was_ready: dict[str, bool] = field(default_factory=dict)
    _ever_ready: set[str] = field(default_factory=set)  # ready at least once since the start
    _unary_only: set[str] = field(default_factory=set)  # tasks whose predictor cannot stream

    def __post_init__(self) -> None:
        if self.admission is None:
            s = self.settings
            self.admission = Admission(self._concurrency(1), s.max_queue_per_task)

    def _concurrency(self, replicas_up: int) -> int:
        """Calls at once for a task: MAX_INFLIGHT_PER_REPLICA per replica up (one replica's
        worth when none is: those calls find out at once), at most MAX_INFLIGHT_PER_TASK."""
        s = self.settings
        calls = s.max_inflight_per_replica * max(1, replicas_up)
        return min(calls, s.max_inflight_per_task or calls)

    def _unavailable(self, task: str, why: str, internal: str) -> GatewayError:
        return GatewayError(
            503,
            f"the {task} model is not available: {why}; retry later",
            {"Retry-After": str(self.settings.retry_after_s)},
            internal=internal,
        )

    def _client(self, address: str) -> RawTensorClient:
        limit = self.settings.grpc_max_message
        return RawTensorClient(
            address,
            channel_args=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
                *RECONNECT_BACKOFF_MS.items(),
            ],
            timeout=self.settings.predictor_timeout_s,
            retries=2,  # retried only on UNAVAILABLE (kserve's retry policy)
        )

    def replicas(self, task: str, model: str | None = None) -> ReplicaSet:
        """The replicas of the task's model (its default when None), keyed by the model's OIP
        name; 503 for a task this gateway does not offer."""
        address = self.settings.address(task, model)
        if not address:
            raise not_offered(task, f"{ADDRESS_ENV[task]} or --{flag_name(task)}")
        name = self.settings.oip_name(task, model)
        replicas = self._replicas.get(name)
        if replicas is None:
            replicas = ReplicaSet(
                name, parse_target(address), self._client, lambda: self._replicas_changed(name)
            )
            self._replicas[name] = replicas
            self._replicas_changed(name)
        return replicas

    def _replicas_changed(self, name: str) -> None:
        up = self._replicas[name].up
        metrics.REPLICAS_UP.labels(name).set(up)
        self.admission.queue(name).set_concurrency(self._concurrency(up))

    async def infer(
        self,
        task: str,
        image: np.ndarray,
        parameters: dict[str, Any],
        model: str | None = None,
    ) -> Answer:
        """Send one uint8 [H, W, 3] RGB image to the predictor of the task's model (its default
        when None); its image comes back. Calls, queues and metrics go by the model's OIP name
        (`upscale`, `upscale-span-x4`)."""
        replicas = self.replicas(task, model)
        name = replicas.task  # the model's OIP name
        try:
            await replicas.ready_to_pick()
        except TimeoutError:
            why = "its predictors' name does not resolve (no answer from DNS)"
            raise self._unavailable(name, why, f"{replicas.target.dns} did not resolve") from None
        tensor = ModelInferRequest.InferInputTensor(
            name=IMAGE, datatype="UINT8", shape=[1, *image.shape]
        )
        message = ModelInferRequest(
            model_name=name,
            id=str(uuid.uuid4()),
            inputs=[tensor],
            parameters={key: to_parameter(value) for key, value in parameters.items()},
        )
        request = encode_request(message, [image])
        request_budget = budget.current.get()
        listener = progress.current.get()
        async with self.admission.queue(name).slot(request_budget):
            start = time.perf_counter()
            outcome = "error"
            try:
                response = await self._on_a_replica(
                    replicas, request, listener, request_budget, task
                )
                outcome = "ok"
            except grpc.RpcError as exc:
                outcome = exc.code().name.lower() if hasattr(exc, "code") else "error"
                raise self._map_error(name, exc) from None
            except StreamError as exc:  # a predictor that does not honour triton_grpc_error
                raise RuntimeError(f"{name} predictor failed: {exc}") from None
            except asyncio.CancelledError:
                outcome = "cancelled"  # the client hung up: grpc.aio cancelled the call
                raise
            finally:
                elapsed = time.perf_counter() - start
                metrics.PREDICTOR_SECONDS.labels(name, outcome).observe(elapsed)
        answer = self._image_of(name, response)
        params = {k: from_parameter(v) for k, v in response.message.parameters.items()}
        seen = {
            k: params[k]
            for k in ("variant", "device", "architecture", "native_scale")
            if params.get(k)
        }
        if seen:
            self.reported[name] = seen
        return Answer(answer, params, elapsed)

    async def _on_a_replica(
        self,
        replicas: ReplicaSet,
        request: bytes,
        listener: progress.Listener | None,
        request_budget: budget.Budget | None,
        step: str,
    ) -> Reply:
        """The call at the least busy replica up; at another one when it is busy or fails
        (UNAVAILABLE, model not ready). Raises the last failure when every replica failed, and
        waits and tries again while they are busy, within the call's time. `step`: the task,
        as progress listeners know it."""
        task = replicas.task
        # The request's own time (a job's is JOB_TIMEOUT_S, longer than PREDICTOR_TIMEOUT_S).
        if request_budget is not None:
            left = request_budget.check(f"before the {task} step started")
        else:
            left = self.settings.predictor_timeout_s
        deadline = time.monotonic() + left
        tried: set[Replica] = set()
        failure: grpc.RpcError | None = None
        busy = False  # some replica tried since the last wait said busy
        while True:
            replica = replicas.pick(tried)
            if replica is None and busy and time.monotonic() < deadline:
                await asyncio.sleep(BUSY_WAIT_S)
                tried.clear()
                busy = False
                continue
            if failure is None and replica is None:  # a dns:/// name without addresses
                why = "its predictors' name does not resolve (none ready, or a wrong name)"
                raise self._unavailable(task, why, f"{replicas.target.dns}: no address")
            if replica is None or time.monotonic() >= deadline:
                raise failure  # every replica was tried, or was busy until now
            tried.add(replica)
            timeout = deadline - time.monotonic()
            replica.inflight += 1
            try:
                response = await self._call(replica.client, task, request, listener, timeout, step)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED and _busy(exc):
                    replicas.busy(replica)
                    busy = True
                elif code in _UNAVAILABLE:
                    replicas.failed(replica, f"{code.name}: {exc.details()}")
                else:
                    raise
                failure = exc
                continue
            finally:
                replica.inflight -= 1
                replicas.done(replica)
            replicas.answered(replica)
            return response

    async def _call(
        self,
        client: RawTensorClient,
        task: str,
        request: bytes,
        listener: progress.Listener | None,
        timeout: float,
        step: str,
    ) -> Reply:
        """ModelStreamInfer when someone listens to progress, else (or when the predictor has no
        stream: any OIP v2 server of KServe's own) the unary ModelInfer."""
        if listener is None or task in self._unary_only:
            return await client.infer(request, timeout=timeout)
        try:
            return await client.stream_infer(
                request, self._progress_to(listener, step), timeout=timeout
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
        target = self._replicas[task].target if task in self._replicas else None
        address = target and (target.dns or ",".join(target.addresses))
        if code in _UNAVAILABLE:  # the address and gRPC status go to the log, not the client
            why = _WHY_UNAVAILABLE[code]
            return self._unavailable(task, why, f"its predictor at {address} answered {code.name}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and _busy(exc):
            return GatewayError(
                504,
                f"every {task} predictor replica stayed busy for "
                f"{self.settings.predictor_timeout_s:g} s (PREDICTOR_TIMEOUT_S); retry later",
            )
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
            return self._unavailable(
                task, "its server is overloaded", f"its predictor at {address} is overloaded"
            )
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return GatewayError(400, f"the {task} model refused the request: {details}")
        # Anything else is ours to fix: logged with the details, answered as a plain 500.
        return RuntimeError(f"{task} predictor at {address} failed: {code}: {details}")

    async def ready(self, task: str, model: str | None = None) -> tuple[bool, str]:
        """(ready, why not) from the V2 ModelReady of each replica: ready when one is."""
        if not self.settings.address(task, model):
            return False, f"not configured (no predictor address in {ADDRESS_ENV[task]})"
        replicas = self.replicas(task, model)
        task = replicas.task  # the OIP name
        try:
            await replicas.ready_to_pick()
        except TimeoutError:
            return False, f"{replicas.target.dns} did not resolve"
        members = list(replicas.replicas.values())
        results = await asyncio.gather(*(replicas.probe(r) for r in members))
        ok = any(ready for ready, _ in results)
        if ok and not self._was_ready.get(task):  # newly ready, maybe a new process
            self._unary_only.discard(task)
            first = next(r for r, (ready, _) in zip(members, results, strict=True) if ready)
            with contextlib.suppress(grpc.RpcError):  # else learnt at the next check
                await self._learn_device(task, first.client)
        self._was_ready[task] = ok
        if ok:
            self._ever_ready.add(task)
        if ok or not members:
            return ok, "" if members else f"{replicas.target.dns} resolves to no address"
        whys = zip(members, results, strict=True)
        return False, "; ".join(f"predictor at {r.address}: {w}" for r, (_, w) in whys)

    def state(self, task: str, ready: bool, model: str | None = None) -> str:
        """/health's `state`, for people: ready; starting (never ready yet since this gateway
        started: loading, or its server not up yet); unavailable (it was ready, and is not now:
        down or restarting); not offered (no predictor address)."""
        if not self.settings.address(task, model):
            return "not offered"
        if ready:
            return "ready"
        name = self.settings.oip_name(task, model)
        return "unavailable" if name in self._ever_ready else "starting"

    async def _learn_device(self, name: str, client: RawTensorClient) -> None:
        platform, versions = await client.metadata(name, timeout=HEALTH_TIMEOUT_S)
        framework, _, device = platform.partition("-")
        seen = self.reported.setdefault(name, {})
        if framework == "pytorch" and device:
            seen["device"] = device
        for version in versions[:1]:  # "<model>:<architecture>:x<scale>"
            parts = version.split(":")
            if len(parts) == 3 and parts[2].startswith("x") and parts[2][1:].isdigit():
                seen["architecture"], seen["native_scale"] = parts[1], int(parts[2][1:])

    async def _model_health(self, task: str, model: str) -> dict[str, Any]:
        ok, why = await self.ready(task, model)
        name = self.settings.oip_name(task, model)
        seen = self.reported.get(name, {})
        entry = {
            "name": model,
            "oip_name": name,
            "default": model == self.settings.variants[task],
            "ready": ok,
            "state": self.state(task, ok, model),
            "variant": seen.get("variant", model),
            "architecture": seen.get("architecture"),
            "scale": seen.get("native_scale"),
            "device": seen.get("device", "unknown"),
            "predictor": self.settings.address(task, model),
            "about": catalog.about(task, model, seen.get("architecture")),
        }
        if name in self._replicas:
            replicas = self._replicas[name]
            entry["replicas"] = {"up": replicas.up, "known": len(replicas.replicas)}
        if why:
            entry["detail"] = why
        return entry

    async def health(self, tasks: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """Per task: its default model's entry (the fields /health always had) and `models`,
        every model of the task with its state, architecture, scale and licence note."""
        pairs = [(task, model) for task in tasks for model in self.settings.models_of(task)]
        entries = await asyncio.gather(*(self._model_health(t, m) for t, m in pairs))
        report: dict[str, dict[str, Any]] = {}
        for (task, _), entry in zip(pairs, entries, strict=True):
            if task not in report:  # the default model, first of models_of
                report[task] = {k: v for k, v in entry.items() if k not in ("name", "default")}
                report[task]["models"] = []
            report[task]["models"].append(entry)
        return report

    async def close(self) -> None:
        for replicas in self._replicas.values():
            await replicas.close()
        self._replicas.clear()


def _busy(exc: grpc.RpcError) -> bool:
    """A predictor at its own in-flight cap (CONTRACT section 8): try another replica."""
    details = exc.details() if hasattr(exc, "details") else ""
    return (details or "").startswith(BUSY_DETAIL)
