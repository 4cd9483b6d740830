"""The upscale predictor (Real-ESRGAN) as a real KServe process, called over V2 gRPC and REST."""

from __future__ import annotations

import cv2
import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from tests.reference import spandrel_reference
from tests.servers import running_predictor
from tests.v2clients import V2Error, infer_grpc, infer_rest


def degraded(photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A small, JPEG-damaged copy: what people send to an upscaler."""
    small = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    _, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 40])
    return cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)


@pytest.fixture(scope="module")
def x4plus(weights, tmp_path_factory):
    with running_predictor(
        "upscale", weights.model_dir("upscale", "x4plus"), tmp_path_factory.mktemp("upscale")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def photo(astronaut):
    return degraded(astronaut, (64, 48))


def test_grpc_answer_equals_spandrel_in_process(x4plus, weights, photo):
    out, _ = infer_grpc(x4plus.grpc, "upscale", photo, scale=4, tile_size=0)
    reference = spandrel_reference(
        weights.model_dir("upscale", "x4plus") / "RealESRGAN_x4plus.pth", photo
    )
    assert out.dtype == np.uint8 and out.shape == (192, 256, 3)
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 2


def test_rest_binary_gives_the_grpc_pixels(x4plus, photo):
    by_grpc, grpc_params = infer_grpc(x4plus.grpc, "upscale", photo, scale=4, tile_size=0)
    by_rest, rest_params = infer_rest(x4plus.http, "upscale", photo, scale=4, tile_size=0)
    assert np.array_equal(by_grpc, by_rest)
    assert grpc_params == rest_params
    assert grpc_params == {
        "variant": "x4plus",
        "device": "cpu",
        "architecture": "ESRGAN",
        "native_scale": 4,
    }


def test_metadata_describes_the_image_tensors(x4plus):
    meta = httpx.get(f"http://{x4plus.http}/v2/models/upscale").json()
    assert (
        meta["inputs"]
        == meta["outputs"]
        == [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
    )


@pytest.mark.parametrize("scale", [1, 2, 3, 8])
def test_scale_gives_exactly_scale_times_the_input(x4plus, photo, scale):
    out, _ = infer_grpc(x4plus.grpc, "upscale", photo, scale=scale)
    assert out.shape == (48 * scale, 64 * scale, 3)


def test_tiled_answer_is_close_to_the_whole_image(x4plus, astronaut):
    photo = degraded(astronaut, (176, 96))  # wider than the 128 px tile floor
    whole, _ = infer_grpc(x4plus.grpc, "upscale", photo, tile_size=0)
    tiled, _ = infer_grpc(x4plus.grpc, "upscale", photo, tile_size=128)
    assert tiled.shape == whole.shape
    assert np.abs(tiled.astype(int) - whole.astype(int)).mean() < 0.5


def test_a_batch_of_two_images(x4plus, photo):
    batch = np.stack([photo, photo[::-1].copy()])
    out, _ = infer_grpc(x4plus.grpc, "upscale", batch, scale=2)
    assert out.shape == (2, 96, 128, 3)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"scale": 9}, "'scale' must be in 1..8"),
        ({"tile_size": -1}, "'tile_size' must be in"),
        ({"scale": "big"}, "'scale' must be a whole number"),
    ],
)
def test_bad_parameters_are_refused_and_the_server_keeps_serving(x4plus, photo, params, message):
    with pytest.raises(V2Error, match=message):
        infer_grpc(x4plus.grpc, "upscale", photo, **params)
    assert x4plus.is_ready()
    assert infer_grpc(x4plus.grpc, "upscale", photo, scale=1)[0].shape == photo.shape


def test_wrong_tensor_shape_is_refused(x4plus):
    with pytest.raises(V2Error, match=r"\[N, H, W, 3\]"):
        infer_grpc(x4plus.grpc, "upscale", np.zeros((1, 8, 8, 4), np.uint8))
    assert x4plus.is_ready()


def test_x2plus_odd_sides_and_variant_from_its_folder(weights, tmp_path, photo, astronaut):
    # No --variant: the folder holds one official upscale file, RealESRGAN_x2plus.pth.
    x2plus = weights.model_dir("upscale", "x2plus")
    with running_predictor("upscale", x2plus, tmp_path) as server:
        odd = photo[:47, :63].copy()
        out, params = infer_grpc(server.grpc, "upscale", odd, scale=2, tile_size=0)
        assert out.shape == (94, 126, 3) and params["variant"] == "x2plus"
        odd = degraded(astronaut, (131, 77))
        out, _ = infer_grpc(server.grpc, "upscale", odd, scale=3, tile_size=128)
        assert out.shape == (231, 393, 3)


def test_rest_json_tensor_is_still_accepted(x4plus):
    client = triton_http.InferenceServerClient(x4plus.http)
    image = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(1, 6, 5, 3)
    tensor = triton_http.InferInput("image", list(image.shape), "UINT8")
    tensor.set_data_from_numpy(image, binary_data=False)
    result = client.infer("upscale", [tensor], parameters={"scale": 2})
    assert result.as_numpy("image").shape == (1, 12, 10, 3)
