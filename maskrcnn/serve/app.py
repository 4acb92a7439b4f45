"""The HTTP server: the SageMaker notebook's contract on FastAPI, with KServe and health paths.

``POST /invocations`` (SageMaker), ``/predict`` and ``/v1/models/maskrcnn:predict`` (KServe v1)
take ``{"img_id", "img_data"}`` and answer ``{"annotations": [...]}``. ``GET /ping`` (SageMaker)
and ``/readyz`` answer 200 only once the SavedModel is loaded and warmed up; ``/healthz`` is
liveness (500 when the load failed, so the orchestrator restarts the pod); ``/metrics`` is
Prometheus. Every bad input is a 4xx ``{"error": "..."}`` naming the problem; past
``max_in_flight`` admitted requests the answer is 503 with ``Retry-After``, never a hang.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from maskrcnn.serve.batching import DynamicBatcher
from maskrcnn.serve.images import ImageRejected, check_image
from maskrcnn.serve.metrics import ServeMetrics
from maskrcnn.serve.response import annotations
from maskrcnn.serve.schemas import ErrorResponse, PredictRequest, PredictResponse
from maskrcnn.serve.settings import ServeSettings

log = logging.getLogger(__name__)

PREDICT_PATHS = ("/invocations", "/predict", "/v1/models/maskrcnn:predict")


class RequestError(Exception):
    """A request the server answers with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers


@dataclass
class ModelState:
    predictor: Any = None
    model_id: str = ""
    error: str = ""
    in_flight: int = 0

    @property
    def ready(self) -> bool:
        return self.predictor is not None


def _warmup_image() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (128, 96, 64)).save(buf, format="PNG")
    return buf.getvalue()


def _load(model_dir: Path, loader: Callable[[Path], Any]) -> Any:
    """Load and warm up the predictor (the first call traces the graph)."""
    start = time.perf_counter()
    predictor = loader(model_dir)
    predictor([_warmup_image()], mask_threshold=0.5)
    log.info("model loaded from %s in %.1fs", model_dir, time.perf_counter() - start)
    return predictor


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(e: ValidationError) -> str:
    problems = []
    for err in e.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        problems.append(f"{where}: {err['msg']}" if err["type"] != "missing" else f"missing field {where!r}")
    return "invalid request: " + "; ".join(problems) + ' (expected {"img_id": str, "img_data": base64 str})'


