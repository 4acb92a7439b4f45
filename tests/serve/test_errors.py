"""Bad input gets a 4xx naming the problem; overload gets 503 + Retry-After; health and metrics."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from maskrcnn.serve.app import create_app
from maskrcnn.serve.settings import ServeSettings

from .conftest import b64, colored_image, encode_png, wait_ready

GOOD = b64(encode_png(colored_image(24, 32)))


def _jpeg_truncated() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(colored_image(64, 64)).save(buf, format="JPEG")
    return buf.getvalue()[:200]


def _tiff() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(colored_image(8, 8)).save(buf, format="TIFF")
    return buf.getvalue()


@pytest.mark.parametrize("body, headers, status, words", [
    (b"{not json", {"Content-Type": "application/json"}, 400, "not valid JSON"),
    (b"[1, 2]", {"Content-Type": "application/json"}, 422, "JSON object"),
    (b'{"img_id": "a"}', {"Content-Type": "application/json"}, 422, "missing field 'img_data'"),
    (b'{"img_data": "AAAA"}', {"Content-Type": "application/json"}, 422, "missing field 'img_id'"),
    (b'{"img_id": "a", "img_data": "%%%"}', {"Content-Type": "application/json"}, 400, "not valid base64"),
    (b'{"img_id": "a", "img_data": ""}', {"Content-Type": "application/json"}, 400, "empty"),
    (('{"img_id": "a", "img_data": "%s"}' % b64(b"just some text")).encode(), {"Content-Type": "application/json"},
     400, "does not decode to an image"),
    (('{"img_id": "a", "img_data": "%s"}' % b64(_jpeg_truncated())).encode(), {"Content-Type": "application/json"},
     400, "damaged image"),
    (('{"img_id": "a", "img_data": "%s"}' % b64(_tiff())).encode(), {"Content-Type": "application/json"}, 400, "TIFF"),
    (('{"img_id": "a", "img_data": "%s", "score_threshold": 2}' % GOOD).encode(),
     {"Content-Type": "application/json"}, 422, "score_threshold"),
    (('{"img_id": "a", "img_data": "%s", "rle": "zip"}' % GOOD).encode(), {"Content-Type": "application/json"}, 422, "rle"),
    (b"img_id=a", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json"),
    (b"{}", {}, 415, "application/json"),
])
def test_bad_input_is_a_clear_4xx(client, body, headers, status, words):
    reply = client.post("/invocations", content=body, headers=headers)
    assert reply.status_code == status
    assert words in reply.json()["error"]


def test_limits_are_configurable(standin_model_dir):
    app = create_app(standin_model_dir, ServeSettings(max_body_bytes=2000, max_image_pixels=500))
    with TestClient(app) as c:
        wait_ready(c)
        big = c.post("/predict", json={"img_id": "a", "img_data": b64(encode_png(np.random.default_rng(0).integers(
            0, 255, (40, 40, 3), dtype=np.uint8)))})
        assert big.status_code == 413 and "over the limit of 2000" in big.json()["error"]
        pixels = c.post("/predict", json={"img_id": "a", "img_data": b64(encode_png(np.zeros((30, 30, 3), np.uint8)))})
        assert pixels.status_code == 413 and "900 pixels" in pixels.json()["error"]
        assert c.post("/predict", json={"img_id": "a", "img_data": b64(encode_png(np.zeros((20, 20, 3), np.uint8)))}).status_code == 200


class _GatedPredictor:
    """A predictor that blocks until released (to hold requests in flight)."""

    def __init__(self, inner):
        self.inner, self.gate, self.armed = inner, threading.Event(), False

    def __call__(self, images, mask_threshold=0.5, score_threshold=0.0):
        if self.armed:                     # not during the warm-up call
            self.gate.wait(30)
        return self.inner(images, mask_threshold=mask_threshold, score_threshold=score_threshold)


def test_overload_answers_503_with_retry_after(standin_model_dir):
    from maskrcnn.train.export import load_predictor

    gated = _GatedPredictor(load_predictor(standin_model_dir))
    app = create_app(standin_model_dir, ServeSettings(max_in_flight=2), loader=lambda d: gated)
    body = {"img_id": "a", "img_data": GOOD}
    with TestClient(app) as c:
        wait_ready(c)
        gated.armed = True
        results = []
        threads = [threading.Thread(target=lambda: results.append(c.post("/predict", json=body).status_code)) for _ in range(2)]
        for t in threads:
            t.start()
        while app.state.model.in_flight < 2:
            threading.Event().wait(0.01)
        reply = c.post("/predict", json=body)
        assert reply.status_code == 503 and reply.headers["Retry-After"] == "1"
        assert "limit of 2" in reply.json()["error"]
        gated.gate.set()
        for t in threads:
            t.join(30)
        assert results == [200, 200]
        metrics = c.get("/metrics").text
        assert 'maskrcnn_errors_total{reason="overloaded"} 1.0' in metrics


def test_not_ready_until_loaded_and_failed_load_is_unhealthy(standin_model_dir):
    release = threading.Event()

    def slow_then_fail(model_dir):
        release.wait(30)
        raise RuntimeError("weights are corrupt")

    with TestClient(create_app(standin_model_dir, loader=slow_then_fail)) as c:
        assert c.get("/ping").status_code == 503
        assert c.get("/readyz").json() == {"ready": False, "error": "loading"}
        assert c.get("/healthz").status_code == 200
        reply = c.post("/invocations", json={"img_id": "a", "img_data": GOOD})
        assert reply.status_code == 503 and "Retry-After" in reply.headers
        release.set()
        for _ in range(200):
            if c.get("/healthz").status_code == 500:
                break
            threading.Event().wait(0.02)
        assert "weights are corrupt" in c.get("/healthz").json()["error"]
        assert c.get("/ping").status_code == 503


def test_metrics_count_requests_latency_and_errors(client):
    client.post("/predict", json={"img_id": "a", "img_data": GOOD})
    client.post("/predict", json={"img_id": "a"})
    text = client.get("/metrics").text
    assert 'maskrcnn_requests_total{path="/predict",status="200"}' in text
    assert 'maskrcnn_requests_total{path="/predict",status="422"}' in text
    assert 'maskrcnn_request_seconds_bucket{le="0.005",path="/predict"}' in text
    assert 'maskrcnn_errors_total{reason="invalid_request"}' in text
    assert "maskrcnn_encode_seconds_count" in text and "maskrcnn_model_seconds_count" in text
    assert "maskrcnn_ready 1.0" in text


def test_a_decompression_bomb_is_refused_before_decoding():
    from maskrcnn.serve.images import ImageRejected, check_image

    # A 20000 x 20000 PNG of zeros compresses to a few hundred KB; only its header is read.
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    with pytest.raises(ImageRejected) as e:
        check_image(buf.getvalue(), max_pixels=40_000_000)
    assert e.value.status == 413 and "400000000" in str(e.value)


def test_a_failing_model_call_is_a_500_and_the_server_stays_up(standin_model_dir):
    from maskrcnn.train.export import load_predictor

    real = load_predictor(standin_model_dir)
    calls = []

    def flaky(images, mask_threshold=0.5, score_threshold=0.0):
        calls.append(len(images))
        if len(calls) == 2:                      # the warm-up is call 1
            raise RuntimeError("device lost")
        return real(images, mask_threshold=mask_threshold, score_threshold=score_threshold)

    with TestClient(create_app(standin_model_dir, loader=lambda d: flaky)) as c:
        wait_ready(c)
        failed = c.post("/predict", json={"img_id": "a", "img_data": GOOD})
        assert failed.status_code == 500 and "RuntimeError" in failed.json()["error"]
        assert c.post("/predict", json={"img_id": "a", "img_data": GOOD}).status_code == 200
        assert 'maskrcnn_errors_total{reason="model_error"} 1.0' in c.get("/metrics").text
