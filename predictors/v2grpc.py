"""The predictors' gRPC server: KServe's, with ModelInfer's tensors read and written as bytes.

KServe's servicer answers with `InferResponse.to_grpc()`: the answer image is copied by
`tobytes()`, again into the protobuf message and again when gRPC serializes it (bench/transport.py:
about 0.45 s and 600 MB of peak memory for the 200 MB x4 answer to a 2048 px photo); the photo
in the request is copied twice too (protobuf's parse, then its bytes field). Here ModelInfer
reads and writes the message itself (common/protowire.py): the photo is a view of the received
bytes, and the answer is joined beside protobuf's small fields, one copy. Every other method,
interceptor and option is KServe's.
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from grpc import aio
from kserve import ModelServer, model_server
from kserve.errors import InvalidInput
from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest, ModelInferResponse
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferRequest, InferResponse, to_grpc_parameters
from kserve.utils.utils import to_headers

from common.protowire import join_bytes_field, split_bytes_field

log = logging.getLogger(__name__)
SERVICE = "inference.GRPCInferenceService"
_RAW_INPUT = ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number
_RAW_OUTPUT = ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number


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


def encode_response(response: InferResponse | ModelInferResponse) -> bytes:
    """The serialized ModelInferResponse, numpy outputs as raw_output_contents without copies."""
    if isinstance(response, ModelInferResponse):
        return response.SerializeToString()
    tensors = [output.data for output in response.outputs]
    if not all(isinstance(t, np.ndarray) and not t.dtype.hasobject for t in tensors):
        return response.to_grpc().SerializeToString()  # lists or BYTES: KServe's encoding

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
        parameters=parameters(response.parameters),
    )
    contiguous = (np.ascontiguousarray(t) for t in tensors)
    return join_bytes_field(message.SerializeToString(), _RAW_OUTPUT, contiguous)


class RawTensorServicer(InferenceServicer):
    """KServe's servicer whose ModelInfer takes and returns serialized messages."""

    def __init__(self, data_plane, model_repository_extension):
        super().__init__(data_plane, model_repository_extension)
        self.data_plane = data_plane

    async def ModelInfer(self, data: bytes, context) -> bytes:  # type: ignore[override]
        request = decode_request(data)
        response, _ = await self.data_plane.infer(
            request=request, headers=to_headers(context), model_name=request.model_name
        )
        return encode_response(response)


class ClientErrorsInOneLine(ExceptionToStatusInterceptor):
    """KServe's exceptions-to-status mapping, except that an invalid request (the client's
    mistake: a bad parameter or tensor) is logged in one line instead of with a traceback."""

    async def handle_exception(self, ex, request_or_iterator, context, method_name):
        if isinstance(ex, InvalidInput):
            log.warning("invalid request (%s): %s", method_name, ex.reason)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, ex.reason)
        await super().handle_exception(ex, request_or_iterator, context, method_name)


def listen_hosts(bind_address: str | None) -> tuple[str, str]:
    """(HTTP host, gRPC host) for `--bind_address`: None is every interface, as KServe binds
    (HTTP 0.0.0.0, gRPC [::]); an IPv6 address is bracketed for gRPC."""
    if not bind_address:
        return "0.0.0.0", "[::]"
    if ":" in bind_address and not bind_address.startswith("["):
        return bind_address, f"[{bind_address}]"
    return bind_address.strip("[]"), bind_address


class PredictorGRPCServer(GRPCServer):
    """KServe's GRPCServer.start, with RawTensorServicer's ModelInfer registered over KServe's
    (a later registration of a method replaces the earlier one), invalid requests logged in one
    line, and the host it listens on chosen (KServe's listens on [::])."""

    def __init__(self, *args, host: str = "[::]", **kwargs):
        super().__init__(*args, **kwargs)
        self._host = host

    async def start(self, max_workers):
        servicer = RawTensorServicer(self._data_plane, self._model_repository_extension)
        limits = ("grpc.max_send_message_length", "grpc.max_receive_message_length")
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), ClientErrorsInOneLine()),
            options=[(name, self._kwargs.get(name.replace(".", "_"))) for name in limits],
        )
        add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        # No (de)serializers: the handler gets and returns the message's bytes.
        raw_infer = grpc.unary_unary_rpc_method_handler(servicer.ModelInfer)
        self._server.add_registered_method_handlers(SERVICE, {"ModelInfer": raw_infer})
        self._server.add_insecure_port(f"{self._host}:{self._port}")
        await self._server.start()
        await self._server.wait_for_termination()


class PredictorServer(ModelServer):
    """KServe's ModelServer serving gRPC through PredictorGRPCServer, both servers listening on
    `bind_address` (None: every interface, as KServe's)."""

    def __init__(self, bind_address: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.http_host, self.grpc_host = listen_hosts(bind_address)

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
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        super().start(models)

    def setup_event_loop(self):
        # Called by start() after the REST server is built and before it binds (KServe 0.21
        # binds 0.0.0.0).
        if self._rest_server is not None:
            self._rest_server.config.host = self.http_host
        super().setup_event_loop()
