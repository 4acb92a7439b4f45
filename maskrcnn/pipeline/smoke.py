"""The local deploy's smoke request: the serving contract (the SageMaker Mask R-CNN notebook's), checked strictly.

``POST {url}/invocations`` with ``{"img_id", "img_data": base64 of the file}`` must answer what
``maskrcnn.k8s.deploy.prediction_problems`` accepts (the cluster deploy's smoke check) and, since
here the image and the model are known, also: every box inside the image, every category id and
name from the model's class map, and run lengths that sum to height × width, so the notebook's
``rle_to_binary_mask`` rebuilds each mask.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any, Mapping


class SmokeFailure(RuntimeError):
    """The server answered, but not with the serving contract."""


def response_problems(response: Any, *, height: int, width: int, class_names: Mapping[int, str]) -> list[str]:
    """How an answer for a ``height`` × ``width`` image breaks the contract ([] = it keeps it)."""
    from maskrcnn.k8s.deploy import prediction_problems

    problems = prediction_problems(response, image_size=(height, width))
    if problems:
        return problems
    for i, annotation in enumerate(response["annotations"]):
        where = f"annotations[{i}]"
        x, y, w, h = annotation["bbox"]
        if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
            problems.append(f"{where}.bbox {annotation['bbox']} lies outside the {width}x{height} image")
        category_id = annotation["category_id"]
        if category_id not in class_names:
            problems.append(f"{where}.category_id {category_id} is not in the model's class map")
        elif annotation["category_name"] != class_names[category_id]:
            problems.append(f"{where}.category_name {annotation['category_name']!r} does not match id {category_id} "
                            f"({class_names[category_id]!r})")
        counts = annotation["segmentation"]["counts"]
        if not isinstance(counts, list) or sum(counts) != height * width:
            problems.append(f"{where}.segmentation.counts: run lengths must sum to height x width = {height * width}")
    return problems


def smoke_request(url: str, image_path: Path, class_map: Mapping[str, Mapping[str, Any]], *,
                  score_threshold: float = 0.05, timeout: float = 120.0) -> dict[str, Any]:
    """Send one image, check the answer, return ``{"status", "annotations", "latency_ms", "image"}``.

    ``class_map`` is the model's ``{coco_id: {"id", "name"}}``. The low ``score_threshold`` (the
    model's own test threshold, not the API's 0.5 default) makes a briefly trained model still
    return annotations, so their encoding is checked too. Raises SmokeFailure naming the problems.
    """
    import requests
    from PIL import Image

    with Image.open(image_path) as image:
        width, height = image.size
    body = {"img_id": image_path.name, "img_data": base64.b64encode(image_path.read_bytes()).decode(),
            "score_threshold": score_threshold}
    started = time.perf_counter()
    response = requests.post(f"{url.rstrip('/')}/invocations", json=body, timeout=timeout)
    latency_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SmokeFailure(f"POST /invocations answered HTTP {response.status_code}: {response.text[:200]}")
    answer = response.json()
    class_names = {int(coco_id): entry["name"] for coco_id, entry in class_map.items()}
    problems = response_problems(answer, height=height, width=width, class_names=class_names)
    if problems:
        raise SmokeFailure("the answer breaks the serving contract: " + "; ".join(problems[:5]))
    return {"status": response.status_code, "annotations": len(answer["annotations"]),
            "latency_ms": round(latency_ms, 1), "image": str(image_path)}
