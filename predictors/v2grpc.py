"""The predictors' gRPC server: KServe's, with ModelInfer's tensors read and written as bytes,
and Triton's ModelStreamInfer (which KServe does not serve) for progress.

KServe's servicer answers with `InferResponse.to_grpc()`: the answer image is copied by
`tobytes()`, again into the protobuf message and again when gRPC serializes it (bench/transport.py:
about 0.45 s and 600 MB of peak memory for the 200 MB x4 answer to a 2048 px photo); the photo
in the request is copied twice too (protobuf's parse, then its bytes field). Here ModelInfer
reads and writes the message itself (common/protowire.py): the photo is a view of the received
bytes, and the answer is joined beside protobuf's small fields, one copy. Every other method,
interceptor and option is KServe's.

ModelStreamInfer is Triton's decoupled form (CONTRACT section 6): for each request on the
stream, zero or more progress responses (`progress_done`, `progress_total`, `progress_stage`,
`triton_final_response=false`), then the answer with `triton_final_response=true`, each a
ModelStreamInferResponse around a ModelInferResponse that echoes the request's id. The answer
is the same bytes ModelInfer would send, wrapped in the same join. Requests on one stream run as
they arrive (the model's own queue orders them). Errors follow Triton: by default a request's
error is a response with `error_message` ("[request id: ID] reason") and the stream goes on;
with the request header `triton_grpc_error: true` the first error ends the stream with its gRPC
status, as ModelInfer would answer it (the gateway asks so). Ending the stream (the client
cancels it, or its deadline passes) stops its requests' work as a unary call's end does.

MAX_INFLIGHT (environment; 0, the default, is no cap) bounds the inferences in progress on this
server over both RPCs: one more is answered RESOURCE_EXHAUSTED "busy: ..." at once (CONTRACT
section 8), which a gateway takes as "try another replica". Each gateway counts only its own
calls; this cap keeps a replica within it whatever the number of gateways.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from grpc import aio
from grpc_interceptor.exceptions import GrpcException, ResourceExhausted
from kserve import ModelServer, model_server
from kserve.errors import InvalidInput, ModelNotFound
from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest, ModelInferResponse
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferRequest, InferResponse, to_grpc_parameters
from kserve.utils.utils import to_headers

from common.limits import BUSY_DETAIL
from common.protowire import join_bytes_field, join_nested, length_delimited, split_bytes_field

from . import progress
from .limits import env_int

log = logging.getLogger(__name__)
SERVICE = "inference.GRPCInferenceService"
_RAW_INPUT = ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number
_RAW_OUTPUT = ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number
# Triton's grpc_service.proto: message ModelStreamInferResponse { string error_message = 1;
# ModelInferResponse infer_response = 2; } (KServe's proto has neither the message nor the RPC).
STREAM_ERROR_MESSAGE = 1
STREAM_INFER_RESPONSE = 2
FINAL = "triton_final_response"
STRICT_ERRORS_HEADER = "triton_grpc_error"  # "true": an error ends the stream with its status


def decode_request(data: bytes) -> InferRequest:
    """A serialized ModelInferRequest as KServe's InferRequest, raw inputs as views of `data`."""
    try:
        rest, raw = split_bytes_field(data, _RAW_INPUT)
        message = ModelInferRequest.FromString(rest)
    except (ValueError, DecodeError) as exc:
        raise InvalidInput(f"the request is not a ModelInferRequest: {exc}") from None
    if raw and len(raw) != len(message.inputs):  # KServe's own checks, on the split-off count
        raise InvalidInput(
            f"the number of inputs ({len(message.inputs)}) does not match the number of raw "
            f"input contents ({len(raw)}) for model '{message.model_name}'."
        )
    if raw and any(tensor.HasField("contents") for tensor in message.inputs):
        raise InvalidInput("contents must not be given beside raw_input_contents")
    parsed = InferRequest.from_grpc(message)
    return InferRequest(
        parsed.model_name,
        parsed.inputs,
        parsed.id,
        raw_inputs=raw,
        from_grpc=True,
        parameters=parsed.parameters,
        request_outputs=parsed.request_outputs,
        model_version=parsed.model_version,
    )


