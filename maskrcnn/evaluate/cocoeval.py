"""COCOeval on faster-coco-eval's C++ core, with disjoint category subsets evaluated in parallel.

COCO's matching, accumulation and the per-category precision/recall are independent across
categories (``maxDets`` applies per image *and* category), so the category axis can be split:
each worker process loads only its categories' detections, runs ``evaluate`` + ``accumulate`` on
them, and returns its slices of ``precision [T, R, K, A, M]``, ``recall [T, K, A, M]`` and
``scores``; the parent puts the slices back in category order and runs ``summarize`` once. The
numbers are pycocotools' exactly (tests compare them), the wall time shrinks with the cores.

Workers are forked, so the ground truth and the detections are shared copy-on-write instead of
being pickled; where fork is unavailable (or ``workers=1``) the tasks run in this process.

Mask AP uses the mask's own area for the small/medium/large ranges and the mask's box, as
``loadRes`` does for results without a ``bbox`` field (Detectron2's COCOEvaluator drops the field
for the same reason: with it, ``loadRes`` would take the box area).
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")

# Filled in just before forking the workers (inherited copy-on-write), emptied afterwards.
_SHARED: dict[str, Any] = {}


@dataclass(frozen=True)
class CocoEvalResult:
    """One IoU type's evaluation.

    ``stats``: the 12 COCO summary numbers by name (``STAT_NAMES``), -1 where undefined.
    ``per_category_ap``: COCO category id -> AP@[.50:.95] (all areas, 100 detections), -1 when the
    category has no ground truth. ``precision``: float64 ``[T=10, R=101, K, A=4, M=3]``, categories
    in ascending id order (pycocotools' layout).
    """

    iou_type: str
    stats: dict[str, float]
    per_category_ap: dict[int, float]
    precision: np.ndarray


def load_ground_truth(annotations: str | os.PathLike | Mapping[str, Any]):
    """A faster-coco-eval ``COCO`` from an ``instances_*.json`` path or an already-loaded dict."""
    from faster_coco_eval import COCO

    if isinstance(annotations, Mapping):
        gt = COCO()
        gt.dataset = dict(annotations)
        gt.createIndex()
        return gt
    return COCO(str(annotations))


def partition_categories(weights: Mapping[int, int], parts: int) -> list[list[int]]:
    """Split category ids into ``parts`` non-empty groups of similar total weight (greedy, heaviest first)."""
    parts = max(1, min(parts, len(weights)))
    groups: list[list[int]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for cat_id in sorted(weights, key=lambda c: (-weights[c], c)):
        lightest = loads.index(min(loads))
        groups[lightest].append(cat_id)
        loads[lightest] += weights[cat_id]
    return [sorted(g) for g in groups if g]


def _result_subset(cat_ids: Iterable[int]) -> list[dict]:
    """The detections of ``cat_ids``, ready for ``load_results`` (which mutates them).

    A forked worker mutates its own copy-on-write pages; in this process the caller's dicts are
    copied first.
    """
    by_category = _SHARED["detections_by_category"]
    subset = [d for c in cat_ids for d in by_category.get(c, ())]
    return subset if _SHARED["forked"] else [dict(d) for d in subset]


def load_results(ground_truth, results: list[dict], iou_type: str):
    """A results ``COCO`` like ``ground_truth.loadRes(results)``, with one vectorized mask call.

    ``loadRes`` computes each mask's area and box in a Python loop (a call per detection); here
    one call covers every detection, with the same values (``results`` is mutated, as there).
    pycocotools' RLE decoder is used for this step: it is twice as fast as faster-coco-eval's.
    """
    from faster_coco_eval import COCO
    from pycocotools import mask as mask_utils

    if iou_type == "segm" and results:
        segmentations = [r["segmentation"] for r in results]
        areas, boxes = mask_utils.area(segmentations), mask_utils.toBbox(segmentations)
        for r, area, box in zip(results, areas, boxes):
            r["area"] = area
            r["bbox"] = box  # the mask's box, as loadRes gives results without a bbox field
    elif iou_type == "bbox":
        for r in results:
            r["area"] = r["bbox"][2] * r["bbox"][3]
    for index, r in enumerate(results):
        r["id"] = index + 1
        r["iscrowd"] = 0
    dt = COCO()
    dt.dataset = {"images": list(ground_truth.dataset["images"]), "categories": copy.deepcopy(ground_truth.dataset["categories"]),
                  "annotations": results}
    dt.createIndex()
    return dt


def _evaluate_iou_type(iou_type: str, cat_ids: list[int]) -> dict[str, np.ndarray]:
    """Evaluate + accumulate one IoU type on one category subset."""
    from faster_coco_eval import COCOeval_faster

    gt = _SHARED["ground_truth"]
    dt = load_results(gt, _result_subset(cat_ids), iou_type)
    ev = COCOeval_faster(gt, dt, iou_type, print_function=log.debug)
    ev.params.catIds = list(cat_ids)
    if _SHARED["image_ids"] is not None:
        ev.params.imgIds = list(_SHARED["image_ids"])
    ev.evaluate()
    ev.accumulate()
    return {k: np.asarray(ev.eval[k]) for k in ("precision", "recall", "scores")}


def _evaluate_subset(cat_ids: list[int]) -> list[tuple[str, list[int], dict[str, np.ndarray]]]:
    """Every IoU type on one category subset (one worker's task).

    bbox runs before segm: a forked worker reuses its detection dicts, and ``load_results`` for
    segm overwrites everything the bbox pass set (area, bbox, id), never the other way round.
    """
    order = sorted(_SHARED["iou_types"], key=IOU_TYPES.index)
    return [(t, list(cat_ids), _evaluate_iou_type(t, cat_ids)) for t in order]


def _summarize(gt, iou_type: str, cat_ids: Sequence[int], arrays: Mapping[str, np.ndarray]) -> CocoEvalResult:
    from faster_coco_eval import COCOeval_faster

    ev = COCOeval_faster(gt, None, iou_type, print_function=log.debug)
    ev.params.catIds = list(cat_ids)
    ev.eval = dict(arrays)
    ev.summarize()
    precision = arrays["precision"]
    per_category = {}
    for k, cat_id in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1]
        per_category[int(cat_id)] = float(np.mean(p[p > -1])) if np.any(p > -1) else -1.0
    stats = {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}
    return CocoEvalResult(iou_type=iou_type, stats=stats, per_category_ap=per_category, precision=precision)


def _merge(cat_ids: Sequence[int], parts: list[tuple[list[int], dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """Place each subset's slices at its categories' positions along the K axis."""
    index = {c: k for k, c in enumerate(cat_ids)}
    first = parts[0][1]
    merged = {
        "precision": np.full(first["precision"].shape[:2] + (len(cat_ids),) + first["precision"].shape[3:], -1.0),
        "recall": np.full(first["recall"].shape[:1] + (len(cat_ids),) + first["recall"].shape[2:], -1.0),
        "scores": np.full(first["scores"].shape[:2] + (len(cat_ids),) + first["scores"].shape[3:], -1.0),
    }
    for sub_ids, arrays in parts:
        ks = [index[c] for c in sub_ids]
        merged["precision"][:, :, ks] = arrays["precision"]
        merged["recall"][:, ks] = arrays["recall"]
        merged["scores"][:, :, ks] = arrays["scores"]
    return merged


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def evaluate_coco(
    ground_truth,
    detections: Sequence[Mapping[str, Any]],
    iou_types: Sequence[str] = IOU_TYPES,
    workers: int | None = None,
    image_ids: Sequence[int] | None = None,
) -> dict[str, CocoEvalResult]:
    """COCO box/mask AP of ``detections`` against ``ground_truth`` (a ``load_ground_truth`` result).

    ``detections``: COCO results (``image_id``, ``category_id``, ``score``, ``bbox`` ``[x, y, w, h]``,
    ``segmentation`` compressed RLE); an empty list is valid (AP 0 where there is ground truth).
    ``workers``: processes (default: the usable cores); the result does not depend on it.
    ``image_ids``: evaluate only these images (default: every ground-truth image).
    """
    for t in iou_types:
        if t not in IOU_TYPES:
            raise ValueError(f"iou type {t!r}: expected one of {IOU_TYPES}")
    workers = workers or default_workers()
    cat_ids = sorted(ground_truth.getCatIds())
    by_category: dict[int, list] = defaultdict(list)
    for d in detections:
        by_category[d["category_id"]].append(d)
    unknown = set(by_category) - set(cat_ids)
    if unknown:
        raise ValueError(f"detections name categories absent from the ground truth: {sorted(unknown)}")
    unknown = {d["image_id"] for d in detections} - set(ground_truth.getImgIds())
    if unknown:
        raise ValueError(f"detections name images absent from the ground truth, e.g. {min(unknown)}")
    weights = {c: len(by_category.get(c, ())) + len(ground_truth.catToImgs.get(c, ())) + 1 for c in cat_ids}
    # One category group per worker process: a fork of a large process costs, so fork once each.
    groups = partition_categories(weights, workers)
    forked = len(groups) > 1 and "fork" in multiprocessing.get_all_start_methods()
    _SHARED.update(ground_truth=ground_truth, detections_by_category=by_category, image_ids=image_ids,
                   iou_types=tuple(iou_types), forked=forked)
    try:
        if forked:
            with multiprocessing.get_context("fork").Pool(len(groups)) as pool:
                outputs = [o for part in pool.imap_unordered(_evaluate_subset, groups) for o in part]
        else:
            outputs = _evaluate_subset(groups[0])
    finally:
        _SHARED.clear()

    results = {}
    for iou_type in iou_types:
        parts = [(ids, arrays) for t, ids, arrays in outputs if t == iou_type]
        results[iou_type] = _summarize(ground_truth, iou_type, cat_ids, _merge(cat_ids, parts))
    return results
