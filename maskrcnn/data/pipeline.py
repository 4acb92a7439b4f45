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

Order and resume. Training reads an endless stream of whole epochs. Epoch ``e`` of a rank is a
pure function of ``(cfg.TRAIN.SEED + rank, e)``: its shard files in a stateless random order,
interleaved, then shuffled in windows of ``cfg.TRAIN.SHUFFLE_BUFFER`` records; the random flip of
the ``k``-th image of the stream is drawn from ``(seed, k)``. The manifest says how many training
images (``trainable``) each shard holds, so ``skip_batches=n`` starts at record ``n * B`` by
arithmetic: it jumps over whole epochs and reads (without decoding) less than one epoch of records.
A run resumed with the number of steps it had done continues exactly where it stopped.
``deterministic=True`` also fixes the order in which parallel decoding returns images (tests);
otherwise neighbouring images may swap.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Share:
    """The shard files one rank reads, and how many training images one epoch of them holds."""

    files: tuple[str, ...]
    by_file: bool              # False: every rank reads all files and keeps every world_size-th record
    trainable: int


def _rank_share(shards_dir: str | os.PathLike, manifest: dict, rank: int, world_size: int) -> _Share:
    """Shard by file when every rank gets at least one file (each reads only its own), else by record."""
    shards = [s for s in manifest["shards"] if s["records"] > 0]
    if len(shards) >= world_size:
        mine = shards[rank::world_size]
        return _Share(tuple(str(Path(shards_dir) / s["file"]) for s in mine), True, sum(s["trainable"] for s in mine))
    total = sum(s["trainable"] for s in shards)
    return _Share(tuple(str(Path(shards_dir) / s["file"]) for s in shards), False, len(range(rank, total, world_size)))


def _eval_records(share: _Share, rank: int, world_size: int) -> tf.data.Dataset:
    records = tf.data.TFRecordDataset(list(share.files))
    return records if share.by_file else records.shard(world_size, rank)


def _epoch_records(share: _Share, rank: int, world_size: int, seed: int, window: int, epoch: tf.Tensor) -> tf.data.Dataset:
    """The training records of one epoch, in that epoch's order (a function of ``seed`` and ``epoch`` only)."""
    epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
    if share.by_file:
        names = tf.random.experimental.stateless_shuffle(tf.constant(share.files), seed=epoch_seed)
        records = tf.data.Dataset.from_tensor_slices(names).interleave(
            tf.data.TFRecordDataset, cycle_length=min(len(share.files), _INTERLEAVE_FILES), block_length=1,
            num_parallel_calls=AUTOTUNE, deterministic=True).filter(_has_training_instance)
    else:
        records = tf.data.TFRecordDataset(list(share.files)).filter(_has_training_instance).shard(world_size, rank)
    windows = records.batch(window).enumerate()
    return windows.map(lambda i, w: tf.random.experimental.stateless_shuffle(
        w, seed=tf.random.experimental.stateless_fold_in(epoch_seed, i))).unbatch()


def _training_records(share: _Share, rank: int, world_size: int, seed: int, window: int, skip: int) -> tf.data.Dataset:
    """``(k, record)`` of the endless stream from record ``skip`` on; ``k`` is the record's position."""
    first_epoch, offset = divmod(skip, share.trainable)
    epochs = tf.data.Dataset.range(first_epoch, 2**62)
    records = epochs.flat_map(lambda e: _epoch_records(share, rank, world_size, seed, window, e))
    return records.skip(offset).enumerate(start=skip)


def _has_training_instance(record: tf.Tensor) -> tf.Tensor:
    crowd = tf.io.parse_single_example(record, {"image/object/is_crowd": tf.io.VarLenFeature(tf.int64)})
    return tf.reduce_any(tf.equal(crowd["image/object/is_crowd"].values, 0))


def _parse(record: tf.Tensor) -> dict:
    features = tf.io.parse_single_example(record, feature_spec())
    return {k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v for k, v in features.items()}


def _resized_and_info(image: tf.Tensor, cfg: Config) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 ``[H, W, 3]`` -> normalized, resized float32 ``[h, w, 3]`` and image_info float32 ``[5]``.

    Normalizing before resizing gives the same result (bilinear weights sum to 1, so the per-channel
    affine map commutes with resizing) on ~3x fewer pixels when COCO images are upscaled to 800.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    resized_h, resized_w, scale = preprocess.resized_size(height, width, cfg.PREPROC.SHORT_SIZE, cfg.PREPROC.MAX_SIZE)
    info = tf.stack([tf.cast(resized_h, tf.float32), tf.cast(resized_w, tf.float32), scale,
                     tf.cast(height, tf.float32), tf.cast(width, tf.float32)])
    normalized = preprocess.normalize(image, cfg.PREPROC.PIXEL_MEAN, cfg.PREPROC.PIXEL_STD)
    return tf.image.resize(normalized, tf.stack([resized_h, resized_w]), method="bilinear"), info


