"""A smoke request with the serving contract (the SageMaker Mask R-CNN notebook's), checked strictly.

``POST {url}/invocations`` with ``{"img_id", "img_data": base64 of the file}`` must answer
``{"annotations": [...]}`` where each annotation has ``bbox`` ``[x, y, width, height]`` inside the
image, a ``score`` in [0, 1], a COCO ``category_id`` and its ``category_name`` from the model's
class map, and a ``segmentation`` whose uncompressed row-major RLE ``counts`` sum to height × width.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any, Mapping

from PIL import Image


class SmokeFailure(RuntimeError):
    """The server answered, but not with the serving contract."""


def check_annotation(annotation: Mapping[str, Any], *, height: int, width: int, class_names: Mapping[int, str]) -> None:
    """Raise SmokeFailure naming the first field that breaks the contract."""
    bbox = annotation.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        raise SmokeFailure(f"bbox must be [x, y, width, height], got {bbox!r}")
    x, y, w, h = bbox
    if w < 0 or h < 0 or x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
        raise SmokeFailure(f"bbox {bbox} lies outside the {width}x{height} image")
    score = annotation.get("score")
    if not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:
        raise SmokeFailure(f"score must be a number in [0, 1], got {score!r}")
    category_id = annotation.get("category_id")
    if category_id not in class_names:
        raise SmokeFailure(f"category_id {category_id!r} is not in the model's class map")
    if annotation.get("category_name") != class_names[category_id]:
        raise SmokeFailure(
            f"category_name {annotation.get('category_name')!r} does not match id {category_id} ({class_names[category_id]!r})"
        )
    segmentation = annotation.get("segmentation") or {}
    counts, size = segmentation.get("counts"), segmentation.get("size")
    if size != [height, width]:
        raise SmokeFailure(f"segmentation size {size!r} is not the image's [height, width] = {[height, width]}")
    if not isinstance(counts, list) or sum(counts) != height * width:
        raise SmokeFailure("segmentation counts must be run lengths summing to height x width")


def smoke_request(url: str, image_path: Path, class_map: Mapping[str, Mapping[str, Any]], *,
                  score_threshold: float = 0.05, timeout: float = 120.0) -> dict[str, Any]:
    """Send one image, check the answer, return ``{"status", "annotations", "latency_ms", "image"}``.

    ``class_map`` is the model's ``{coco_id: {"id", "name"}}``. The low ``score_threshold`` (the
    model's own test threshold, not the API's 0.5 default) makes a briefly trained model still
    return annotations, so their encoding is checked too.
    """
    import requests

    with Image.open(image_path) as image:
        width, height = image.size
    body = {"img_id": image_path.name, "img_data": base64.b64encode(image_path.read_bytes()).decode(),
            "score_threshold": score_threshold}
    started = time.perf_counter()
    response = requests.post(f"{url.rstrip('/')}/invocations", json=body, timeout=timeout)
    latency_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SmokeFailure(f"POST /invocations answered HTTP {response.status_code}: {response.text[:200]}")
    annotations = response.json().get("annotations")
    if not isinstance(annotations, list):
        raise SmokeFailure("the answer has no 'annotations' list")
    class_names = {int(coco_id): entry["name"] for coco_id, entry in class_map.items()}
    for annotation in annotations:
        check_annotation(annotation, height=height, width=width, class_names=class_names)
    return {"status": response.status_code, "annotations": len(annotations), "latency_ms": round(latency_ms, 1),
            "image": str(image_path)}
