"""Batched inference over validation shards through the exported SavedModel.

The shards' original encoded bytes (``image/encoded``) go through the same serving signature the
HTTP server calls, so evaluated and served detections cannot drift apart. Under Horovod each
process takes every ``world_size``-th record and rank 0 gathers the results.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from maskrcnn.errors import UserError
from maskrcnn.evaluate.detections import coco_results
from maskrcnn.utils.io import read_json

log = logging.getLogger(__name__)


@dataclass
class InferenceOutput:
    """``results``: COCO results entries; ``image_ids``: images seen; ``samples``: the first few
    images as ``(image_id, encoded bytes, Detections)`` for rendering."""

    results: list[dict] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)
    samples: list[tuple[int, bytes, Any]] = field(default_factory=list)


def shard_files(data: str | os.PathLike) -> list[str]:
    """The TFRecord files of a shards dir (``manifest.json`` order), or of a glob pattern."""
    path = Path(data)
    if path.is_dir():
        manifest = path / "manifest.json"
        if manifest.is_file():
            files = [str(path / s["file"]) for s in read_json(manifest)["shards"]]
        else:
            files = sorted(str(p) for p in path.glob("*.tfrecord"))
    else:
        files = sorted(glob.glob(str(data)))
    if not files:
        raise UserError(f"no .tfrecord shards found at {data}: pass the val shards dir written by `maskrcnn data convert`")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise UserError(f"{missing[0]} is listed in the manifest but missing: re-run `maskrcnn data convert`")
    return files


def encoded_images(files: Sequence[str], batch_size: int, rank: int = 0, world_size: int = 1):
    """``tf.data`` of ``(source_id int64 [B], encoded string [B])`` batches, this rank's share."""
    import tensorflow as tf

    features = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/source_id": tf.io.FixedLenFeature([], tf.string),
    }

    def parse(record):
        ex = tf.io.parse_single_example(record, features)
        return tf.strings.to_number(ex["image/source_id"], tf.int64), ex["image/encoded"]

    ds = tf.data.TFRecordDataset(list(files)).shard(world_size, rank)
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)


def run_inference(
    predictor: Callable[..., list],
    files: Sequence[str],
    *,
    batch_size: int,
    mask_threshold: float,
    num_samples: int = 0,
    rank: int = 0,
    world_size: int = 1,
    total_images: int | None = None,
) -> InferenceOutput:
    """Detections for this rank's share of the shards, as COCO results."""
    out = InferenceOutput()
    share = None if total_images is None else -(-total_images // world_size)
    with tqdm(total=share, desc=f"evaluate[{rank}]", unit="img", disable=rank != 0, dynamic_ncols=True) as bar:
        for ids, encoded in encoded_images(files, batch_size, rank, world_size):
            images = [bytes(b) for b in encoded.numpy()]
            for image_id, image, det in zip(ids.numpy().tolist(), images, predictor(images, mask_threshold=mask_threshold, score_threshold=0.0)):
                out.results.extend(coco_results(image_id, det))
                out.image_ids.append(int(image_id))
                if len(out.samples) < num_samples:
                    out.samples.append((int(image_id), image, det))
            bar.update(len(images))
    return out
