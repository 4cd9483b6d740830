"""Predictors' ModelInfer: our reading and writing of the messages agree with KServe's, and are
what the predictors' gRPC server uses."""

from __future__ import annotations

import asyncio
import logging

import grpc
import numpy as np
import pytest
from kserve import Model
from kserve.errors import InvalidInput
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc.grpc_predict_v2_pb2 import (
    InferParameter,
    ModelInferRequest,
    ModelInferResponse,
)
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse
from kserve.protocol.model_repository_extension import ModelRepositoryExtension

from predictors import v2grpc
from predictors.v2codec import encode_images
from tests.servers import free_port
from tests.sockets import answers, listening_hosts, own_addresses
from transformer.v2wire import RawTensorClient, encode_request


def kserves_request(image: np.ndarray) -> bytes:
    tensor = InferInput("image", list(image.shape), "UINT8")
    tensor.set_data_from_numpy(image, binary_data=True)
    request = InferRequest(
        "upscale", [tensor], request_id="q7", parameters={"scale": InferParameter(int64_param=2)}
    )
    return request.to_grpc().SerializeToString()


def test_a_request_reads_as_kserves_with_the_photo_a_view_of_the_bytes(astronaut):
    image = np.ascontiguousarray(astronaut[:33, :41][None])
    data = kserves_request(image)
    ours = v2grpc.decode_request(data)
    theirs = InferRequest.from_grpc(ModelInferRequest.FromString(data))
    assert (ours.id, ours.model_name) == (theirs.id, theirs.model_name) == ("q7", "upscale")
    assert ours.parameters["scale"].int64_param == 2
    assert [(i.name, list(i.shape), i.datatype) for i in ours.inputs] == [
        (i.name, list(i.shape), i.datatype) for i in theirs.inputs
    ]
    photo = ours.inputs[0].as_numpy()
    assert np.array_equal(photo, image) and np.array_equal(photo, theirs.inputs[0].as_numpy())
    assert np.shares_memory(photo, np.frombuffer(data, np.uint8))  # not a copy


def test_raw_contents_that_do_not_match_the_inputs_are_refused(astronaut):
    image = np.ascontiguousarray(astronaut[:8, :8][None])
    message = ModelInferRequest.FromString(kserves_request(image))
    message.raw_input_contents.append(b"extra")
    with pytest.raises(InvalidInput, match="number of inputs"):
        v2grpc.decode_request(message.SerializeToString())


def test_an_image_answer_parses_as_kserves_does(astronaut):
    image = np.ascontiguousarray(astronaut[:37, :50][None])
    request = type("Request", (), {"id": "r1", "use_binary_outputs": True})()
    response = encode_images(request, "upscale", image, {"faces": 2})
    ours = ModelInferResponse.FromString(v2grpc.encode_response(response))
    output = InferOutput("image", list(image.shape), "UINT8")
    output.set_data_from_numpy(image, binary_data=True)
    kserves = InferResponse(
        "r1", "upscale", [output], parameters={"faces": 2}, use_binary_outputs=True
    )
    theirs = ModelInferResponse.FromString(kserves.to_grpc().SerializeToString())
    assert ours.id == theirs.id == "r1" and ours.model_name == "upscale"
    assert ours.parameters["faces"].int64_param == 2
    assert [(o.name, list(o.shape), o.datatype) for o in ours.outputs] == [
        (o.name, list(o.shape), o.datatype) for o in theirs.outputs
    ]
    assert list(ours.raw_output_contents) == list(theirs.raw_output_contents) == [image.tobytes()]


def test_a_strided_view_is_sent_as_its_pixels(astronaut):
    """The one-image answer can be a view of a larger array (predictors/base.py)."""
    view = astronaut[::2, 1::3][None]
    assert not view.flags.c_contiguous
    output = InferOutput("image", list(view.shape), "UINT8", data=view)
    sent = ModelInferResponse.FromString(v2grpc.encode_response(InferResponse("r", "m", [output])))
    assert sent.raw_output_contents[0] == np.ascontiguousarray(view).tobytes()


def test_outputs_that_are_not_arrays_keep_kserves_encoding():
    output = InferOutput("label", [2], "BYTES", data=["cat", "dog"])
    sent = ModelInferResponse.FromString(v2grpc.encode_response(InferResponse("r", "m", [output])))
    assert list(sent.outputs[0].contents.bytes_contents) == [b"cat", b"dog"]


class Invert(Model):
    def __init__(self):
        super().__init__("invert")
        self.ready = True

    async def predict(self, payload, headers=None):
        image = payload.inputs[0].as_numpy()
        return encode_images(payload, self.name, 255 - image, {})


