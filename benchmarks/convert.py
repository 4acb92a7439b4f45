"""Conversion throughput and peak memory: ``maskrcnn data convert`` on generated 640x480 sets.

Recipe: ``maskrcnn data synth --image-size 640x480`` (cached under --workdir), then the CLI
``maskrcnn data convert`` in a subprocess with 1 and 2 workers, several runs each. Peak memory is
the largest sum of RSS over the converting process and its workers (sampled every 20 ms). The cores may be shared with other
work, so images per CPU-second used is printed too. Running
the same recipe on a smaller set shows whether memory grows with the image count (shard size is
fixed at 250 images, so only the number of shards changes).

Prints one JSON line per configuration (medians over the runs) and a summary table.
Target: >= 100 images/s per core.

    .venv/bin/python benchmarks/convert.py [--images 2000 500] [--runs 3] [--workdir /tmp/maskrcnn-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import resource

import psutil

IMAGES_PER_SHARD = 250
MAIN = [sys.executable, "-m", "maskrcnn.cli"]


def dataset(workdir: Path, images: int) -> Path:
    coco = workdir / f"coco-640x480-{images}"
    if not (coco / "annotations" / "instances_train2017.json").exists():
        subprocess.run([*MAIN, "--log-level", "WARNING", "data", "synth", "--out", str(coco), "--train", str(images),
                        "--val", "0", "--image-size", "640x480"], check=True, stdout=subprocess.DEVNULL)
    return coco


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_once(coco: Path, out: Path, images: int, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*MAIN, "--log-level", "WARNING", "data", "convert", "--coco-dir", str(coco), "--split", "train2017",
           "--out", str(out), "--shards", str(max(1, images // IMAGES_PER_SHARD)), "--workers", str(workers)]
    start, cpu_start = time.perf_counter(), _children_cpu_seconds()
    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc))
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"convert failed with exit code {proc.returncode}: {' '.join(cmd)}")
    return {"seconds": seconds, "cpu_seconds": _children_cpu_seconds() - cpu_start, "peak_rss_mb": peak / 2**20}


def _children_cpu_seconds() -> float:
    """User + system CPU time of finished child processes (their workers included)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 500])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/maskrcnn-bench"))
    args = parser.parse_args()

    rows = []
    for images in args.images:
        coco = dataset(args.workdir, images)
        input_mb = sum(p.stat().st_size for p in (coco / "train2017").iterdir()) / 2**20
        for workers in args.workers:
            runs = [run_once(coco, args.workdir / "shards", images, workers) for _ in range(args.runs)]
            seconds = statistics.median(r["seconds"] for r in runs)
            output_mb = sum(p.stat().st_size for p in (args.workdir / "shards").glob("*.tfrecord")) / 2**20
            row = {
                "benchmark": "convert", "images": images, "workers": workers, "runs": args.runs,
                "seconds": round(seconds, 2),
                "images_per_s": round(images / seconds, 1),
                "images_per_s_per_core": round(images / seconds / workers, 1),
                # per CPU-second used (interpreter start-up included): the per-core figure on shared cores
                "images_per_cpu_s": round(images / statistics.median(r["cpu_seconds"] for r in runs), 1),
                "input_mb_per_s": round(input_mb / seconds, 1),
                "output_mb_per_s": round(output_mb / seconds, 1),
                "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in runs)),
                "cpu_count": os.cpu_count(),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'images':>7} {'workers':>7} {'img/s':>8} {'img/s/core':>10} {'img/CPU-s':>9} {'in MB/s':>8} "
          f"{'out MB/s':>8} {'peak RSS MB':>11}")
    for r in rows:
        print(f"{r['images']:>7} {r['workers']:>7} {r['images_per_s']:>8} {r['images_per_s_per_core']:>10} "
              f"{r['images_per_cpu_s']:>9} "
              f"{r['input_mb_per_s']:>8} {r['output_mb_per_s']:>8} {r['peak_rss_mb']:>11}")


if __name__ == "__main__":
    main()
