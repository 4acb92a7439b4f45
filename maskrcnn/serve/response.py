"""The contract's response: ``{"annotations": [{bbox, score, category_id, category_name, segmentation}]}``."""

from __future__ import annotations

from typing import Any

import numpy as np

from maskrcnn.evaluate.detections import BOX_DECIMALS, SCORE_DECIMALS, boxes_to_xywh, encode_masks_coco
from maskrcnn.serve.rle import row_major_counts


def annotations(detections: Any, *, score_threshold: float, rle: str = "row") -> list[dict]:
    """One image's ``Detections`` with ``score >= score_threshold`` as contract annotations.

    rle: ``"row"`` (the notebook's row-major uncompressed counts) or ``"coco"`` (pycocotools
    compressed, column-major, counts as a string).
    """
    keep = np.asarray(detections.scores) >= score_threshold
    masks = np.asarray(detections.masks)[keep]
    height, width = (int(v) for v in detections.image_size)
    if rle == "coco":
        counts = [r["counts"] for r in encode_masks_coco(masks)]
    else:
        counts = row_major_counts(masks)
    boxes = boxes_to_xywh(np.asarray(detections.boxes)[keep])
    ids = np.asarray(detections.category_ids)[keep]
    names = [n for n, k in zip(detections.category_names, keep) if k]
    scores = np.asarray(detections.scores)[keep]
    return [
        {
            "bbox": [round(float(v), BOX_DECIMALS) for v in box],
            "score": round(float(score), SCORE_DECIMALS),
            "category_id": int(cat),
            "category_name": name,
            "segmentation": {"counts": c, "size": [height, width]},
        }
        for box, score, cat, name, c in zip(boxes, scores, ids, names, counts)
    ]
