"""Does it learn? The ``tiny`` preset on the generated shapes dataset, within a training-time budget.

Recipe: ``maskrcnn data synth`` (--train / --val images, cached under --workdir) → ``data convert``
→ a short calibration run measures this machine's step time → ``run_training`` with as many steps
as fit in --budget-seconds (the epoch-based LR schedule is kept as fractions of that many steps) →
the exported SavedModel (``load_predictor``) predicts the held-out val2017 split → box AP and mask AP
from pycocotools' COCOeval. Prints the loss curve and one JSON line with the figures.
Target: box AP >= 0.5 and mask AP >= 0.5 after at most 10 minutes of training on 2 CPU cores.

    .venv/bin/python benchmarks/learn_shapes.py [--train 800 --val 100] [--budget-seconds 600] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

log = logging.getLogger("learn_shapes")


def prepare_data(workdir: Path, train: int, val: int, seed: int) -> tuple[Path, Path]:
    """Generated COCO dir and its shards (both cached: reused when they exist)."""
    from maskrcnn.data.convert import convert
    from maskrcnn.data.synth import generate

    coco = workdir / f"coco-{train}-{val}-seed{seed}"
    if not (coco / "annotations" / "instances_val2017.json").exists():
        generate(coco, train=train, val=val, seed=seed)
    shards = workdir / f"shards-{train}-{val}-seed{seed}"
    for split in ("train2017", "val2017"):
        if not (shards / split / "manifest.json").exists():
            convert(annotations=coco / "annotations" / f"instances_{split}.json", images_dir=coco / split,
                    out_dir=shards / split, split=split, shards=4, workers=2)
    return coco, shards


def calibrate(cfg, shards: Path, workdir: Path, steps: int = 16) -> float:
    """Median seconds per training step on this machine (first steps, which include tracing, left out)."""
    from maskrcnn.config import apply_overrides
    from maskrcnn.train.loop import run_training

    out = workdir / "calibration"
    shutil.rmtree(out, ignore_errors=True)
    summary = run_training(apply_overrides(cfg, [f"TRAIN.MAX_STEPS={steps}", "TRAIN.LOG_EVERY=1"]),
                           shards / "train2017", out, export=False)
    rates = [e["images_per_second"] for e in summary["loss_curve"][3:]]
    return summary["global_batch"] / statistics.median(rates)


def evaluate(model_dir: Path, coco: Path, batch: int = 8) -> dict[str, float]:
    """Box and mask AP of the exported model on val2017, with pycocotools' COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from maskrcnn.evaluate.detections import coco_results
    from maskrcnn.train.export import load_predictor

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco / "annotations" / "instances_val2017.json"))
    predictor = load_predictor(model_dir)
    images = gt.loadImgs(gt.getImgIds())
    results: list[dict] = []
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        detections = predictor([(coco / "val2017" / im["file_name"]).read_bytes() for im in chunk])
        for im, det in zip(chunk, detections):
            results.extend(coco_results(im["id"], det))
    metrics = {"num_detections": len(results)}
    for iou_type, name in (("bbox", "box"), ("segm", "mask")):
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(results) if results else None
            if dt is None:
                metrics[f"{name}_AP"] = metrics[f"{name}_AP50"] = 0.0
                continue
            ev = COCOeval(gt, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        metrics[f"{name}_AP"] = round(float(ev.stats[0]), 4)
        metrics[f"{name}_AP50"] = round(float(ev.stats[1]), 4)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/maskrcnn-learn-shapes"))
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-seconds", type=float, default=600.0, help="training time (calibrated into steps)")
    parser.add_argument("--steps", type=int, default=0, help="train exactly this many steps (skips calibration)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides over the tiny preset")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from maskrcnn.config import apply_overrides, get_config
    from maskrcnn.train.loop import run_training

    args.workdir.mkdir(parents=True, exist_ok=True)
    coco, shards = prepare_data(args.workdir, args.train, args.val, args.seed)
    cfg = get_config("tiny", args.overrides)
    steps = args.steps
    if not steps:
        seconds_per_step = calibrate(cfg, shards, args.workdir)
        steps = int(args.budget_seconds / seconds_per_step)
        log.info("calibration: %.3f s/step -> %d steps in %.0f s", seconds_per_step, steps, args.budget_seconds)
    model_dir = args.workdir / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    started = time.time()
    summary = run_training(apply_overrides(cfg, [f"TRAIN.MAX_STEPS={steps}", "TRAIN.LOG_EVERY=25"]),
                           shards / "train2017", model_dir)
    train_seconds = time.time() - started
    metrics = evaluate(model_dir, coco)

    print("loss curve (step, total_loss, lr):")
    for e in summary["loss_curve"]:
        print(f"  {e['step']:5d}  {e['total_loss']:.4f}  {e['lr']:.5f}")
    figures = {
        "benchmark": "learn_shapes", "preset": "tiny", "overrides": args.overrides, "train_images": args.train,
        "val_images": args.val, "steps": summary["steps"], "global_batch": summary["global_batch"],
        "epochs": round(summary["steps"] * summary["global_batch"] / args.train, 2),
        "train_seconds_incl_export": round(train_seconds, 1), "images_per_second": summary["images_per_second"],
        "cpu_count": os.cpu_count(), **metrics,
        "target_met": metrics["box_AP"] >= 0.5 and metrics["mask_AP"] >= 0.5,
    }
    print(json.dumps(figures))
    sys.exit(0)


if __name__ == "__main__":
    main()