def _with_parameters(message: ModelInferResponse, extra: dict) -> ModelInferResponse:
    if extra:
        copy = ModelInferResponse()
        copy.CopyFrom(message)
        for key, value in to_grpc_parameters(extra).items():
            copy.parameters[key].CopyFrom(value)
        return copy
    return message


def _response_parts(
    response: InferResponse | ModelInferResponse, extra: dict | None = None
) -> tuple[bytes, list[np.ndarray]]:
    """(the ModelInferResponse without its raw outputs, serialized; the raw outputs), with
    `extra` response parameters added."""
    extra = extra or {}
    if isinstance(response, ModelInferResponse):
        return _with_parameters(response, extra).SerializeToString(), []
    tensors = [output.data for output in response.outputs]
    if not all(isinstance(t, np.ndarray) and not t.dtype.hasobject for t in tensors):
        message = _with_parameters(response.to_grpc(), extra)  # lists or BYTES: KServe's encoding
        return message.SerializeToString(), []

    def parameters(values):
        return to_grpc_parameters(values) if values else None

    outputs = [
        {
            "name": o.name,
            "shape": o.shape,
            "datatype": o.datatype,
            "parameters": parameters(o.parameters),
        }
        for o in response.outputs
    ]
    message = ModelInferResponse(
        id=response.id,
        model_name=response.model_name,
        model_version=response.model_version,
        outputs=outputs,
        parameters=parameters({**(response.parameters or {}), **extra}),
    )
    return message.SerializeToString(), [np.ascontiguousarray(t) for t in tensors]


def encode_response(response: InferResponse | ModelInferResponse) -> bytes:
    """The serialized ModelInferResponse, numpy outputs as raw_output_contents without copies."""
    message, tensors = _response_parts(response)
    return join_bytes_field(message, _RAW_OUTPUT, tensors)


def encode_stream_answer(response: InferResponse | ModelInferResponse) -> bytes:
    """A ModelStreamInferResponse with the answer (`triton_final_response=true`) as its
    infer_response: ModelInfer's bytes, written in the same one join."""
    message, tensors = _response_parts(response, {FINAL: True})
    return join_nested(STREAM_INFER_RESPONSE, message, _RAW_OUTPUT, tensors)


def encode_stream_progress(request: InferRequest, report: progress.Progress) -> bytes:
    """A ModelStreamInferResponse with a progress response (no outputs) for `request`."""
    message = ModelInferResponse(
        id=request.id,
        model_name=request.model_name,
        model_version=request.model_version,
        parameters=to_grpc_parameters(
            {
                "progress_done": report.done,
                "progress_total": report.total,
                "progress_stage": report.stage,
                FINAL: False,
            }
        ),
    )
    return length_delimited(STREAM_INFER_RESPONSE, message.SerializeToString())


def encode_stream_error(text: str) -> bytes:
    """A ModelStreamInferResponse with only `error_message`."""
    return length_delimited(STREAM_ERROR_MESSAGE, text.encode())


@dataclass
class _RequestFailed:
    """One request of a stream failed with `error`."""

    error: Exception
    request_id: str

    def text(self) -> str:
        """Triton's error_message: the reason, after the request's id when it is known."""
        reason = _error_text(self.error)
        return f"[request id: {self.request_id}] {reason}" if self.request_id else reason


def _error_text(ex: Exception) -> str:
    """What a request's error says in the stream, logged as ModelInfer's interceptors log it."""
    if isinstance(ex, InvalidInput):
        log.warning("invalid request (ModelStreamInfer): %s", ex.reason)
        return ex.reason
    if isinstance(ex, GrpcException):  # not ready, shutting down, ...: the reason, no traceback
        log.info("ModelStreamInfer: %s: %s", ex.status_code.name, ex.details)
        return ex.details
    if getattr(ex, "reason", None):  # KServe's errors (unknown model, ...)
        log.warning("ModelStreamInfer: %s", ex)
        return str(ex)
    log.exception("ModelStreamInfer: internal error")
    return "Internal server error"


