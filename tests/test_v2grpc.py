"""Predictors' ModelInfer: our reading and writing of the messages agree with KServe's, and are
what the predictors' gRPC server uses. Its ModelStreamInfer: progress, then the same answer;
errors as Triton gives them; a stream that ends stops its work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

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

from common.protowire import length_delimited
from predictors import cancel, progress, v2grpc
from predictors.v2codec import Param, decode_parameters, encode_images
from tests.servers import free_port
from tests.sockets import answers, listening_hosts, own_addresses
from transformer import v2wire
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


def test_a_stream_answer_is_modelinfers_bytes_with_the_final_flag_wrapped(astronaut):
    image = np.ascontiguousarray(astronaut[:21, :34][None])
    request = type("Request", (), {"id": "r9", "use_binary_outputs": True})()
    response = encode_images(request, "upscale", image, {"faces": 2})
    sent = v2grpc.encode_stream_answer(response)
    response.parameters = {**response.parameters, "triton_final_response": True}
    assert sent == length_delimited(2, v2grpc.encode_response(response))


class Counting(Model):
    """Inverts the image in the inference thread over `steps` steps of 20 ms, reporting each."""

    def __init__(self):
        super().__init__("count")
        self.ready = True
        self.executor = ThreadPoolExecutor(1)
        self.stopped_at: list[int] = []  # the step at which cancelled work stopped

    async def predict(self, payload, headers=None):
        image = payload.inputs[0].as_numpy()
        steps = decode_parameters(payload.parameters, {"steps": Param(int, 3, 1, 100)})["steps"]

        def work():
            progress.tiles(0, steps)
            for step in range(steps):
                if cancel.should_stop():
                    self.stopped_at.append(step)
                    raise cancel.Cancelled("stopped")
                time.sleep(0.02)
                progress.tiles(step + 1, steps)
            return 255 - image

        return encode_images(payload, self.name, await cancel.run_in_thread(
            self.executor, self.name, work), {})  # fmt: skip


@contextlib.asynccontextmanager
async def serving(model: Model):
    registry = ModelRepository()
    registry.update(model)
    port = free_port()
    limits = {"grpc_max_send_message_length": 64 << 20, "grpc_max_receive_message_length": 64 << 20}
    server = v2grpc.PredictorGRPCServer(
        port, DataPlane(registry), ModelRepositoryExtension(registry), kwargs=limits,
        grace_period=1,
    )  # fmt: skip
    task = asyncio.create_task(server.start(2))
    client = RawTensorClient(f"127.0.0.1:{port}", timeout=30)
    try:
        await client.is_server_ready(timeout=30)
        yield client
    finally:
        await client.close()
        await server.stop()
        await task


def count_request(image: np.ndarray, request_id: str, steps: int, model: str = "count") -> bytes:
    tensor = ModelInferRequest.InferInputTensor(
        name="image", datatype="UINT8", shape=list(image.shape)
    )
    message = ModelInferRequest(
        model_name=model, id=request_id, inputs=[tensor],
        parameters={"steps": InferParameter(int64_param=steps)},
    )  # fmt: skip
    return encode_request(message, [image])


def test_the_server_streams_progress_then_the_answer(astronaut):
    image = np.ascontiguousarray(astronaut[:16, :24][None])

    async def ask():
        async with serving(Counting()) as client:
            reports = []
            reply = await client.stream_infer(count_request(image, "s1", 12), reports.append)
            unary = await client.infer(count_request(image, "u1", 12))
            return reports, reply, unary

    reports, reply, unary = asyncio.run(ask())
    dones = [r.done for r in reports]
    assert dones[0] == 0 and dones[-1] == 12 and dones == sorted(dones)
    assert len(reports) < 12  # 20 ms steps: at most one report per 100 ms, plus the last
    assert {r.total for r in reports} == {12} and reports[-1].stage == "count: tile 12 of 12"
    assert reply.message.id == "s1" and "triton_final_response" not in reply.message.parameters
    assert bytes(reply.raw_outputs[0]) == bytes(unary.raw_outputs[0]) == (255 - image).tobytes()
    assert list(unary.message.parameters) == []  # ModelInfer's answer: no stream parameters


def test_stream_errors_follow_triton_in_the_stream_or_as_the_status():
    """By default an error is a response with error_message and the stream goes on; with the
    triton_grpc_error header it ends the stream with ModelInfer's status."""
    image = np.zeros((1, 4, 4, 3), np.uint8)

    async def ask():
        async with serving(Counting()) as client:
            stream = client._channel.stream_stream(v2wire.MODEL_STREAM_INFER)()
            for request in (
                b"\x0a\xff\xff",  # not a ModelInferRequest
                count_request(image, "bad", 0),  # steps out of range
                count_request(image, "none", 1, model="nope"),
                count_request(image, "good", 1),
            ):
                await stream.write(request)
            await stream.done_writing()
            replies = []
            async for data in stream:
                try:
                    replies.append(v2wire.decode_stream_response(data))
                except v2wire.StreamError as exc:
                    replies.append(str(exc))
            with pytest.raises(grpc.aio.AioRpcError) as strict:
                await client.stream_infer(count_request(image, "bad", 0), print)
            return replies, await stream.code(), strict.value

    replies, code, strict = asyncio.run(ask())
    errors = sorted(r for r in replies if isinstance(r, str))
    assert errors[0].startswith("[request id: bad] parameter 'steps' must be in 1..100")
    assert errors[1] == "[request id: none] Model with name nope does not exist."
    assert "not a ModelInferRequest" in errors[2] and len(errors) == 3
    answer = replies[-1]
    assert isinstance(answer, v2wire.Reply) and answer.message.id == "good"
    assert code == grpc.StatusCode.OK
    assert strict.code() == grpc.StatusCode.INVALID_ARGUMENT and "'steps'" in strict.details()


@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_ending_the_stream_stops_the_work_between_steps(how):
    image = np.zeros((1, 4, 4, 3), np.uint8)
    model = Counting()

    async def ask():
        async with serving(model) as client:
            started = asyncio.Event()
            call = client.stream_infer(
                count_request(image, "long", 100),  # 2 s of steps
                lambda report: started.set(),
                timeout=1.0 if how == "deadline" else None,
            )
            task = asyncio.create_task(call)
            if how == "cancel":
                await started.wait()  # the work is running
                task.cancel()
            with pytest.raises((asyncio.CancelledError, grpc.aio.AioRpcError)) as ended:
                await task
            began = time.monotonic()
            await client.infer(count_request(image, "next", 1))  # waits for the stopped work
            return ended.value, time.monotonic() - began

    ended, wait = asyncio.run(ask())
    if how == "deadline":
        assert ended.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait < 0.5  # a step (20 ms) and the call, not the 2 s left
    assert len(model.stopped_at) == 1 and model.stopped_at[0] < 100, model.stopped_at
