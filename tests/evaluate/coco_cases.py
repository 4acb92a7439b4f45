"""Hand-made COCO ground truth and perturbed detections, and plain pycocotools as the reference.

The set covers what COCOeval treats specially: crowd regions (ignored matches), objects in all
three area ranges, an image with more than 100 detections of one class (maxDets), images without
ground truth or detections, a class with ground truth but no detections, a class with detections
but no ground truth, and score ties.
"""

from __future__ import annotations

import copy
import io
import contextlib

import numpy as np
from pycocotools import mask as mask_utils

H, W = 160, 200
CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 3, "name": "square"}, {"id": 7, "name": "triangle"},
              {"id": 9, "name": "ghost"}]


def _box_polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _disk(cy, cx, r):
    yy, xx = np.mgrid[:H, :W]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def ground_truth_and_detections(seed: int = 0) -> tuple[dict, list[dict]]:
    """``(instances dict, detections list)``; detections perturb the ground truth in many ways."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []

    def add_gt(image_id, cat, segmentation, bbox, area, iscrowd=0):
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "segmentation": segmentation,
                     "bbox": [float(v) for v in bbox], "area": float(area), "iscrowd": iscrowd})

    def add_det(image_id, cat, mask, score):
        rle = _rle(mask)
        dets.append({"image_id": image_id, "category_id": cat, "score": float(score),
                     "bbox": [float(v) for v in mask_utils.toBbox(rle)], "segmentation": rle})

    for image_id in range(1, 13):
        images.append({"id": image_id, "file_name": f"{image_id:06d}.png", "height": H, "width": W})
        if image_id == 11:          # no ground truth, two false positives
            add_det(image_id, 1, _disk(50, 50, 10), 0.9)
            add_det(image_id, 7, _disk(80, 120, 30), 0.3)
            continue
        if image_id == 12:          # nothing at all
            continue
        # squares of three sizes (small 5..25, medium ~50, large ~110 px side)
        for side in (int(rng.integers(5, 25)), int(rng.integers(40, 80)), int(rng.integers(100, 140))):
            x, y = int(rng.integers(0, W - side)), int(rng.integers(0, H - side))
            add_gt(image_id, 3, _box_polygon(x, y, side, side), (x, y, side, side), side * side)
            m = np.zeros((H, W), np.uint8)
            dx, dy = int(rng.integers(-3, 4)), int(rng.integers(-3, 4))
            m[max(0, y + dy):y + dy + side, max(0, x + dx):x + dx + side] = 1
            if m.any() and rng.random() > 0.15:                      # some are missed
                add_det(image_id, 3, m, round(float(rng.random()), 2))  # rounded: score ties
        # circles, one crowd region per even image
        for _ in range(2):
            cy, cx, r = int(rng.integers(20, H - 20)), int(rng.integers(20, W - 20)), int(rng.integers(4, 40))
            disk = _disk(cy, cx, r)
            rle = _rle(disk)
            add_gt(image_id, 1, rle, mask_utils.toBbox(rle), mask_utils.area(rle))
            add_det(image_id, 1, _disk(cy + int(rng.integers(-4, 5)), cx, max(2, r + int(rng.integers(-5, 6)))),
                    rng.random())
        if image_id % 2 == 0:
            crowd = np.zeros((H, W), np.uint8)
            crowd[100:150, 10:90] = 1
            rle = _rle(crowd)
            add_gt(image_id, 1, rle, mask_utils.toBbox(rle), mask_utils.area(rle), iscrowd=1)
            for k in range(3):                                          # detections inside the crowd
                m = np.zeros((H, W), np.uint8)
                m[105 + 10 * k:120 + 10 * k, 20 + 20 * k:45 + 20 * k] = 1
                add_det(image_id, 1, m, 0.5 + 0.1 * k)
        # triangles: ground truth only (a class without detections), except in image 1
        add_gt(image_id, 7, [[10, 10, 60, 10, 35, 50]], (10, 10, 50, 40), 1000)
        if image_id == 1:
            m = np.zeros((H, W), np.uint8)
            m[10:50, 10:60] = 1
            add_det(image_id, 7, m, 0.7)
        # image 5: 130 jittered detections of one square (maxDets 1/10/100)
        if image_id == 5:
            for k in range(130):
                m = np.zeros((H, W), np.uint8)
                x, y = int(rng.integers(0, W - 30)), int(rng.integers(0, H - 30))
                m[y:y + 30, x:x + 30] = 1
                add_det(image_id, 3, m, rng.random())
    gt = {"images": images, "annotations": anns, "categories": CATEGORIES}
    return gt, dets


def exact_detections(gt: dict) -> list[dict]:
    """Detections identical to the non-crowd ground truth (score 1): AP must be 1."""
    dets = []
    for a in gt["annotations"]:
        if a["iscrowd"]:
            continue
        img = next(i for i in gt["images"] if i["id"] == a["image_id"])
        seg = a["segmentation"]
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, img["height"], img["width"])) if isinstance(seg, list) else seg
        rle = {"size": rle["size"], "counts": rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]}
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
                     "bbox": list(a["bbox"]), "segmentation": rle})
    return dets


def _results_for(dets: list[dict], iou_type: str) -> list[dict]:
    """A copy of the detections as the evaluators take them (no bbox for segm: the area comes from the mask)."""
    results = copy.deepcopy(dets)
    if iou_type == "segm":
        for d in results:
            d.pop("bbox", None)
    return results


def pycocotools_stats(gt: dict, dets: list[dict], iou_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Plain pycocotools: ``(stats[12], precision[T,R,K,A,M])`` (bbox dropped for segm, as ours)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        results = _results_for(dets, iou_type)
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:                       # pycocotools' loadRes cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats), ev.eval["precision"]


def faster_coco_eval_stats(gt: dict, dets: list[dict], iou_type: str) -> tuple[np.ndarray, np.ndarray]:
    """One plain faster-coco-eval run over all categories (the library our parallel version splits)."""
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt)
    coco_gt.createIndex()
    results = _results_for(dets, iou_type)
    ev = COCOeval_faster(coco_gt, coco_gt.loadRes(results), iou_type, print_function=lambda *a: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return np.asarray(ev.stats), ev.eval["precision"]
