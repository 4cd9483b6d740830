"""The gateway's lean V2 gRPC messages agree with protobuf's and KServe's own encoding; the
stream's replies (Triton's ModelStreamInferResponse) read the same way."""

from __future__ import annotations

import numpy as np
import pytest
from kserve.protocol.grpc.grpc_predict_v2_pb2 import (
    InferParameter,
    ModelInferRequest,
    ModelInferResponse,
)
from kserve.protocol.infer_type import InferOutput, InferResponse

from common.protowire import length_delimited
from transformer.v2wire import (
    Progress,
    Reply,
    StreamError,
    decode_response,
    decode_stream_response,
    encode_request,
)


def test_request_bytes_parse_as_the_message_with_its_raw_contents(astronaut):
    image = astronaut[:40, :30][None]
    message = ModelInferRequest(
        model_name="upscale",
        id="r1",
        inputs=[
            ModelInferRequest.InferInputTensor(name="image", datatype="UINT8", shape=[1, 40, 30, 3])
        ],
        parameters={"scale": InferParameter(int64_param=2)},
    )
    parsed = ModelInferRequest.FromString(encode_request(message, [image]))
    assert parsed.model_name == "upscale" and parsed.id == "r1"
    assert parsed.parameters["scale"].int64_param == 2
    assert list(parsed.raw_input_contents) == [image.tobytes()]


@pytest.mark.parametrize("side", [1, 50, 300])  # 300 px: a length that needs a 3-byte varint
def test_response_raw_contents_are_views_of_kserves_answer(astronaut, side):
    """The bytes a KServe predictor sends (InferResponse.to_grpc) read back unchanged."""
    image = np.ascontiguousarray(astronaut[:side, :side][None])
    output = InferOutput("image", list(image.shape), "UINT8")
    output.set_data_from_numpy(image, binary_data=True)
    sent = InferResponse(
        response_id="r2", model_name="upscale", infer_outputs=[output],
        parameters={"faces": InferParameter(int64_param=3)}, use_binary_outputs=True,
    ).to_grpc().SerializeToString()  # fmt: skip
    reply = decode_response(sent)
    assert reply.message.id == "r2" and reply.message.parameters["faces"].int64_param == 3
    assert [list(o.shape) for o in reply.message.outputs] == [list(image.shape)]
    assert len(reply.raw_outputs) == 1 and reply.raw_outputs[0].obj is sent  # no copy
    got = np.frombuffer(reply.raw_outputs[0], np.uint8).reshape(image.shape)
    assert np.array_equal(got, image)


def test_a_truncated_response_is_an_error_not_a_wrong_image(astronaut):
    output = InferOutput("image", [1, 8, 8, 3], "UINT8")
    output.set_data_from_numpy(np.ascontiguousarray(astronaut[:8, :8][None]), binary_data=True)
    sent = InferResponse("r3", "upscale", [output], use_binary_outputs=True).to_grpc()
    data = sent.SerializeToString()
    with pytest.raises(ValueError):
        decode_response(data[:-5])


def stream_reply(message: bytes) -> bytes:
    return length_delimited(2, message)  # ModelStreamInferResponse.infer_response


def test_a_stream_answer_reads_as_modelinfers_with_its_pixels_views_of_the_bytes(astronaut):
    image = np.ascontiguousarray(astronaut[:20, :300][None])
    output = InferOutput("image", list(image.shape), "UINT8")
    output.set_data_from_numpy(image, binary_data=True)
    answer = InferResponse(
        "r4", "restore", [output], use_binary_outputs=True,
        parameters={"faces": 1, "triton_final_response": True},
    ).to_grpc().SerializeToString()  # fmt: skip
    data = stream_reply(answer)
    reply = decode_stream_response(data)
    assert isinstance(reply, Reply) and reply.message.id == "r4"
    assert dict(reply.message.parameters) == {"faces": InferParameter(int64_param=1)}
    assert reply.raw_outputs[0].obj is data  # no copy
    assert np.frombuffer(reply.raw_outputs[0], np.uint8).tobytes() == image.tobytes()


def test_a_progress_response_and_an_error_in_the_stream():
    report = ModelInferResponse(
        id="r5",
        parameters={
            "progress_done": InferParameter(int64_param=3),
            "progress_total": InferParameter(int64_param=8),
            "progress_stage": InferParameter(string_param="upscale: tile 3 of 8"),
            "triton_final_response": InferParameter(bool_param=False),
        },
    ).SerializeToString()
    assert decode_stream_response(stream_reply(report)) == Progress(3, 8, "upscale: tile 3 of 8")
    with pytest.raises(StreamError, match=r"^\[request id: r6\] no such model$"):
        decode_stream_response(length_delimited(1, b"[request id: r6] no such model"))
    with pytest.raises(ValueError):
        decode_stream_response(b"")
