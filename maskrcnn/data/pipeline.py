"""The tf.data input pipeline: shards dir -> padded batches for the model (docs/architecture.md).

Training batches (``B = cfg.TRAIN.BATCH_PER_GPU``, ``PH, PW = cfg.PREPROC.PAD_SIZE``,
``M = cfg.PREPROC.MAX_INSTANCES``, ``S = cfg.PREPROC.GT_MASK_SIZE``):

* ``images`` float32 ``[B, PH, PW, 3]``: RGB resized by short side / max size, ``(x - mean) / std``,
  zero-padded bottom/right.
* ``image_info`` float32 ``[B, 5]``: ``[resized_h, resized_w, scale, original_h, original_w]``.
* ``source_id`` int64 ``[B]``: COCO image id.
* ``gt_boxes`` float32 ``[B, M, 4]``: ``[y1, x1, y2, x2]`` resized-image pixels, zero-padded.
* ``gt_classes`` int32 ``[B, M]``: contiguous ids, 0 = padding. Crowd regions are left out, and
  images without a non-crowd instance are not used for training.
* ``gt_masks`` float32 ``[B, M, S, S]``: each mask cropped to its box, resized to ``S x S``, {0, 1}.
* ``num_gt`` int32 ``[B]``.

Evaluation batches (``B = cfg.TEST.BATCH_SIZE``) have ``images``, ``image_info`` and ``source_id``.

Order and resume. Training reads an endless stream of whole epochs: shard files and records are
reshuffled every epoch from ``cfg.TRAIN.SEED + rank``, and the random flip of the ``k``-th image of the stream is
drawn from ``(seed, k)``, so the stream is a pure function of the seed. ``skip_batches=n`` drops the
first ``n * B`` records *before* decoding them and so continues exactly where a run that did ``n``
steps stopped (the checkpointed step is the data position). ``deterministic=True`` also fixes the
order in which parallel decoding returns images (tests); otherwise neighbouring images may swap.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import tensorflow as tf

from maskrcnn.config import Config
from maskrcnn.data import preprocess
from maskrcnn.data.convert import load_manifest
from maskrcnn.data.schema import BOX_KEYS, feature_spec
from maskrcnn.errors import UserError

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
_INTERLEAVE_FILES = 8        # shards read at once (spreads reads, mixes shards)


def shard_files(shards_dir: str | os.PathLike) -> tuple[list[str], dict]:
    """Paths of the manifest's non-empty shards (in manifest order) and the manifest."""
    manifest = load_manifest(shards_dir)
    files = [str(Path(shards_dir) / s["file"]) for s in manifest["shards"] if s["records"] > 0]
    missing = [f for f in files if not Path(f).exists()]
    if missing:
        raise UserError(f"{missing[0]} is listed in manifest.json but missing: re-run maskrcnn data convert")
    if not files:
        raise UserError(f"{shards_dir}: the shards hold no images")
    return files, manifest


def _records(files: list[str], *, rank: int, world_size: int, shuffle_seed: int | None) -> tf.data.Dataset:
    """One pass over this rank's serialized records; shard files in a new random order each pass
    when ``shuffle_seed`` is set.

    Sharded by file when every rank gets at least one file (each reads only its files), else by
    record (every rank reads everything and keeps every ``world_size``-th record).
    """
    if len(files) < world_size:
        return tf.data.TFRecordDataset(files).shard(world_size, rank)
    files = files[rank::world_size]
    if shuffle_seed is None:
        return tf.data.TFRecordDataset(files)
    names = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=shuffle_seed)
    return names.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), _INTERLEAVE_FILES),
                            block_length=1, num_parallel_calls=AUTOTUNE, deterministic=True)


def _has_training_instance(record: tf.Tensor) -> tf.Tensor:
    crowd = tf.io.parse_single_example(record, {"image/object/is_crowd": tf.io.VarLenFeature(tf.int64)})
    return tf.reduce_any(tf.equal(crowd["image/object/is_crowd"].values, 0))


def _parse(record: tf.Tensor) -> dict:
    features = tf.io.parse_single_example(record, feature_spec())
    return {k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v for k, v in features.items()}


