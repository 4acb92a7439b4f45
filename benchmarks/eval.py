"""COCOeval speed, bbox + segm: plain pycocotools, plain faster-coco-eval, and ours, in one run.

Recipe: a generated val set of ``--images`` 640x480 images (default 5,000) with 2-12 objects each
over ``--categories`` classes (default 5, as ``maskrcnn data synth``) (polygons, ~5% crowd RLE regions, all three area ranges) and ``--dets`` (100)
detections per image (jittered ground truth and random false positives, compressed RLE masks).
Each method starts from the ground-truth dict and the results list, so loading the results
(``loadRes``: areas and boxes of 500k RLEs) is timed; the mask AP evaluation drops the ``bbox``
field first (mask-area ranges), the same protocol for all three. Times are medians of ``--runs``.

Prints one JSON line per method (wall and CPU seconds, the CPU time including our worker
processes, which tells the work apart from the parallelism on a shared machine) and a summary; checks that the 24 stats agree (ours == one
faster-coco-eval run bit for bit; both within 1e-12 of pycocotools, whose numpy accumulate
rounds differently in the last bit). Target: ours <= 0.25 x pycocotools.

    .venv/bin/python benchmarks/eval.py [--images 5000] [--dets 100] [--categories 5] [--runs 3] [--workers N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

HEIGHT, WIDTH = 480, 640


def _polygon(rng: np.random.Generator, cx: float, cy: float, r: float) -> list[float]:
    """A star-ish closed polygon around (cx, cy), clipped to the image."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
    radii = r * rng.uniform(0.6, 1.0, 12)
    xs = np.clip(cx + radii * np.cos(angles), 0, WIDTH - 1)
    ys = np.clip(cy + radii * np.sin(angles), 0, HEIGHT - 1)
    return np.stack([xs, ys], 1).ravel().round(1).tolist()