def preprocess_image(image: tf.Tensor, cfg: Config) -> tuple[tf.Tensor, tf.Tensor]:
    """Evaluation/serving preprocessing of one decoded image, exactly as the input pipeline does it.

    uint8 ``[H, W, 3]`` RGB -> (float32 ``[PH, PW, 3]`` resized, normalized, zero-padded bottom/right;
    float32 image_info ``[5]`` = ``[resized_h, resized_w, scale, H, W]``).
    """
    resized, info = _resized_and_info(image, cfg)
    padded = tf.image.pad_to_bounding_box(resized, 0, 0, *cfg.PREPROC.PAD_SIZE)
    return tf.ensure_shape(padded, [*cfg.PREPROC.PAD_SIZE, 3]), info


def _decode(features: dict) -> tf.Tensor:
    return tf.io.decode_jpeg(features["image/encoded"], channels=3)


def _source_id(features: dict) -> tf.Tensor:
    return tf.strings.to_number(features["image/source_id"], out_type=tf.int64)


def _eval_example(record: tf.Tensor, cfg: Config) -> dict:
    features = _parse(record)
    image, info = _resized_and_info(_decode(features), cfg)    # padded by padded_batch
    return {"images": image, "image_info": info, "source_id": _source_id(features)}


def _train_example(index: tf.Tensor, record: tf.Tensor, cfg: Config, seed: int) -> dict:
    features = _parse(record)
    image = _decode(features)
    max_instances, mask_size = cfg.PREPROC.MAX_INSTANCES, cfg.PREPROC.GT_MASK_SIZE

    keep = tf.where(tf.equal(features["image/object/is_crowd"], 0))[:max_instances, 0]
    boxes = tf.stack([tf.gather(features[k], keep) for k in BOX_KEYS], axis=1)   # normalized
    classes = tf.cast(tf.gather(features["image/object/class/label"], keep), tf.int32)
    height, width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    pixel_boxes = boxes * tf.stack([height, width, height, width])
    masks = preprocess.box_masks(preprocess.decode_masks(tf.gather(features["image/object/mask"], keep)),
                                 pixel_boxes, mask_size)

    flip = tf.random.stateless_uniform([], seed=tf.stack([tf.constant(seed, tf.int64), index])) < cfg.PREPROC.HFLIP_PROB
    image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
    boxes = tf.cond(flip, lambda: preprocess.flip_normalized_boxes(boxes), lambda: boxes)
    masks = tf.cond(flip, lambda: tf.reverse(masks, axis=[2]), lambda: masks)

    resized, info = _resized_and_info(image, cfg)
    return {
        "images": resized,
        "image_info": info,
        "source_id": _source_id(features),
        "gt_boxes": boxes * tf.stack([info[0], info[1], info[0], info[1]]),
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
    manifest = load_manifest(shards_dir)
    share = _rank_share(shards_dir, manifest, rank, world_size)
    missing = [f for f in share.files if not Path(f).exists()]
    if missing:
        raise UserError(f"{missing[0]} is listed in manifest.json but missing: re-run maskrcnn data convert")
    options = tf.data.Options()
    options.deterministic = deterministic or not training
    options.experimental_optimization.map_parallelization = True

    if training:
        if share.trainable == 0:
            raise UserError(f"{shards_dir}: no images with non-crowd instances for rank {rank} of {world_size}; "
                            f"convert more images or use fewer processes")
        seed, batch = cfg.TRAIN.SEED + rank, cfg.TRAIN.BATCH_PER_GPU
        window = min(cfg.TRAIN.SHUFFLE_BUFFER, share.trainable)
        logger.info("rank %d/%d: %d shard files (sharded by %s), %d training images per epoch, from batch %d",
                    rank, world_size, len(share.files), "file" if share.by_file else "record", share.trainable,
                    skip_batches)
        records = _training_records(share, rank, world_size, seed, window, skip_batches * batch)
        ds = records.map(lambda i, r: _train_example(i, r, cfg, seed), num_parallel_calls=AUTOTUNE)
        ds = ds.padded_batch(batch, _padded_shapes(cfg, training), drop_remainder=True)
    else:
        if not share.files or (not share.by_file and manifest["num_images"] <= rank):
            raise UserError(f"{shards_dir}: {manifest['num_images']} images cannot be shared by {world_size} processes")
        ds = _eval_records(share, rank, world_size).map(lambda r: _eval_example(r, cfg), num_parallel_calls=AUTOTUNE)
        ds = ds.padded_batch(cfg.TEST.BATCH_SIZE, _padded_shapes(cfg, training))
    if synthetic:
        ds = ds.take(1).cache().repeat()
    return ds.prefetch(AUTOTUNE).with_options(options)