class InflightCap:
    """MAX_INFLIGHT inferences at once (module docstring); `limit` 0 is no cap."""

    def __init__(self, limit: int):
        self.limit = limit
        self.inflight = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        if self.limit and self.inflight >= self.limit:
            log.info("busy: %d inferences in progress (MAX_INFLIGHT); refused one", self.inflight)
            raise ResourceExhausted(
                f"{BUSY_DETAIL} {self.inflight} inferences in progress on this replica "
                f"(MAX_INFLIGHT {self.limit}); try another replica or retry"
            )
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1


class RawTensorServicer(InferenceServicer):
    """KServe's servicer whose ModelInfer takes and returns serialized messages."""

    def __init__(self, data_plane, model_repository_extension, max_inflight: int = 0):
        super().__init__(data_plane, model_repository_extension)
        self.data_plane = data_plane
        self.cap = InflightCap(max_inflight)

    async def ModelMetadata(self, request, context):
        """KServe's, with the model's versions kept (KServe's servicer drops them): the
        gateway's /health learns each model's architecture and scale from them."""
        response = await super().ModelMetadata(request, context)
        metadata = await self._data_plane.model_metadata(model_name=request.name)
        response.versions.extend(metadata.get("versions") or [])
        return response

    async def ModelInfer(self, data: bytes, context) -> bytes:  # type: ignore[override]
        request = decode_request(data)
        with self.cap.hold():
            response, _ = await self.data_plane.infer(
                request=request, headers=to_headers(context), model_name=request.model_name
            )
        return encode_response(response)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[bytes], context
    ) -> AsyncIterator[bytes]:
        """Triton's decoupled ModelStreamInfer, messages as bytes (module docstring)."""
        headers = to_headers(context)
        strict = headers.get(STRICT_ERRORS_HEADER, "").lower() == "true"
        out: asyncio.Queue = asyncio.Queue()  # serialized responses, or the error to end with
        running: set[asyncio.Task] = set()
        finished = object()

        async def read() -> None:
            try:
                async for data in requests:
                    task = asyncio.create_task(self._stream_one(data, headers, out.put_nowait))
                    running.add(task)
                    task.add_done_callback(running.discard)
                while running:
                    await asyncio.wait(set(running))
                out.put_nowait(finished)
            except Exception as exc:  # the request stream failed
                out.put_nowait(exc)

        reader = asyncio.create_task(read())
        try:
            while (item := await out.get()) is not finished:
                if isinstance(item, _RequestFailed):
                    if strict:
                        raise item.error  # the interceptors answer it as ModelInfer would
                    yield encode_stream_error(item.text())
                elif isinstance(item, Exception):
                    raise item
                else:
                    yield item
        finally:  # done, failed, or the call ended: nothing of this stream goes on running
            reader.cancel()
            for task in list(running):
                task.cancel()

    async def _stream_one(self, data: bytes, headers: dict, put: Callable) -> None:
        """One request of a stream: its progress, then its answer, or its error, put in `put`."""
        request_id = ""
        try:
            request = decode_request(data)
            request.id = request_id = request.id or str(uuid.uuid4())  # the same in every reply
            reporter = progress.Reporter(
                request.model_name,
                asyncio.get_running_loop(),
                lambda report: put(encode_stream_progress(request, report)),
            )
            progress.current.set(reporter)  # in this task's own context
            try:
                with self.cap.hold():
                    response, _ = await self.data_plane.infer(
                        request=request, headers=headers, model_name=request.model_name
                    )
            finally:
                held = reporter.close()
            if held is not None:
                put(encode_stream_progress(request, held))
            put(encode_stream_answer(response))
        except Exception as ex:
            put(_RequestFailed(ex, request_id))


class ClientErrorsInOneLine(ExceptionToStatusInterceptor):
    """KServe's exceptions-to-status mapping, except that the client's mistakes (a bad parameter
    or tensor, a model not served here) are logged in one line instead of with a traceback."""

    async def handle_exception(self, ex, request_or_iterator, context, method_name):
        if isinstance(ex, InvalidInput):
            log.warning("invalid request (%s): %s", method_name, ex.reason)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, ex.reason)
        if isinstance(ex, ModelNotFound):
            log.info("%s: %s", method_name, ex.reason)
            await context.abort(grpc.StatusCode.NOT_FOUND, ex.reason)
        await super().handle_exception(ex, request_or_iterator, context, method_name)