async def _read_request(request: Request, settings: ServeSettings) -> tuple[PredictRequest, bytes]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise RequestError(415, "content_type", f"Content-Type {media_type or 'missing'!r}: send application/json")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise RequestError(413, "body_too_large", f"request body of {declared} bytes is over the limit of {settings.max_body_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > settings.max_body_bytes:
            raise RequestError(413, "body_too_large", f"request body is over the limit of {settings.max_body_bytes} bytes")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, "invalid_json", f"request body is not valid JSON ({e})") from None
    if not isinstance(payload, dict):
        raise RequestError(422, "invalid_request", 'request body must be a JSON object {"img_id": ..., "img_data": ...}')
    try:
        req = PredictRequest.model_validate(payload)
    except ValidationError as e:
        raise RequestError(422, "invalid_request", _validation_message(e)) from None
    if len(req.img_data) > 4 * (settings.max_image_bytes // 3 + 1):
        raise RequestError(413, "image_too_large", f"img_data decodes to more than {settings.max_image_bytes} bytes")
    try:
        image = base64.b64decode(req.img_data, validate=True)
    except (binascii.Error, ValueError):
        try:  # MIME-style base64 wrapped in lines is still base64
            image = base64.b64decode("".join(req.img_data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, "bad_base64", "img_data is not valid base64 (standard alphabet, padded)") from None
    if not image:
        raise RequestError(400, "empty_image", "img_data is empty")
    return req, image


def create_app(
    model_dir: str | Path,
    settings: ServeSettings = ServeSettings(),
    *,
    loader: Callable[[Path], Any] | None = None,
) -> FastAPI:
    """The ASGI app serving the model in ``model_dir`` (a local model dir; see ``model_source``).

    loader: ``model_dir -> predictor`` (default ``maskrcnn.train.export.load_predictor``).
    """
    model_dir = Path(model_dir)
    if loader is None:
        from maskrcnn.train.export import load_predictor as loader
    metrics = ServeMetrics()
    state = ModelState()
    batcher = DynamicBatcher(
        lambda images, mask_threshold, score_threshold: state.predictor(
            images, mask_threshold=mask_threshold, score_threshold=score_threshold),
        max_batch_size=settings.max_batch_size,
        max_wait_s=settings.max_batch_wait_ms / 1000.0,
        workers=settings.model_workers,
        on_batch=metrics.observe_batch,
    )

    async def load_model() -> None:
        try:
            predictor = await asyncio.to_thread(_load, model_dir, loader)
        except Exception as e:  # noqa: BLE001 - reported by /healthz and /readyz
            state.error = f"{type(e).__name__}: {e}"
            log.exception("model load failed")
            return
        from maskrcnn.evaluate.model_id import model_id

        state.model_id = await asyncio.to_thread(model_id, model_dir)
        state.predictor = predictor
        metrics.ready.set(1)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        loading = asyncio.create_task(load_model())
        try:
            yield
        finally:
            loading.cancel()
            await batcher.stop()

    app = FastAPI(
        title="Mask R-CNN serving",
        version="1",
        description="SageMaker-compatible Mask R-CNN inference: boxes, classes, scores and RLE masks.",
        lifespan=lifespan,
    )
    app.state.model = state
    app.state.metrics = metrics

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        # The router leaves the matched route in the scope: label by template, not by raw URL.
        path = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(RequestError)
    async def request_error(request: Request, e: RequestError):
        metrics.errors.labels(e.reason).inc()
        log.info("rejected", extra={"path": request.url.path, "status": e.status, "reason": e.reason, "detail": e.message})
        return _error(e.status, e.message, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return _error(e.status_code, str(e.detail), getattr(e, "headers", None))

    request_body = {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")}},
    }
    error_responses = {
        s: {"model": ErrorResponse, "description": d}
        for s, d in {400: "bad JSON, base64 or image", 413: "over a size limit", 415: "not application/json",
                     422: "missing or invalid fields", 503: "not ready or overloaded (see Retry-After)",
                     504: "timed out"}.items()
    }

    async def predict(request: Request) -> Response:
        retry = {"Retry-After": str(settings.retry_after_s)}
        if not state.ready:
            raise RequestError(503, "not_ready", "model is loading; retry shortly", retry)
        if state.in_flight >= settings.max_in_flight:
            raise RequestError(503, "overloaded", f"server is at its limit of {settings.max_in_flight} requests; retry", retry)
        state.in_flight += 1
        metrics.in_flight.inc()
        start = time.perf_counter()
        try:
            req, image = await _read_request(request, settings)
            try:
                await run_in_threadpool(check_image, image, settings.max_image_pixels)
            except ImageRejected as e:
                raise RequestError(e.status, "bad_image", str(e)) from None
            try:
                det = await asyncio.wait_for(batcher.submit(image, req.mask_threshold, req.score_threshold), settings.request_timeout_s)
            except asyncio.TimeoutError:
                raise RequestError(504, "timeout", f"no result within {settings.request_timeout_s}s; retry later") from None
            except Exception as e:  # noqa: BLE001 - a failed model call must not take the server down
                if type(e).__name__ == "InvalidArgumentError":  # the model could not decode what Pillow could
                    raise RequestError(400, "bad_image", f"the model cannot decode img_data ({str(e).splitlines()[0]})") from None
                log.exception("model call failed", extra={"img_id": req.img_id})
                raise RequestError(500, "model_error", f"the model failed on this image ({type(e).__name__})") from None
            encode_start = time.perf_counter()
            body, count = await run_in_threadpool(_encode, det, req.score_threshold, req.rle)
            metrics.encode_seconds.observe(time.perf_counter() - encode_start)
            log.info("predict", extra={"path": request.url.path, "status": 200, "img_id": req.img_id, "detections": count,
                                       "latency_ms": round(1000 * (time.perf_counter() - start), 1)})
            return Response(body, media_type="application/json")
        finally:
            state.in_flight -= 1
            metrics.in_flight.dec()

    for path in PREDICT_PATHS:
        app.add_api_route(
            path, predict, methods=["POST"], name=f"predict{path.replace('/', '_')}",
            summary="Detect objects: boxes, classes, scores and masks",
            response_model=PredictResponse, responses=error_responses,
            openapi_extra={"requestBody": request_body},
        )

    @app.get("/ping", summary="SageMaker health check: 200 once the model is loaded")
    async def ping() -> Response:
        return Response(status_code=200 if state.ready else 503)

    @app.get("/readyz", summary="Readiness: 200 once the model is loaded")
    async def readyz() -> JSONResponse:
        if state.ready:
            return JSONResponse({"ready": True, "model_id": state.model_id})
        return JSONResponse({"ready": False, "error": state.error or "loading"}, status_code=503)

    @app.get("/healthz", summary="Liveness: 500 when the model failed to load")
    async def healthz() -> JSONResponse:
        if state.error:
            return JSONResponse({"status": "failed", "error": state.error}, status_code=500)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _encode(det: Any, score_threshold: float, rle: str) -> tuple[bytes, int]:
    """The response body (RLE + JSON), built off the event loop, and its number of annotations."""
    anns = annotations(det, score_threshold=score_threshold, rle=rle)
    return json.dumps({"annotations": anns}, separators=(",", ":")).encode(), len(anns)
