"""Dynamic batching: concurrent requests grouped into one model call, as TF Serving does.

The first request of a batch waits at most ``max_wait_s`` for others; a batch holds at most
``max_batch_size`` images (1 turns batching off). Model calls run in a thread pool (never on the
event loop), at most ``workers`` at a time. Requests with different mask thresholds are never
mixed (the predictor takes one mask threshold per call); score thresholds are passed per image,
so the model pastes only the masks each request will return. When a batched call fails, its images are
retried one by one, so one undecodable image fails only its own request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)


@dataclass
class _Item:
    image: bytes
    mask_threshold: float
    score_threshold: float
    future: asyncio.Future


class DynamicBatcher:
    """``await batcher.submit(image_bytes, mask_threshold, score_threshold) -> Detections``.

    predict: ``predict(list_of_image_bytes, mask_threshold=..., score_threshold=[one per image])
    -> list[Detections]`` (blocking).
    on_batch: called with ``(batch_size, model_seconds)`` after each model call (metrics).
    """

    def __init__(
        self,
        predict: Callable[..., list],
        *,
        max_batch_size: int = 1,
        max_wait_s: float = 0.0,
        workers: int = 1,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        if max_batch_size < 1 or workers < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size and workers must be >= 1, max_wait_s >= 0")
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._workers = workers
        self._on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="model")
        self._queue: asyncio.Queue[_Item] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._loop_task: asyncio.Task | None = None
        self._calls: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self._workers)
        self._loop_task = asyncio.create_task(self._collect(), name="batcher")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, *self._calls, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, image: bytes, mask_threshold: float, score_threshold: float = 0.0) -> Any:
        if self._queue is None:
            raise RuntimeError("DynamicBatcher.start() was not awaited")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(image, float(mask_threshold), float(score_threshold), future))
        return await future

    @property
    def queued(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                remaining = deadline - loop.time()
                try:
                    item = self._queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self._queue.get(), remaining)
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                batch.append(item)
            for threshold in dict.fromkeys(i.mask_threshold for i in batch):
                group = [i for i in batch if i.mask_threshold == threshold and not i.future.cancelled()]
                if not group:
                    continue
                await self._slots.acquire()
                task = asyncio.create_task(self._run(group, threshold))
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)

    def _call(self, items: Sequence[_Item], threshold: float) -> list:
        start = time.perf_counter()
        out = self._predict([i.image for i in items], mask_threshold=threshold,
                            score_threshold=[i.score_threshold for i in items])
        if self._on_batch is not None:
            self._on_batch(len(items), time.perf_counter() - start)
        return out

    async def _run(self, group: list[_Item], threshold: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            try:
                results = await loop.run_in_executor(self._executor, self._call, group, threshold)
                outcomes: list[tuple[Any, BaseException | None]] = [(r, None) for r in results]
            except Exception as batch_error:  # noqa: BLE001 - isolate the failing image below
                if len(group) == 1:
                    outcomes = [(None, batch_error)]
                else:
                    outcomes = []
                    for item in group:
                        try:
                            (result,) = await loop.run_in_executor(self._executor, self._call, [item], threshold)
                            outcomes.append((result, None))
                        except Exception as e:  # noqa: BLE001 - handed to the request
                            outcomes.append((None, e))
            for item, (result, error) in zip(group, outcomes):
                if item.future.done():
                    continue
                if error is None:
                    item.future.set_result(result)
                else:
                    item.future.set_exception(error)
        finally:
            self._slots.release()
