"""Dynamic batching groups concurrent requests, keeps thresholds apart and isolates failures."""

from __future__ import annotations

import asyncio
import threading

import pytest

from maskrcnn.serve.batching import DynamicBatcher


class RecordingPredictor:
    def __init__(self, delay: float = 0.0):
        self.calls: list[tuple[list[bytes], float]] = []
        self.score_thresholds: list[list[float]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, images, mask_threshold=0.5, score_threshold=0.0):
        with self.lock:
            self.calls.append((list(images), mask_threshold))
            self.score_thresholds.append(list(score_threshold))
        if b"bad" in images:
            raise ValueError("cannot decode")
        threading.Event().wait(self.delay)
        return [f"{img.decode()}@{mask_threshold}" for img in images]


async def _run(batcher: DynamicBatcher, requests):
    await batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(img, thr) for img, thr in requests), return_exceptions=True)
    finally:
        await batcher.stop()


def test_concurrent_requests_share_one_model_call():
    predictor = RecordingPredictor()
    batcher = DynamicBatcher(predictor, max_batch_size=8, max_wait_s=0.05)
    out = asyncio.run(_run(batcher, [(f"img{i}".encode(), 0.5) for i in range(8)]))
    assert out == [f"img{i}@0.5" for i in range(8)]          # each request gets its own result
    assert [len(images) for images, _ in predictor.calls] == [8]


def test_batch_size_is_capped_and_thresholds_never_mix():
    predictor = RecordingPredictor()
    batcher = DynamicBatcher(predictor, max_batch_size=3, max_wait_s=0.05)
    reqs = [(f"a{i}".encode(), 0.5) for i in range(4)] + [(b"b0", 0.7)]
    out = asyncio.run(_run(batcher, reqs))
    assert out == ["a0@0.5", "a1@0.5", "a2@0.5", "a3@0.5", "b0@0.7"]
    assert all(len(images) <= 3 for images, _ in predictor.calls)
    assert all(len({thr}) == 1 for _, thr in predictor.calls)
    assert sorted(len(i) for i, _ in predictor.calls) == [1, 1, 3]


def test_score_thresholds_travel_per_image_in_a_shared_call():
    predictor = RecordingPredictor()
    batcher = DynamicBatcher(predictor, max_batch_size=8, max_wait_s=0.05)

    async def run():
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(f"s{i}".encode(), 0.5, score) for i, score in
                                          enumerate([0.1, 0.9, 0.5])))
        finally:
            await batcher.stop()

    assert asyncio.run(run()) == ["s0@0.5", "s1@0.5", "s2@0.5"]
    assert predictor.calls == [([b"s0", b"s1", b"s2"], 0.5)] and predictor.score_thresholds == [[0.1, 0.9, 0.5]]


def test_a_bad_image_fails_only_its_own_request():
    predictor = RecordingPredictor()
    batcher = DynamicBatcher(predictor, max_batch_size=4, max_wait_s=0.05)
    out = asyncio.run(_run(batcher, [(b"ok1", 0.5), (b"bad", 0.5), (b"ok2", 0.5)]))
    assert out[0] == "ok1@0.5" and out[2] == "ok2@0.5"
    assert isinstance(out[1], ValueError)


def test_without_batching_each_request_is_its_own_call():
    predictor = RecordingPredictor()
    out = asyncio.run(_run(DynamicBatcher(predictor, max_batch_size=1), [(b"x", 0.5), (b"y", 0.5)]))
    assert out == ["x@0.5", "y@0.5"]
    assert [len(i) for i, _ in predictor.calls] == [1, 1]


def test_invalid_configuration():
    with pytest.raises(ValueError):
        DynamicBatcher(RecordingPredictor(), max_batch_size=0)
