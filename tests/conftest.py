from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from tests import weights_factory
from tests.redis_server import start_redis

pytest.register_assert_rewrite("tests.trained")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A colour photo with a face, 512x512 RGB."""
    return data.astronaut()


@pytest.fixture(scope="session")
def camera() -> np.ndarray:
    """A grayscale photo, 512x512."""
    return data.camera()


@pytest.fixture(scope="session")
def weights():
    """The generated official-layout weights, made once and cached across runs."""
    return weights_factory


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on 127.0.0.1 for the session (no persistence); tests keep apart by
    key prefix."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
