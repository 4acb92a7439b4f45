"""The README's main job, timed: `maskrcnn pipeline run --local` cold (empty work dir) and warm (same
work dir: download and convert find their cache), with the AP it reaches.

Each run executes the whole compiled pipeline with kfp.local (download from a local mirror,
convert, train the ``tiny`` preset under ``horovodrun -np 2`` when Horovod is installed, evaluate,
deploy a local server + smoke request); the server is stopped after each run. Prints, as its last
line, one JSON line with the medians over ``--runs`` cold/warm pairs and every run's figures.

    .venv/bin/python benchmarks/local_pipeline.py [--runs 3] [--max-steps 400] [--workdir /tmp/maskrcnn-bench-local]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from maskrcnn.pipeline.local_run import LocalRun, run_locally
from maskrcnn.pipeline.local_server import free_port, stop


def one_run(workdir: Path, max_steps: int) -> dict:
    summary = run_locally(LocalRun(workdir=workdir, max_steps=max_steps, port=free_port()))
    stop(workdir / "serving")
    return {key: summary[key] for key in ("wall_seconds", "box_AP", "mask_AP", "download_cached", "convert_cached",
                                          "deployed")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="cold/warm pairs")
    parser.add_argument("--max-steps", type=int, default=LocalRun.max_steps)
    parser.add_argument("--workdir", default="/tmp/maskrcnn-bench-local")
    args = parser.parse_args()
    cold, warm = [], []
    for i in range(args.runs):
        workdir = Path(args.workdir) / f"run{i}"
        shutil.rmtree(workdir, ignore_errors=True)
        cold.append(one_run(workdir, args.max_steps))
        warm.append(one_run(workdir, args.max_steps))

    def median(runs: list[dict], key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 4)

    print(json.dumps({
        "max_steps": args.max_steps, "runs": args.runs,
        "cold_wall_s": median(cold, "wall_seconds"), "warm_wall_s": median(warm, "wall_seconds"),
        "box_AP": median(cold + warm, "box_AP"), "mask_AP": median(cold + warm, "mask_AP"),
        "cold": cold, "warm": warm,
    }))


if __name__ == "__main__":
    main()