@pytest.fixture
def served(monkeypatch):
    """PredictorGRPCServer in this process with a spy on its answer encoding."""
    encoded = []

    def spy(response):
        encoded.append(response)
        return original(response)

    original = v2grpc.encode_response
    monkeypatch.setattr(v2grpc, "encode_response", spy)
    return encoded


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def logged():
    """Every record of KServe's and the predictors' loggers (KServe's does not propagate)."""
    handler = Records()
    loggers = [logging.getLogger(name) for name in ("kserve", "predictors")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.records
    for logger in loggers:
        logger.removeHandler(handler)


def test_the_server_answers_modelinfer_with_our_encoding(astronaut, served, logged):
    image = np.ascontiguousarray(astronaut[:64, :48][None])

    async def ask() -> tuple[np.ndarray, ModelInferResponse]:
        registry = ModelRepository()
        registry.update(Invert())
        port = free_port()
        limits = {
            "grpc_max_send_message_length": 64 << 20,
            "grpc_max_receive_message_length": 64 << 20,
        }
        server = v2grpc.PredictorGRPCServer(
            port,
            DataPlane(registry),
            ModelRepositoryExtension(registry),
            kwargs=limits,
            grace_period=1,
        )
        serving = asyncio.create_task(server.start(2))
        client = RawTensorClient(f"127.0.0.1:{port}", timeout=30)
        try:
            await client.is_server_ready(timeout=30)  # KServe's servicer: other methods unchanged
            tensor = ModelInferRequest.InferInputTensor(
                name="image", datatype="UINT8", shape=list(image.shape)
            )
            message = ModelInferRequest(
                model_name="invert",
                id="q1",
                inputs=[tensor],
                parameters={"note": InferParameter(string_param="x")},
            )
            with pytest.raises(grpc.aio.AioRpcError) as garbage:
                await client.infer(b"\x0a\xff\xff")  # a field longer than the message
            assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a ModelInferRequest" in garbage.value.details()
            reply = await client.infer(encode_request(message, [image]))  # still serving
            answer = np.frombuffer(reply.raw_outputs[0], np.uint8).reshape(image.shape)
            return answer, reply.message
        finally:
            await client.close()
            await server.stop()
            await serving

    answer, message = asyncio.run(ask())
    assert message.id == "q1" and list(message.outputs[0].shape) == list(image.shape)
    assert np.array_equal(answer, 255 - image)
    assert len(served) == 1  # the answer went through encode_response, not KServe's to_grpc
    # the garbage request: one warning line, no traceback
    invalid = [r for r in logged if "not a ModelInferRequest" in r.getMessage()]
    assert len(invalid) == 1 and invalid[0].levelno == logging.WARNING
    assert not any(r.exc_info for r in logged)


def test_listen_hosts_are_every_interface_unless_told():
    assert v2grpc.listen_hosts(None) == ("0.0.0.0", "[::]")  # KServe's: what the chart needs
    assert v2grpc.listen_hosts("127.0.0.1") == ("127.0.0.1", "127.0.0.1")
    assert v2grpc.listen_hosts("::1") == ("::1", "[::1]")
    assert v2grpc.listen_hosts("[::1]") == ("::1", "[::1]")


@pytest.mark.parametrize(("bind_address", "listening"), [(None, {"::"}), ("127.0.0.1", None)])
def test_the_grpc_server_listens_on_the_bind_address(bind_address, listening):
    """--bind_address 127.0.0.1 (make run): loopback only, this machine's other addresses are
    refused; without it every interface, as in a pod."""
    grpc_host = v2grpc.listen_hosts(bind_address)[1]
    limits = {"grpc_max_send_message_length": 1 << 20, "grpc_max_receive_message_length": 1 << 20}

    async def look() -> tuple[set[str], bool, dict[str, bool]]:
        registry = ModelRepository()
        registry.update(Invert())
        port = free_port()
        server = v2grpc.PredictorGRPCServer(
            port,
            DataPlane(registry),
            ModelRepositoryExtension(registry),
            kwargs=limits,
            grace_period=1,
            host=grpc_host,
        )
        serving = asyncio.create_task(server.start(1))
        try:
            for _ in range(200):
                if listening_hosts(port):
                    break
                await asyncio.sleep(0.05)
            hosts = listening_hosts(port)
            loopback = await asyncio.to_thread(answers, "127.0.0.1", port)
            others = {a: await asyncio.to_thread(answers, a, port) for a in own_addresses()}
        finally:
            await server.stop()
            await serving
        return hosts, loopback, others

    hosts, loopback, others = asyncio.run(look())
    assert hosts == (listening or {bind_address})
    assert loopback
    assert all(others.values()) if bind_address is None else not any(others.values()), others
