"""The evaluate step: COCO box and mask AP of the trained model on val2017, and its reports."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from maskrcnn.pipeline import reports
from maskrcnn.utils.io import read_json

log = logging.getLogger(__name__)

# The scalars shown in the KFP UI (Metrics artifact), named by what they measure.
UI_METRICS = {"box": "bbox", "mask": "segm"}
UI_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def ui_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """``{"box_AP": .., "box_AP50": .., "mask_AP": .., ...}`` from ``metrics.json``."""
    return {
        f"{name}_{stat}": float(metrics[kind][stat])
        for name, kind in UI_METRICS.items()
        for stat in UI_STATS
        if stat in metrics.get(kind, {})
    }


def evaluate_step(*, model_path: str, shards_path: str, coco_path: str) -> dict[str, Any]:
    """Evaluate into ``<run dir>/eval`` (beside the model dir).

    Returns ``{"metrics": metrics.json content, "eval_dir": path, "html": report, "markdown": summary}``.
    """
    from maskrcnn.evaluate import run_evaluation

    model_dir = Path(model_path)
    eval_dir = model_dir.parent / "eval"
    metrics = run_evaluation(
        model_dir=str(model_dir),
        data=str(Path(shards_path) / "val2017"),
        annotations=str(Path(coco_path) / "annotations" / "instances_val2017.json"),
        out_dir=str(eval_dir),
    )
    summary_path = model_dir / "train_summary.json"
    train_summary = read_json(summary_path) if summary_path.is_file() else {}
    log.info("evaluation: box AP %.4f, mask AP %.4f", metrics["bbox"]["AP"], metrics["segm"]["AP"])
    return {
        "metrics": metrics,
        "eval_dir": str(eval_dir),
        "html": reports.evaluation_html(eval_dir, metrics, train_summary),
        "markdown": reports.evaluation_markdown(metrics, train_summary, eval_dir),
    }