def _image_and_info(features: dict, cfg: Config) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decoded uint8 image ``[H, W, 3]``, float32 image_info ``[5]``, resized (h, w) int32."""
    image = tf.io.decode_jpeg(features["image/encoded"], channels=3)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    resized_h, resized_w, scale = preprocess.resized_size(height, width, cfg.PREPROC.SHORT_SIZE, cfg.PREPROC.MAX_SIZE)
    info = tf.stack([tf.cast(resized_h, tf.float32), tf.cast(resized_w, tf.float32), scale,
                     tf.cast(height, tf.float32), tf.cast(width, tf.float32)])
    return image, info, resized_h, resized_w


def _normalized_resized(image: tf.Tensor, resized_h: tf.Tensor, resized_w: tf.Tensor, cfg: Config) -> tf.Tensor:
    """uint8 ``[H, W, 3]`` -> normalized float32 ``[resized_h, resized_w, 3]``.

    Normalizing before resizing gives the same result (bilinear weights sum to 1, so the per-channel
    affine map commutes with resizing) on ~3x fewer pixels when COCO images are upscaled to 800.
    """
    normalized = preprocess.normalize(image, cfg.PREPROC.PIXEL_MEAN, cfg.PREPROC.PIXEL_STD)
    return tf.image.resize(normalized, tf.stack([resized_h, resized_w]), method="bilinear")


def _source_id(features: dict) -> tf.Tensor:
    return tf.strings.to_number(features["image/source_id"], out_type=tf.int64)


def _eval_example(record: tf.Tensor, cfg: Config) -> dict:
    features = _parse(record)
    image, info, resized_h, resized_w = _image_and_info(features, cfg)
    return {"images": _normalized_resized(image, resized_h, resized_w, cfg), "image_info": info,
            "source_id": _source_id(features)}


def _train_example(index: tf.Tensor, record: tf.Tensor, cfg: Config, seed: int) -> dict:
    features = _parse(record)
    image, info, resized_h, resized_w = _image_and_info(features, cfg)
    max_instances, mask_size = cfg.PREPROC.MAX_INSTANCES, cfg.PREPROC.GT_MASK_SIZE

    keep = tf.where(tf.equal(features["image/object/is_crowd"], 0))[:max_instances, 0]
    boxes = tf.stack([tf.gather(features[k], keep) for k in BOX_KEYS], axis=1)   # normalized
    classes = tf.cast(tf.gather(features["image/object/class/label"], keep), tf.int32)
    height, width = tf.cast(info[3], tf.float32), tf.cast(info[4], tf.float32)
    pixel_boxes = boxes * tf.stack([height, width, height, width])
    masks = preprocess.box_masks(preprocess.decode_masks(tf.gather(features["image/object/mask"], keep)),
                                 pixel_boxes, mask_size)

    flip = tf.random.stateless_uniform([], seed=tf.stack([tf.constant(seed, tf.int64), index])) < cfg.PREPROC.HFLIP_PROB
    image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
    boxes = tf.cond(flip, lambda: preprocess.flip_normalized_boxes(boxes), lambda: boxes)
    masks = tf.cond(flip, lambda: tf.reverse(masks, axis=[2]), lambda: masks)

    resized = tf.cast(tf.stack([resized_h, resized_w, resized_h, resized_w]), tf.float32)
    return {
        "images": _normalized_resized(image, resized_h, resized_w, cfg),
        "image_info": info,
        "source_id": _source_id(features),
        "gt_boxes": boxes * resized,
        "gt_classes": classes,
        "gt_masks": masks,
        "num_gt": tf.cast(tf.shape(keep)[0], tf.int32),
    }


def _padded_shapes(cfg: Config, training: bool) -> dict:
    """Shapes ``padded_batch`` zero-pads each element to (one copy: padding and batching at once)."""
    shapes = {"images": [*cfg.PREPROC.PAD_SIZE, 3], "image_info": [5], "source_id": []}
    if training:
        m, s = cfg.PREPROC.MAX_INSTANCES, cfg.PREPROC.GT_MASK_SIZE
        shapes.update(gt_boxes=[m, 4], gt_classes=[m], gt_masks=[m, s, s], num_gt=[])
    return shapes


def build_dataset(
    shards_dir: str | os.PathLike,
    cfg: Config,
    *,
    training: bool,
    rank: int = 0,
    world_size: int = 1,
    deterministic: bool = False,
    skip_batches: int = 0,
    synthetic: bool = False,
) -> tf.data.Dataset:
    """Batches of this rank's share of ``shards_dir`` (see the module docstring for keys and order).

    ``synthetic=True`` computes one batch and repeats it forever (measures the model without the
    input pipeline, as NVIDIA's ``--use_synthetic_data``).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    files, manifest = shard_files(shards_dir)
    if manifest["num_images"] < world_size:
        raise UserError(f"{shards_dir}: {manifest['num_images']} images cannot be shared by {world_size} processes")
    options = tf.data.Options()
    options.deterministic = deterministic or not training
    options.experimental_optimization.map_parallelization = True

    if training:
        if manifest["num_instances"] == 0:
            raise UserError(f"{shards_dir}: no annotated instances to train on")
        seed = cfg.TRAIN.SEED + rank
        batch = cfg.TRAIN.BATCH_PER_GPU
        records = _records(files, rank=rank, world_size=world_size, shuffle_seed=seed)
        # Shuffle within the epoch, then repeat: epochs stay whole (every image once per epoch),
        # and each one gets a new, seeded order.
        buffer = min(cfg.TRAIN.SHUFFLE_BUFFER, -(-manifest["num_images"] // world_size))
        records = records.shuffle(buffer, seed=seed).repeat().filter(_has_training_instance)
        records = records.enumerate().skip(skip_batches * batch)
        ds = records.map(lambda i, r: _train_example(i, r, cfg, seed), num_parallel_calls=AUTOTUNE)
        ds = ds.padded_batch(batch, _padded_shapes(cfg, training), drop_remainder=True)
    else:
        records = _records(files, rank=rank, world_size=world_size, shuffle_seed=None)
        ds = records.map(lambda r: _eval_example(r, cfg), num_parallel_calls=AUTOTUNE)
        ds = ds.padded_batch(cfg.TEST.BATCH_SIZE, _padded_shapes(cfg, training))
    if synthetic:
        ds = ds.take(1).cache().repeat()
    return ds.prefetch(AUTOTUNE).with_options(options)