def listen_hosts(bind_address: str | None) -> tuple[str, str]:
    """(HTTP host, gRPC host) for `--bind_address`: None is every interface, as KServe binds
    (HTTP 0.0.0.0, gRPC [::]); an IPv6 address is bracketed for gRPC."""
    if not bind_address:
        return "0.0.0.0", "[::]"
    if ":" in bind_address and not bind_address.startswith("["):
        return bind_address, f"[{bind_address}]"
    return bind_address.strip("[]"), bind_address


# HTTP/2 abuse (a rapid-reset flood: HEADERS then RST_STREAM, tens of thousands a second; ping
# floods; connections that never end) bounded by grpc-core's own settings, per connection:
HARDENING = (
    # Streams open at once on one connection. The gateway holds a few (its calls in flight to
    # this predictor and a readiness probe); a client over the limit waits for a stream, it is
    # not refused. A flood's streams beyond it are refused by the transport, not the server.
    ("grpc.max_concurrent_streams", 64),
    # Streams reset but not yet freed, per connection: past it, grpc-core stops reading the
    # connection until they are (its rapid-reset pushback).
    ("grpc.http2.max_deallocating_streams", 64),
    # Calls accepted but not yet handed to a handler, all connections together: past the soft
    # limit new ones are refused at random, past the hard one all are (RESOURCE_EXHAUSTED).
    ("grpc.server.max_pending_requests", 256),
    ("grpc.server.max_pending_requests_hard_limit", 1024),
    # Keepalive enforcement: a client pinging more often than every 10 s without data gets
    # strikes, and GOAWAY after 2 (the gateway sends no keepalive pings).
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 2),
    # This server's own pings find dead peers: every 60 s of silence, 20 s to answer.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.max_pings_without_data", 0),  # its own keepalive pings need no data
)


class PredictorGRPCServer(GRPCServer):
    """KServe's GRPCServer.start, with RawTensorServicer's ModelInfer registered over KServe's
    (a later registration of a method replaces the earlier one), invalid requests logged in one
    line, the host it listens on chosen (KServe's listens on [::]), and HARDENING's HTTP/2
    bounds."""

    def __init__(self, *args, host: str = "[::]", max_inflight: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self._host = host
        self._max_inflight = max_inflight

    async def start(self, max_workers):
        servicer = RawTensorServicer(
            self._data_plane, self._model_repository_extension, self._max_inflight
        )
        limits = ("grpc.max_send_message_length", "grpc.max_receive_message_length")
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), ClientErrorsInOneLine()),
            options=[
                *((name, self._kwargs.get(name.replace(".", "_"))) for name in limits),
                *HARDENING,
            ],
        )
        add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        # No (de)serializers: the handler gets and returns the message's bytes.
        raw_infer = grpc.unary_unary_rpc_method_handler(servicer.ModelInfer)
        raw_stream = grpc.stream_stream_rpc_method_handler(servicer.ModelStreamInfer)
        self._server.add_registered_method_handlers(
            SERVICE, {"ModelInfer": raw_infer, "ModelStreamInfer": raw_stream}
        )
        self._server.add_insecure_port(f"{self._host}:{self._port}")
        await self._server.start()
        await self._server.wait_for_termination()


class PredictorServer(ModelServer):
    """KServe's ModelServer serving gRPC through PredictorGRPCServer, both servers listening on
    `bind_address` (None: every interface, as KServe's), MAX_INFLIGHT read before it starts (a
    malformed one stops the predictor here, in one line)."""

    def __init__(self, bind_address: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.http_host, self.grpc_host = listen_hosts(bind_address)
        self.max_inflight = env_int("MAX_INFLIGHT", 0)

    def start(self, models) -> None:
        if self.enable_grpc:
            self.enable_grpc = False  # or KServe's start would add its own gRPC server
            self._grpc_server = PredictorGRPCServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs=vars(model_server.args),
                grace_period=self.grace_period,
                host=self.grpc_host,
                max_inflight=self.max_inflight,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        super().start(models)

    def setup_event_loop(self):
        # Called by start() after the REST server is built and before it binds (KServe 0.21
        # binds 0.0.0.0).
        if self._rest_server is not None:
            self._rest_server.config.host = self.http_host
        super().setup_event_loop()
