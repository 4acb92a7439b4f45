"""``run_evaluation``: model dir + val shards + COCO annotations -> eval dir (the architecture's contract).

Writes ``detections.json`` (COCO results), ``metrics.json``, ``samples/*.png``, ``report.md`` and
``report.html``. Under Horovod every rank infers its share; rank 0 gathers, evaluates and writes,
and every rank returns the same metrics.
"""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from maskrcnn.errors import UserError
from maskrcnn.evaluate.cocoeval import IOU_TYPES, evaluate_coco, load_ground_truth
from maskrcnn.evaluate.detections import boxes_to_xywh
from maskrcnn.evaluate.inference import InferenceOutput, run_inference, shard_files
from maskrcnn.evaluate.model_id import model_id
from maskrcnn.evaluate.report import write_html, write_markdown
from maskrcnn.evaluate.visualize import render_curves, render_detections
from maskrcnn.utils.io import atomic_write, read_json, write_json

log = logging.getLogger(__name__)

SAMPLE_SCORE_THRESHOLD = 0.5


def metrics_from_results(results: dict, gt, *, num_images: int, num_detections: int, model: str) -> dict[str, Any]:
    """The ``metrics.json`` document from ``evaluate_coco`` results."""
    names = {c["id"]: c["name"] for c in gt.loadCats(gt.getCatIds())}
    per_class = {
        names[cat_id]: {t: results[t].per_category_ap[cat_id] for t in IOU_TYPES}
        for cat_id in sorted(names)
    }
    return {
        **{t: results[t].stats for t in IOU_TYPES},
        "per_class": per_class,
        "num_images": num_images,
        "num_detections": num_detections,
        "model_id": model,
    }


def _gather(replica, local: InferenceOutput) -> InferenceOutput:
    """All ranks' results on every rank (samples stay rank 0's)."""
    if replica.size == 1:
        return local
    parts = replica.hvd.allgather_object((local.results, local.image_ids), name="eval_results")
    return InferenceOutput(
        results=[r for results, _ in parts for r in results],
        image_ids=[i for _, ids in parts for i in ids],
        samples=local.samples,
    )


def _sample_picture(image: np.ndarray, det, gt, image_id: int):
    """Ground truth (left) beside the predictions (right): those scoring >= 0.5, or the 3 best
    when none does (labels carry the scores)."""
    from PIL import Image

    anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=[image_id])) if not a.get("iscrowd", 0)]
    names = {c["id"]: c["name"] for c in gt.loadCats(gt.getCatIds())}
    gt_masks = np.stack([gt.annToMask(a) for a in anns]) if anns else np.zeros((0,) + image.shape[:2], np.uint8)
    left = render_detections(image, np.array([a["bbox"] for a in anns]).reshape(-1, 4), gt_masks,
                             [f"{names[a['category_id']]}:{a['category_id']}" for a in anns])
    scores = np.asarray(det.scores)
    keep = np.flatnonzero(scores >= SAMPLE_SCORE_THRESHOLD)
    if keep.size == 0:
        keep = np.argsort(-scores, kind="stable")[:3]
    labels = [f"{det.category_names[k]}:{det.category_ids[k]} {scores[k]:.2f}" for k in keep]
    right = render_detections(image, boxes_to_xywh(det.boxes)[keep], np.asarray(det.masks)[keep], labels)
    picture = Image.new("RGB", (left.width * 2 + 8, left.height), "white")
    picture.paste(left, (0, 0))
    picture.paste(right, (left.width + 8, 0))
    return picture


def write_samples(samples, gt, out_dir: Path) -> list[Path]:
    """Render each sample to ``out_dir/samples/<image_id>.png`` (ground truth | predictions)."""
    from PIL import Image

    paths = []
    for image_id, encoded, det in samples:
        image = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
        path = out_dir / "samples" / f"{image_id}.png"
        with atomic_write(path) as f:
            _sample_picture(image, det, gt, image_id).save(f, format="PNG")
        paths.append(path)
    return paths


