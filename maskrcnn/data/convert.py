"""COCO-format dataset -> TFRecord shards + ``manifest.json`` (the shards dir of docs/architecture.md).

How it scales: the parent process reads the annotation file once and groups annotations per image
(``coco_source``); images are sorted by id and cut into contiguous shard slices; each slice (image
records and their annotations only, not the whole file) goes to a worker process that reads the
image files, checks them (``validate``), rasterizes masks and writes its shard. Workers hold one
shard's annotations and one image at a time, so memory stays flat in the number of images; they
never import TensorFlow (``tfrecord``). At most ``2 * workers`` slices are in flight.

Determinism: the same annotation file and images give byte-identical shards (fixed order, fixed
encoders, sorted proto keys), whatever the number of workers.

Resume: each shard is written to ``.part`` and renamed when complete; then a small state file
``.convert-state/{shard}.json`` records its fingerprint (annotation file hash, split, shard index
and count), record count, SHA-256 and its part of the report. A rerun keeps every shard whose state
matches and whose bytes still hash the same, and converts only the rest. ``manifest.json`` is
written last.

Every source image is accounted for: ``num_images + num_skipped == num_input_images``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import time
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from maskrcnn.data.coco_source import CocoSource, Problem, load_coco
from maskrcnn.data.schema import encode_record
from maskrcnn.data.tfrecord import TFRecordWriter
from maskrcnn.data.validate import BadItem, check_image, check_instance
from maskrcnn.errors import UserError
from maskrcnn.utils.io import file_digest, read_json, write_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2           # bump when the shard content or state changes: old shards are then rebuilt
IMAGES_PER_SHARD = 512       # default shard size (~75 MB of COCO images)
STATE_DIR = ".convert-state"


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def default_num_shards(num_images: int) -> int:
    return max(1, math.ceil(num_images / IMAGES_PER_SHARD))


def shard_slices(num_images: int, num_shards: int) -> list[range]:
    """Contiguous, near-equal index ranges: shard ``i`` holds images ``[i*n//N, (i+1)*n//N)``."""
    return [range(i * num_images // num_shards, (i + 1) * num_images // num_shards) for i in range(num_shards)]


def _fingerprint(annotations_sha256: str, split: str, index: int, count: int) -> str:
    key = json.dumps([FORMAT_VERSION, annotations_sha256, split, index, count])
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs for one shard (picklable, small)."""

    index: int
    path: Path
    state_path: Path
    fingerprint: str
    images_dir: Path
    annotations_path: Path
    entries: list[tuple[dict, list[dict]]]        # (image record, its annotations)
    class_map: dict[int, tuple[int, str]]
    strict: bool


def _strict_error(task: ShardTask, problem: Problem) -> UserError:
    if problem.annotation_id is not None:
        where = f"{task.annotations_path}: annotation {problem.annotation_id} (image {problem.file_name})"
    else:
        where = str(task.images_dir / (problem.file_name or "?"))
    return UserError(f"{where}: {problem.reason}: {problem.detail} (fix it, or run without --strict to skip it)")


def _convert_image(task: ShardTask, image: dict, anns: list[dict], state: dict, writer: TFRecordWriter) -> None:
    image_id, file_name, width, height = image["id"], image["file_name"], image["width"], image["height"]

    def report(kind: str, problem: Problem) -> None:
        if task.strict and kind != "fixed":
            raise _strict_error(task, problem)
        state[kind].append((problem.reason, problem.report_entry()))

    try:
        try:
            data = (task.images_dir / file_name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise BadItem("missing_file", f"{file_name} not found in {task.images_dir}") from None
        checked = check_image(data, width, height)
    except BadItem as bad:
        report("skipped", Problem(bad.reason, image_id, file_name, bad.detail))
        return
    if checked.fix:
        report("fixed", Problem(checked.fix, image_id, file_name, checked.fix_detail))
    instances = []
    for ann in anns:
        try:
            instances.append(check_instance(ann, width, height, task.class_map))
        except BadItem as bad:
            report("skipped_instances", Problem(bad.reason, image_id, file_name, bad.detail, ann.get("id")))
    writer.write(encode_record(image_id=image_id, file_name=file_name, encoded=checked.encoded, width=width,
                               height=height, instances=instances, class_map=task.class_map))
    state["num_instances"] += len(instances)
    state["trainable"] += any(not inst.is_crowd for inst in instances)


def convert_shard(task: ShardTask) -> dict:
    """Write one shard (worker entry point); returns its state (also saved beside the shards)."""
    state = {"fingerprint": task.fingerprint, "file": task.path.name, "num_input_images": len(task.entries),
             "num_instances": 0, "trainable": 0, "skipped": [], "skipped_instances": [], "fixed": []}
    with TFRecordWriter(task.path) as writer:
        for image, anns in task.entries:
            _convert_image(task, image, anns, state, writer)
    state.update(records=writer.records, bytes=writer.bytes, sha256=writer.sha256)
    if state["records"] + len(state["skipped"]) != state["num_input_images"]:
        raise AssertionError(f"{task.path.name}: written + skipped != input images")
    write_json(task.state_path, state, indent=None)
    return state


def _completed_state(task: ShardTask) -> dict | None:
    """The saved state of a shard finished by an earlier run with the same input, if still intact."""
    if not (task.path.exists() and task.state_path.exists()):
        return None
    try:
        state = read_json(task.state_path)
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != task.fingerprint or state.get("bytes") != task.path.stat().st_size:
        return None
    if file_digest(task.path) != state.get("sha256"):
        return None
    return state


def _run_tasks(tasks: list[ShardTask], workers: int, progress: tqdm) -> Iterable[dict]:
    """States of converted shards, in completion order; in-process when ``workers <= 1``."""
    if workers <= 1:
        for task in tasks:
            state = convert_shard(task)
            progress.update(state["num_input_images"])
            yield state
        return
    # spawn: a forked child of a process that has TensorFlow's threads running can deadlock.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending, queue = set(), list(reversed(tasks))
        try:
            while queue or pending:
                while queue and len(pending) < 2 * workers:
                    pending.add(pool.submit(convert_shard, queue.pop()))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    state = future.result()
                    progress.update(state["num_input_images"])
                    yield state
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _remove_stale(out_dir: Path, split: str, keep: set[str]) -> None:
    for path in out_dir.glob(f"{split}-?????-of-?????.tfrecord*"):
        if path.name not in keep:
            logger.info("removing %s (not part of this conversion)", path)
            path.unlink()


def _parent_problems(source: CocoSource, strict: bool) -> None:
    problems = source.skipped_images + source.skipped_instances
    if strict and problems:
        p = problems[0]
        what = f"annotation {p.annotation_id}" if p.annotation_id is not None else f"image {p.image_id} ({p.file_name})"
        raise UserError(f"{source.path}: {what}: {p.reason}: {p.detail} (fix it, or run without --strict to skip it)")


def _report(items: Iterable[tuple[str, dict]]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for reason, entry in items:
        grouped[reason].append(entry)
    return dict(sorted(grouped.items()))


def convert(
    *,
    annotations: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str = "train2017",
    shards: int | None = None,
    workers: int | None = None,
    strict: bool = False,
) -> dict:
    """Convert one split; returns the manifest (also written to ``out_dir/manifest.json``)."""
    started = time.monotonic()
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise UserError(f"{images_dir}: image folder not found; check --coco-dir/--split or --images")
    if shards is not None and shards < 1:
        raise UserError(f"--shards must be >= 1, got {shards}")
    source = load_coco(annotations)
    _parent_problems(source, strict)
    num_shards = shards or default_num_shards(len(source.images))
    workers = max(1, min(workers or os.cpu_count() or 1, num_shards))

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STATE_DIR).mkdir(exist_ok=True)
    tasks = []
    for index, rows in enumerate(shard_slices(len(source.images), num_shards)):
        name = shard_name(split, index, num_shards)
        entries = [(source.images[i], source.annotations.get(source.images[i]["id"], [])) for i in rows]
        tasks.append(ShardTask(index, out_dir / name, out_dir / STATE_DIR / f"{name}.json",
                               _fingerprint(source.sha256, split, index, num_shards), images_dir,
                               Path(annotations), entries, source.class_map, strict))
    _remove_stale(out_dir, split, {t.path.name for t in tasks})

    states: dict[int, dict] = {}
    for task in tasks:
        state = _completed_state(task)
        if state is not None:
            states[task.index] = state
    if states:
        logger.info("resuming: %d of %d shards already complete", len(states), num_shards)
    todo = [t for t in tasks if t.index not in states]
    index_of = {t.path.name: t.index for t in tasks}
    with tqdm(total=sum(len(t.entries) for t in todo), desc=f"convert {split}", unit="img", disable=None) as progress:
        for state in _run_tasks(todo, workers, progress):
            states[index_of[state["file"]]] = state
    ordered = [states[i] for i in range(num_shards)]
    if strict:   # shards kept from a lenient run may hold skips
        for task, state in zip(tasks, ordered):
            for kind in ("skipped", "skipped_instances"):
                if state[kind]:
                    reason, entry = state[kind][0]
                    raise _strict_error(task, Problem(reason, entry["image_id"], entry.get("file_name"),
                                                      entry["detail"], entry.get("annotation_id")))

    manifest = _manifest(source, split, images_dir, ordered)
    write_json(out_dir / "manifest.json", manifest)
    elapsed = time.monotonic() - started
    logger.info("%s: %d images (%d skipped, %d fixed), %d instances in %d shards, %.1f s",
                out_dir, manifest["num_images"], manifest["num_skipped"], manifest["num_fixed"],
                manifest["num_instances"], num_shards, elapsed)
    return manifest


def _manifest(source: CocoSource, split: str, images_dir: Path, states: list[dict]) -> dict:
    skipped = _report([(p.reason, p.report_entry()) for p in source.skipped_images]
                      + [item for s in states for item in s["skipped"]])
    skipped_instances = _report([(p.reason, p.report_entry()) for p in source.skipped_instances]
                                + [item for s in states for item in s["skipped_instances"]])
    fixed = _report(item for s in states for item in s["fixed"])
    manifest = {
        "split": split,
        "num_images": sum(s["records"] for s in states),
        "num_instances": sum(s["num_instances"] for s in states),
        "num_classes": len(source.class_map),
        "class_map": {str(cid): {"id": tid, "name": name} for cid, (tid, name) in source.class_map.items()},
        "shards": [{"file": s["file"], "records": s["records"], "trainable": s["trainable"], "sha256": s["sha256"]}
                   for s in states],
        "source": {"annotations": str(source.path), "annotations_sha256": source.sha256, "images": str(images_dir)},
        "num_input_images": source.num_input_images,
        "skipped": skipped,
        "num_skipped": sum(len(v) for v in skipped.values()),
        "skipped_instances": skipped_instances,
        "num_skipped_instances": sum(len(v) for v in skipped_instances.values()),
        "fixed": fixed,
        "num_fixed": sum(len(v) for v in fixed.values()),
    }
    if manifest["num_images"] + manifest["num_skipped"] != manifest["num_input_images"]:
        raise AssertionError("every source image must be written or skipped")
    return manifest


def load_manifest(shards_dir: str | os.PathLike) -> dict:
    """The ``manifest.json`` of a shards dir, or a UserError saying how to make one."""
    path = Path(shards_dir) / "manifest.json"
    if not path.exists():
        raise UserError(f"{path} not found: convert the data first (maskrcnn data convert --out {shards_dir} ...)")
    return read_json(path)
