"""From the model's detections to COCO's vocabulary: ``[x, y, width, height]`` boxes, compressed RLE.

Shared by ``evaluate`` (results JSON) and ``serve`` (HTTP responses). The model's ``Detections``
(``maskrcnn.train.export.load_predictor``) carry ``[y1, x1, y2, x2]`` boxes and already map the
contiguous classes to COCO ``category_ids`` and ``category_names``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Rounding of COCO results and HTTP responses alike (sub-pixel boxes, scores to 1e-5).
BOX_DECIMALS = 2
SCORE_DECIMALS = 5


def boxes_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``[n, 4]`` ``[y1, x1, y2, x2]`` -> ``[n, 4]`` ``[x, y, width, height]`` (float64, for JSON)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=1)


def encode_masks_coco(masks: np.ndarray) -> list[dict]:
    """``[n, H, W]`` binary masks -> pycocotools compressed RLE ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as mask_utils

    masks = np.asarray(masks, dtype=np.uint8)
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def coco_results(image_id: int, detections: Any) -> list[dict]:
    """One image's ``Detections`` as COCO results entries (``image_id``, ``category_id``, ``bbox``,
    ``score``, ``segmentation``)."""
    boxes = boxes_to_xywh(detections.boxes)
    segmentations = encode_masks_coco(detections.masks)
    return [
        {
            "image_id": int(image_id),
            "category_id": int(c),
            "bbox": [round(float(v), BOX_DECIMALS) for v in box],
            "score": round(float(s), SCORE_DECIMALS),
            "segmentation": seg,
        }
        for box, s, c, seg in zip(boxes, detections.scores, detections.category_ids, segmentations)
    ]
