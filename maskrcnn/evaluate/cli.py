"""`maskrcnn evaluate`: COCO box and mask AP of a model dir on the val shards, with a report."""

from __future__ import annotations

import argparse
import json
import sys


def _evaluate(args: argparse.Namespace) -> int:
    from maskrcnn.evaluate.run import run_evaluation

    metrics = run_evaluation(
        model_dir=args.model_dir, data=args.data, annotations=args.annotations, out_dir=args.out,
        batch_size=args.batch_size, num_samples=args.samples, workers=args.workers,
    )
    if metrics:
        summary = {t: {k: round(metrics[t][k], 4) for k in ("AP", "AP50", "AP75")} for t in ("bbox", "segm")}
        sys.stdout.write(json.dumps({**summary, "num_images": metrics["num_images"], "model_id": metrics["model_id"]}) + "\n")
    return 0


def register(commands) -> None:
    """Add this stage's subcommands (see maskrcnn.cli.Commands)."""
    parser = commands.command(
        "evaluate", "COCO bbox/segm AP of a model dir on val shards; writes detections, metrics and a report", _evaluate
    )
    parser.add_argument("--model-dir", required=True, help="model dir written by `maskrcnn train` (saved_model/, class_map.json)")
    parser.add_argument("--data", required=True, help="val shards dir (or a glob of .tfrecord files)")
    parser.add_argument("--annotations", required=True, help="COCO instances_val2017.json the shards came from")
    parser.add_argument("--out", required=True, help="eval dir to write")
    parser.add_argument("--batch-size", type=int, default=None, help="images per inference call (default: TEST.BATCH_SIZE)")
    parser.add_argument("--samples", type=int, default=4, help="images rendered into the report")
    parser.add_argument("--workers", type=int, default=None, help="COCOeval processes (default: usable cores)")
