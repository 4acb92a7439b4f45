"""Fixtures for serving tests: the stand-in SavedModel (answers read off the image) and images."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def standin_model_dir(tmp_path_factory):
    from maskrcnn.serve.standin import export_standin_model

    return export_standin_model(tmp_path_factory.mktemp("standin") / "model")


def encode_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def colored_image(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """Uint8 RGB image whose channels hold three large overlapping shapes (stand-in instances
    scoring above 0.5): a red rectangle, a green disk and a blue L shape, placed by ``seed``."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    y, x = int(rng.integers(0, 3)), int(rng.integers(0, 4))
    img[y:y + int(height * 0.8), x:x + int(width * 0.7), 0] = 255
    yy, xx = np.mgrid[:height, :width]
    cy, cx = height * (0.45 + 0.1 * rng.random()), width * (0.45 + 0.1 * rng.random())
    img[..., 1] = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < (0.45 * min(height, width)) ** 2, 200, 0)
    img[height // 3:, : width // 3 + 2, 2] = 180
    img[height // 2:, :, 2] = 180
    return img


def wait_ready(client, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/ping").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.05)


@pytest.fixture(scope="module")
def client(standin_model_dir):
    from fastapi.testclient import TestClient

    from maskrcnn.serve.app import create_app

    with TestClient(create_app(standin_model_dir)) as c:
        wait_ready(c)
        yield c