def generate(images: int, dets_per_image: int, categories: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    imgs, anns, dets = [], [], []
    for image_id in range(1, images + 1):
        imgs.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": HEIGHT, "width": WIDTH})
        objects = []
        for _ in range(int(rng.integers(2, 13))):
            cat = int(rng.integers(1, categories + 1))
            r = float(rng.choice([rng.uniform(4, 15), rng.uniform(20, 50), rng.uniform(60, 180)]))
            cx, cy = rng.uniform(r, WIDTH - r), rng.uniform(r, HEIGHT - r) if r < HEIGHT / 2 else HEIGHT / 2
            crowd = int(rng.random() < 0.05)
            poly = _polygon(rng, cx, cy, r)
            rle = mask_utils.frPyObjects([poly], HEIGHT, WIDTH)[0]
            seg = {"size": rle["size"], "counts": rle["counts"].decode()} if crowd else [poly]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "iscrowd": crowd,
                         "segmentation": seg, "area": float(mask_utils.area(rle)),
                         "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
            objects.append((cat, cx, cy, r))
        polys, cats = [], []
        for k in range(dets_per_image):
            if k < len(objects) * 2:              # two jittered guesses per object
                cat, cx, cy, r = objects[k % len(objects)]
                cat = cat if rng.random() < 0.9 else int(rng.integers(1, categories + 1))
                cx, cy, r = cx + rng.normal(0, r * 0.1), cy + rng.normal(0, r * 0.1), r * rng.uniform(0.8, 1.2)
            else:                                 # false positives
                cat, r = int(rng.integers(1, categories + 1)), rng.uniform(5, 100)
                cx, cy = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)
            polys.append(_polygon(rng, cx, cy, r))
            cats.append(cat)
        rles = mask_utils.frPyObjects(polys, HEIGHT, WIDTH)
        boxes = mask_utils.toBbox(rles)
        for rle, box, cat in zip(rles, boxes, cats):
            dets.append({"image_id": image_id, "category_id": cat, "score": round(float(rng.random()), 4),
                         "bbox": [round(float(v), 2) for v in box],
                         "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, categories + 1)]
    return {"images": imgs, "annotations": anns, "categories": categories}, dets


def _results_for(iou_type: str, dets: list[dict]) -> list[dict]:
    drop = "bbox" if iou_type == "segm" else None
    return [{k: v for k, v in d.items() if k != drop} for d in dets]


def run_reference(library: str, gt: dict, dets: list[dict]) -> np.ndarray:
    """24 stats (bbox then segm) with one plain library run per IoU type."""
    if library == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    stats = []
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        for iou_type in ("bbox", "segm"):
            kwargs = {} if library == "pycocotools" else {"print_function": lambda *a: None}
            ev = COCOeval(coco_gt, coco_gt.loadRes(_results_for(iou_type, dets)), iou_type, **kwargs)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            stats.extend(ev.stats[:12])
    return np.asarray(stats)


def run_ours(gt: dict, dets: list[dict], workers: int | None) -> np.ndarray:
    from maskrcnn.evaluate.cocoeval import STAT_NAMES, evaluate_coco, load_ground_truth

    results = evaluate_coco(load_ground_truth(gt), dets, workers=workers)
    return np.asarray([results[t].stats[n] for t in ("bbox", "segm") for n in STAT_NAMES])


def cached_set(workdir: Path, images: int, dets: int, categories: int) -> tuple[dict, list[dict]]:
    """The generated set, from ``workdir`` when an earlier run made it (generation is not timed)."""
    path = workdir / f"coco-eval-{images}x{dets}-{categories}cats.json"
    if path.is_file():
        data = json.loads(path.read_text())
        return data["ground_truth"], data["detections"]
    gt, results = generate(images, dets, categories)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"ground_truth": gt, "detections": results}))
    tmp.replace(path)
    return gt, results


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and its finished children (our COCOeval workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets", type=int, default=100)
    parser.add_argument("--categories", type=int, default=5, help="5 as `maskrcnn data synth`; COCO has 80")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="our COCOeval processes (default: usable cores)")
    parser.add_argument("--workdir", default="/tmp/maskrcnn-bench", help="where the generated set is cached")
    args = parser.parse_args()

    start = time.perf_counter()
    gt, dets = cached_set(Path(args.workdir), args.images, args.dets, args.categories)
    print(f"loaded {len(gt['images'])} images, {len(gt['annotations'])} gt, {len(dets)} detections "
          f"in {time.perf_counter() - start:.0f}s", flush=True)

    methods = {
        "pycocotools": lambda g, d: run_reference("pycocotools", g, d),
        "faster-coco-eval": lambda g, d: run_reference("faster-coco-eval", g, d),
        "ours": lambda g, d: run_ours(g, d, args.workers),
    }
    times: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    stats: dict[str, np.ndarray] = {}
    for _ in range(args.runs):
        for name, fn in methods.items():
            g, d = copy.deepcopy(gt), copy.deepcopy(dets)   # loadRes mutates its input; copies are not timed
            t, c = time.perf_counter(), cpu_seconds()
            stats[name] = fn(g, d)
            times[name].append(time.perf_counter() - t)
            cpu[name].append(cpu_seconds() - c)
            del g, d

    reference = statistics.median(times["pycocotools"])
    for name in methods:
        median = statistics.median(times[name])
        print(json.dumps({"benchmark": "coco_eval", "method": name, "images": args.images,
                          "detections": len(dets), "seconds_median": round(median, 2),
                          "seconds_runs": [round(t, 2) for t in times[name]],
                          "cpu_seconds_median": round(statistics.median(cpu[name]), 2),
                          "vs_pycocotools": round(median / reference, 3),
                          "max_abs_stat_diff_vs_pycocotools": float(np.abs(stats[name] - stats["pycocotools"]).max())}))
    identical = bool(np.array_equal(stats["ours"], stats["faster-coco-eval"]))
    print(f"ours == faster-coco-eval bit for bit: {identical}; "
          f"ours / pycocotools = {statistics.median(times['ours']) / reference:.3f} (target <= 0.25)")


if __name__ == "__main__":
    main()
