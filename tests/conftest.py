from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from tests import weights_factory


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