def write_loss_curve(model_dir: Path, out_dir: Path) -> Path | None:
    """``samples/loss_curve.png`` from ``train_summary.json``'s loss curve, if training left one."""
    summary_path = model_dir / "train_summary.json"
    if not summary_path.is_file():
        return None
    curve = read_json(summary_path).get("loss_curve") or []
    if not curve:
        return None
    keys = [k for k in curve[0] if k.startswith("loss_") or k == "total_loss"]
    steps = [e["step"] for e in curve]
    picture = render_curves({k: (steps, [float(e.get(k, np.nan)) for e in curve]) for k in keys}, "training loss")
    path = out_dir / "samples" / "loss_curve.png"
    with atomic_write(path) as f:
        picture.save(f, format="PNG")
    return path


def run_evaluation(
    *,
    model_dir: str | os.PathLike,
    data: str | os.PathLike,
    annotations: str | os.PathLike,
    out_dir: str | os.PathLike,
    batch_size: int | None = None,
    num_samples: int = 4,
    workers: int | None = None,
) -> dict[str, Any]:
    """Evaluate the model in ``model_dir`` on the shards in ``data``; return the metrics."""
    from maskrcnn.config import load_yaml
    from maskrcnn.train.distributed import init_replica
    from maskrcnn.train.export import load_predictor

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not Path(annotations).is_file():
        raise UserError(f"annotations file {annotations} not found: pass instances_val2017.json of the val split")
    config_path = model_dir / "config.yaml"
    if not config_path.is_file():
        raise UserError(f"{config_path} not found: pass a model dir written by `maskrcnn train`")
    cfg = load_yaml(str(config_path))
    files = shard_files(data)
    manifest = Path(data) / "manifest.json"
    total = read_json(manifest)["num_images"] if manifest.is_file() else None

    replica = init_replica()
    predictor = load_predictor(model_dir)
    start = time.perf_counter()
    local = run_inference(
        predictor, files, batch_size=batch_size or cfg.TEST.BATCH_SIZE, mask_threshold=cfg.TEST.MASK_THRESH,
        num_samples=num_samples if replica.is_chief else 0, rank=replica.rank, world_size=replica.size,
        total_images=total,
    )
    gathered = _gather(replica, local)
    log.info("inference: %d images, %d detections in %.1fs", len(gathered.image_ids), len(gathered.results),
             time.perf_counter() - start)

    metrics: dict[str, Any] = {}
    if replica.is_chief:
        metrics = _evaluate_and_report(gathered, model_dir, annotations, out_dir, workers)
    if replica.size > 1:
        metrics = replica.hvd.broadcast_object(metrics, root_rank=0, name="eval_metrics")
    return metrics


def _evaluate_and_report(gathered: InferenceOutput, model_dir: Path, annotations, out_dir: Path, workers) -> dict:
    gt = load_ground_truth(annotations)
    unknown = set(gathered.image_ids) - set(gt.getImgIds())
    if unknown:
        raise UserError(
            f"{len(unknown)} images in the shards are not in {annotations} (e.g. id {min(unknown)}): "
            "pass the annotations the val shards were converted from"
        )
    if len(gathered.image_ids) < len(gt.getImgIds()):
        log.warning("evaluating %d of the %d annotated images (the others are not in the shards)",
                    len(gathered.image_ids), len(gt.getImgIds()))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "detections.json", gathered.results, indent=None)
    start = time.perf_counter()
    try:
        results = evaluate_coco(gt, gathered.results, workers=workers, image_ids=sorted(set(gathered.image_ids)))
    except ValueError as e:  # the model's class map does not match these annotations
        raise UserError(f"{e}: evaluate with the annotations of the class set the model was trained on") from None
    log.info("COCOeval bbox+segm in %.1fs", time.perf_counter() - start)
    metrics = metrics_from_results(
        results, gt, num_images=len(set(gathered.image_ids)), num_detections=len(gathered.results),
        model=model_id(model_dir),
    )
    write_json(out_dir / "metrics.json", metrics)
    samples = write_samples(gathered.samples, gt, out_dir)
    curve = write_loss_curve(model_dir, out_dir)
    write_markdown(out_dir / "report.md", metrics, samples, curve)
    write_html(out_dir / "report.html", metrics, samples, curve)
    log.info("bbox AP %.4f, segm AP %.4f -> %s", metrics["bbox"]["AP"], metrics["segm"]["AP"], out_dir)
    return metrics
