"""Median training-step time on this machine's CPU, with and without XLA.

Recipe: the real training step of ``maskrcnn.train.loop`` (forward, losses, weight decay, gradient,
momentum update; Horovod path off, single process) on one cached batch (``build_dataset(...,
synthetic=True)`` over generated shards), so the input pipeline is not measured. Configurations:
``tiny`` at its own size, and ``tiny`` and ``r50-fpn-1x`` at batch 2 x 512x512 (random backbone,
``BACKBONE.WEIGHTS=none``). Each is timed --steps times after --warmup steps (the first includes
tracing and, with XLA, compilation, reported separately). Prints one JSON line per configuration.

    .venv/bin/python benchmarks/train_step.py [--steps 5] [--warmup 2] [--only tiny]
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import statistics
import time
from pathlib import Path

SIZE_512 = ["PREPROC.SHORT_SIZE=512", "PREPROC.MAX_SIZE=512", "PREPROC.PAD_SIZE=512,512", "TRAIN.BATCH_PER_GPU=2"]
CONFIGS = {
    "tiny": ("tiny", []),
    "tiny@2x512": ("tiny", SIZE_512),
    "r50-fpn-1x@2x512": ("r50-fpn-1x", [*SIZE_512, "BACKBONE.WEIGHTS=none"]),
}


def shards(workdir: Path) -> Path:
    from maskrcnn.data.convert import convert
    from maskrcnn.data.synth import generate

    out = workdir / "shards-512"
    if not (out / "manifest.json").exists():
        coco = generate(workdir / "coco-512", train=8, val=0, image_size=(512, 512))
        convert(annotations=coco / "annotations" / "instances_train2017.json", images_dir=coco / "train2017",
                out_dir=out, split="train2017", shards=1, workers=1)
    return out


def time_steps(preset: str, overrides: list[str], xla: bool, data: Path, steps: int, warmup: int) -> dict:
    import tensorflow as tf

    from maskrcnn.config import get_config, schedule
    from maskrcnn.data.pipeline import build_dataset
    from maskrcnn.train.distributed import Replica
    from maskrcnn.train.loop import build_trainable, config_for_data, make_train_step
    from maskrcnn.train.lr_schedule import learning_rate
    from maskrcnn.utils.io import read_json

    manifest = read_json(data / "manifest.json")
    cfg = config_for_data(get_config(preset, [*overrides, f"TRAIN.XLA={xla}"]), manifest)
    trainable = build_trainable(cfg)
    sched = schedule(cfg, 1, manifest["num_images"])
    lr_fn = functools.partial(learning_rate, sched=sched, warmup_factor=cfg.TRAIN.WARMUP_FACTOR,
                              decay_factor=cfg.TRAIN.LR_DECAY_FACTOR)
    dataset = build_dataset(data, cfg, training=True, synthetic=True)
    step = make_train_step(trainable.model, trainable.optimizer, trainable.loss_scale, trainable.state, Replica(),
                           lr_fn, weight_decay=cfg.TRAIN.WEIGHT_DECAY, xla=xla, input_signature=dataset.element_spec)
    batches = iter(dataset)
    batch = next(batches)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        losses, _ = step(batch)
        float(losses["total_loss"])  # wait for the step
        times.append(time.perf_counter() - start)
    params = sum(int(tf.size(v)) for v in trainable.model.trainable_variables)
    return {
        "first_step_seconds": round(times[0], 2),
        "median_step_seconds": round(statistics.median(times[warmup:]), 4),
        "images_per_second": round(cfg.TRAIN.BATCH_PER_GPU / statistics.median(times[warmup:]), 2),
        "batch": cfg.TRAIN.BATCH_PER_GPU, "pad_size": list(cfg.PREPROC.PAD_SIZE), "trainable_params": params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/maskrcnn-train-step"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--only", choices=list(CONFIGS), action="append", help="run only these configurations")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    data = shards(args.workdir)
    for name in args.only or list(CONFIGS):
        preset, overrides = CONFIGS[name]
        for xla in (False, True):
            row = {"benchmark": "train_step", "config": name, "xla": xla, "cpu_count": os.cpu_count()}
            try:
                row.update(time_steps(preset, overrides, xla, data, args.steps, args.warmup))
            except Exception as e:  # report a configuration that cannot run (e.g. an op XLA cannot compile)
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
