"""Downloader throughput without the network: what fetch + MD5 + safe extraction cost per byte.

Recipe: a COCO dir whose val2017 holds ``--mb`` MB of incompressible 160 kB "images" (the size of
a COCO JPEG) is packed with ``maskrcnn.data.mirror.make_mirror``, then ``download_coco`` fetches
it from the mirror as a local-folder source (the same resumable transfer loop, MD5 and extraction
code an HTTP or S3 source runs), several times into fresh folders. A real download is bound by the
link; this shows the ceiling the downloader itself imposes (COCO's 20 GB at that rate) and that
memory stays flat (64 kB chunks, streamed extraction).

Prints one JSON line with medians over the runs and the peak RSS of this process.

    .venv/bin/python benchmarks/download.py [--mb 256] [--runs 3] [--workdir /tmp/maskrcnn-bench-download]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported; keeps stdout to the JSON line

from maskrcnn.data.download import PUBLISHED, download_coco
from maskrcnn.data.mirror import make_mirror

IMAGE_BYTES = 160_000


def coco_dir(root: Path, megabytes: int) -> Path:
    if (root / "annotations" / "instances_val2017.json").exists():
        return root
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images = []
    for i in range(megabytes * 1_000_000 // IMAGE_BYTES):
        name = f"{i + 1:012d}.jpg"
        (root / "val2017" / name).write_bytes(os.urandom(IMAGE_BYTES))
        images.append({"id": i + 1, "file_name": name, "height": 480, "width": 640})
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps({"images": images, "annotations": []}))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256, help="size of val2017 in MB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/maskrcnn-bench-download"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    coco = coco_dir(args.workdir / f"coco-{args.mb}mb", args.mb)
    mirror = make_mirror(coco, args.workdir / f"mirror-{args.mb}mb", splits=["val2017"])
    archive_bytes = sum((mirror / name).stat().st_size for name in ("val2017.zip", "annotations_trainval2017.zip"))
    seconds = []
    for run in range(args.runs):
        out = args.workdir / f"out-{run}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        download_coco(out, source=mirror, splits=["val2017"])
        seconds.append(time.perf_counter() - start)
        shutil.rmtree(out)
    median = statistics.median(seconds)
    coco_bytes = sum(e.size for e in PUBLISHED.values())
    print(json.dumps({
        "archive_mb": round(archive_bytes / 1e6, 1),
        "runs": args.runs,
        "seconds_median": round(median, 2),
        "mb_per_s": round(archive_bytes / 1e6 / median, 1),
        "coco2017_minutes_at_this_rate": round(coco_bytes / (archive_bytes / median) / 60, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
