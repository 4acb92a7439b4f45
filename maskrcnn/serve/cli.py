"""`maskrcnn serve`, `maskrcnn predict` and `maskrcnn model package`."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)

# SageMaker hosting: the model is extracted here and the container listens on 8080.
SAGEMAKER_MODEL_DIR = "/opt/ml/model"
SAGEMAKER_PORT = 8080


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from maskrcnn.serve.app import create_app
    from maskrcnn.serve.json_logs import use_json_logs
    from maskrcnn.serve.model_source import resolve_model_dir
    from maskrcnn.serve.settings import ServeSettings

    if args.log_format == "json":
        use_json_logs()
    try:
        settings = ServeSettings(
            max_body_bytes=args.max_body_bytes, max_image_bytes=args.max_image_bytes,
            max_image_pixels=args.max_image_pixels, max_in_flight=args.max_in_flight,
            max_batch_size=args.max_batch_size, max_batch_wait_ms=args.max_batch_wait_ms,
            model_workers=args.model_workers, request_timeout_s=args.request_timeout,
        )
    except ValueError as e:
        from maskrcnn.errors import UserError

        raise UserError(f"serve: {e}") from None
    model_dir = resolve_model_dir(args.model_dir, args.cache_dir)
    log.info("serving %s on %s:%d (batch <= %d)", model_dir, args.host, args.port, settings.max_batch_size)
    uvicorn.run(create_app(model_dir, settings), host=args.host, port=args.port, log_config=None,
                access_log=False, timeout_graceful_shutdown=30)
    return 0


def _request_url(url: str) -> str:
    parsed = urlparse(url)
    return url.rstrip("/") + "/invocations" if parsed.path in ("", "/") else url


def _predict(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from maskrcnn.errors import UserError
    from maskrcnn.evaluate.visualize import render_detections
    from maskrcnn.serve.rle import row_major_decode
    from maskrcnn.utils.io import atomic_write, write_json

    image_path = Path(args.image)
    if not image_path.is_file():
        raise UserError(f"image {image_path} not found")
    data = image_path.read_bytes()
    if args.url:
        import requests

        body = {"img_id": image_path.name, "img_data": base64.b64encode(data).decode("ascii"),
                "score_threshold": args.score_threshold, "mask_threshold": args.mask_threshold}
        try:
            reply = requests.post(_request_url(args.url), json=body, timeout=args.timeout)
        except requests.RequestException as e:
            raise UserError(f"cannot reach {args.url} ({e})") from None
        if reply.status_code != 200:
            raise UserError(f"{args.url} answered {reply.status_code}: {reply.text[:300]}")
        result = reply.json()
    else:
        from maskrcnn.serve.model_source import resolve_model_dir
        from maskrcnn.serve.response import annotations
        from maskrcnn.train.export import load_predictor

        predictor = load_predictor(resolve_model_dir(args.model_dir))
        (det,) = predictor([data], mask_threshold=args.mask_threshold)
        result = {"annotations": annotations(det, score_threshold=args.score_threshold)}
    try:
        image = np.asarray(Image.open(image_path).convert("RGB"))
    except OSError as e:
        raise UserError(f"{image_path} is not a readable image ({e})") from None
    anns = result["annotations"]
    masks = np.stack([row_major_decode(a["segmentation"]["counts"], a["segmentation"]["size"]) for a in anns]) \
        if anns else np.zeros((0,) + image.shape[:2], np.uint8)
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    labels = [f"{a['category_name']}:{a['category_id']} {a['score']:.2f}" for a in anns]
    with atomic_write(args.out) as f:
        render_detections(image, boxes, masks, labels).save(f, format="PNG")
    if args.json:
        write_json(args.json, result, indent=None)
    sys.stdout.write(json.dumps({"detections": len(anns), "out": str(args.out)}) + "\n")
    return 0


def _package(args: argparse.Namespace) -> int:
    from maskrcnn.serve.package import package_model

    out = package_model(args.model_dir, args.out)
    sys.stdout.write(f"{out}\n")
    return 0


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    from maskrcnn.serve.settings import ServeSettings

    d = ServeSettings()
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", SAGEMAKER_MODEL_DIR),
                        help="model dir, model.tar.gz or s3://...; $SM_MODEL_DIR when set")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", SAGEMAKER_PORT)))
    parser.add_argument("--cache-dir", default=None, help="where archives and S3 models are unpacked")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    limits.add_argument("--max-image-bytes", type=int, default=d.max_image_bytes)
    limits.add_argument("--max-image-pixels", type=int, default=d.max_image_pixels)
    limits.add_argument("--max-in-flight", type=int, default=d.max_in_flight, help="admitted requests; more get 503")
    limits.add_argument("--request-timeout", type=float, default=d.request_timeout_s, help="seconds before a 504")
    batching = parser.add_argument_group("batching")
    batching.add_argument("--max-batch-size", type=int, default=d.max_batch_size, help="> 1 enables dynamic batching")
    batching.add_argument("--max-batch-wait-ms", type=float, default=d.max_batch_wait_ms)
    batching.add_argument("--model-workers", type=int, default=d.model_workers, help="concurrent model calls")
    parser.add_argument("--log-format", choices=["json", "text"], default="json")


def register(commands) -> None:
    """Add this stage's subcommands (see maskrcnn.cli.Commands)."""
    serve = commands.command("serve", "HTTP server with the SageMaker Mask R-CNN contract (FastAPI on uvicorn)", _serve)
    _add_serve_arguments(serve)

    predict = commands.command("predict", "detect objects in one image (locally or via a server) and render them", _predict)
    predict.add_argument("image", help="JPEG/PNG file")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="model dir, model.tar.gz or s3://...")
    source.add_argument("--url", help="server URL (e.g. http://127.0.0.1:8080; /invocations is added)")
    predict.add_argument("--out", required=True, help="rendered PNG to write")
    predict.add_argument("--json", default=None, help="also write the response JSON here")
    predict.add_argument("--score-threshold", type=float, default=0.5)
    predict.add_argument("--mask-threshold", type=float, default=0.5)
    predict.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server")

    package = commands.subcommand("model", "package", "model.tar.gz for SageMaker's ModelDataUrl (deterministic)", _package)
    package.add_argument("--model-dir", required=True)
    package.add_argument("--out", required=True, help="archive to write, e.g. model.tar.gz")
