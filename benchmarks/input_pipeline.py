"""Training input pipeline throughput with the r50-fpn-1x preprocessing (800/1333, pad 1344).

Recipe: a generated 640x480 set (``maskrcnn data synth`` + ``maskrcnn data convert``, cached under
--workdir), then ``build_dataset(..., training=True)`` with the ``r50-fpn-1x`` preset: decode,
resize, flip, normalize, pad to 1344x1344, crop gt masks to 112x112, batch 4. After a warm-up the
script times how fast batches come out (nothing else runs), several runs, and prints the median in
images/s, images/s per core (tf.data uses every core it may: ``os.sched_getaffinity``) and images
per CPU-second the process used (the per-core figure that holds when other work shares the cores).
Target: >= 25 images/s per core.

    .venv/bin/python benchmarks/input_pipeline.py [--images 256] [--batches 40] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MAIN = [sys.executable, "-m", "maskrcnn.cli", "--log-level", "WARNING"]


def shards(workdir: Path, images: int) -> Path:
    coco, out = workdir / f"coco-640x480-{images}", workdir / f"shards-640x480-{images}"
    if not (coco / "annotations" / "instances_train2017.json").exists():
        subprocess.run([*MAIN, "data", "synth", "--out", str(coco), "--train", str(images), "--val", "0",
                        "--image-size", "640x480"], check=True, stdout=subprocess.DEVNULL)
    if not (out / "manifest.json").exists():
        subprocess.run([*MAIN, "data", "convert", "--coco-dir", str(coco), "--split", "train2017", "--out", str(out),
                        "--shards", "8"], check=True, stdout=subprocess.DEVNULL)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--preset", default="r50-fpn-1x")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/maskrcnn-bench"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from maskrcnn.config import get_config
    from maskrcnn.data.pipeline import build_dataset

    shards_dir = shards(args.workdir, args.images)
    cfg = get_config(args.preset)
    cores = len(os.sched_getaffinity(0))
    rates, cpu_rates = [], []
    for _ in range(args.runs):
        iterator = iter(build_dataset(shards_dir, cfg, training=True))
        for _ in range(args.warmup):
            next(iterator)
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(args.batches):
            batch = next(iterator)
        batch["images"].numpy()
        images = args.batches * cfg.TRAIN.BATCH_PER_GPU
        rates.append(images / (time.perf_counter() - start))
        cpu_rates.append(images / (time.process_time() - cpu_start))
        del iterator
    rate = statistics.median(rates)
    print(json.dumps({
        "benchmark": "input_pipeline", "preset": args.preset, "image_size": "640x480",
        "pad_size": list(cfg.PREPROC.PAD_SIZE), "batch": cfg.TRAIN.BATCH_PER_GPU, "runs": args.runs,
        "images_per_s": round(rate, 1), "images_per_s_per_core": round(rate / cores, 1), "cores": cores,
        # Throughput per CPU-second the process used: the per-core figure when the cores are shared.
        "images_per_cpu_s": round(statistics.median(cpu_rates), 1),
        "all_runs": [round(r, 1) for r in rates],
    }))


if __name__ == "__main__":
    main()
