"""The tf.data input pipeline: the contract's shapes, aligned boxes and masks, sharding, order, resume."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pycocotools.coco import COCO

from maskrcnn.config import get_config
from maskrcnn.data import preprocess
from maskrcnn.data.pipeline import build_dataset
from maskrcnn.utils.io import read_json

CFG = get_config("tiny")


def _batches(ds, n):
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


def test_training_batch_has_the_contract_shapes_and_dtypes(tiny_shards):
    batch = _batches(build_dataset(tiny_shards / "train2017", CFG, training=True), 1)[0]
    b, (ph, pw), m, s = CFG.TRAIN.BATCH_PER_GPU, CFG.PREPROC.PAD_SIZE, CFG.PREPROC.MAX_INSTANCES, CFG.PREPROC.GT_MASK_SIZE
    expected = {"images": ("float32", (b, ph, pw, 3)), "image_info": ("float32", (b, 5)), "source_id": ("int64", (b,)),
                "gt_boxes": ("float32", (b, m, 4)), "gt_classes": ("int32", (b, m)),
                "gt_masks": ("float32", (b, m, s, s)), "num_gt": ("int32", (b,))}
    assert {k: (v.dtype.name, v.shape) for k, v in batch.items()} == expected
    for i in range(b):
        n = batch["num_gt"][i]
        rh, rw = batch["image_info"][i, :2].astype(int)
        assert n >= 1 and (batch["gt_classes"][i, :n] >= 1).all() and (batch["gt_classes"][i, n:] == 0).all()
        boxes = batch["gt_boxes"][i, :n]
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes[:, 2] <= rh + 1e-3).all() and (boxes[:, 3] <= rw + 1e-3).all()
        assert set(np.unique(batch["gt_masks"][i])) <= {0.0, 1.0}
        assert (batch["images"][i, rh:] == 0).all() and (batch["images"][i, :, rw:] == 0).all()   # zero padding
        assert max(rh, rw) <= CFG.PREPROC.MAX_SIZE and (min(rh, rw) == CFG.PREPROC.SHORT_SIZE or max(rh, rw) == CFG.PREPROC.MAX_SIZE)


def test_eval_batches_cover_every_image_once(tiny_shards):
    ds = build_dataset(tiny_shards / "val2017", CFG, training=False)
    batches = _batches(ds, 100)
    assert set(batches[0]) == {"images", "image_info", "source_id"}
    ids = np.concatenate([b["source_id"] for b in batches])
    assert len(ids) == len(set(ids)) == 8


def _paste(mask: np.ndarray, box: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour paste of a box-relative mask into a ``height x width`` frame (reference)."""
    y1, x1, y2, x2 = box
    ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5
    iy = np.floor((ys - y1) / (y2 - y1) * mask.shape[0]).astype(int)
    ix = np.floor((xs - x1) / (x2 - x1) * mask.shape[1]).astype(int)
    inside = (iy[:, None] >= 0) & (iy[:, None] < mask.shape[0]) & (ix[None] >= 0) & (ix[None] < mask.shape[1])
    return inside & (mask[np.clip(iy, 0, mask.shape[0] - 1)][:, np.clip(ix, 0, mask.shape[1] - 1)] > 0)


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_boxes_and_masks_stay_aligned_with_the_image_after_flip(synth_coco, tiny_shards, flip_prob):
    from maskrcnn.config import apply_overrides

    cfg = apply_overrides(CFG, [f"PREPROC.HFLIP_PROB={flip_prob}"])
    coco = COCO(str(synth_coco / "annotations" / "instances_train2017.json"))
    batch = _batches(build_dataset(tiny_shards / "train2017", cfg, training=True, deterministic=True), 1)[0]
    for i, image_id in enumerate(batch["source_id"]):
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=int(image_id))) if not a["iscrowd"]]
        rh, rw = batch["image_info"][i, :2].astype(int)
        assert batch["num_gt"][i] == len(anns)
        for j, ann in enumerate(anns):
            full = np.asarray(Image.fromarray(coco.annToMask(ann) * 255).resize((rw, rh), Image.NEAREST)) > 0
            if flip_prob:
                full = full[:, ::-1]
            pasted = _paste(batch["gt_masks"][i, j], batch["gt_boxes"][i, j], rh, rw)
            iou = (pasted & full).sum() / (pasted | full).sum()
            assert iou > 0.8, f"image {image_id} instance {j}: IoU {iou:.2f}"
            assert batch["gt_classes"][i, j] == {1: 1, 3: 2, 7: 3, 12: 4, 18: 5}[ann["category_id"]]


def test_rank_shards_are_disjoint_and_cover_the_data(tiny_shards):
    for world_size in (2, 3):    # 2: one file per rank; 3: more ranks than val files, sharded by record
        ids = [np.concatenate([b["source_id"] for b in
                               _batches(build_dataset(tiny_shards / "val2017", CFG, training=False, rank=r,
                                                      world_size=world_size), 100)])
               for r in range(world_size)]
        assert sum(len(x) for x in ids) == len(set(np.concatenate(ids))) == 8
    for world_size in (2, 5):    # 4 train files: by file, then by record
        train = [set(np.concatenate([b["source_id"] for b in _batches(
            build_dataset(tiny_shards / "train2017", CFG, training=True, rank=r, world_size=world_size,
                          deterministic=True), 1)]))
            for r in range(world_size)]
        assert sum(len(t) for t in train) == len(set().union(*train)) == 4 * world_size


def test_order_is_reproducible_and_skip_batches_resumes_the_stream(tiny_shards):
    def stream(n, **kw):
        return _batches(build_dataset(tiny_shards / "train2017", CFG, training=True, deterministic=True, **kw), n)

    first, again = stream(10), stream(10)
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    trainable = sum(s["trainable"] for s in read_json(tiny_shards / "train2017" / "manifest.json")["shards"])
    ids = [i for b in first for i in b["source_id"].tolist()]
    assert len(set(ids[:trainable])) == trainable                   # whole epochs: each image once per epoch
    assert ids[trainable:trainable + 16] != ids[:16]                # and every epoch in a new order
    for skip in (3, 7):                                             # inside the first epoch, and past it
        resumed = stream(2, skip_batches=skip)
        for a, b in zip(first[skip:], resumed):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])


def test_synthetic_mode_repeats_one_batch(tiny_shards):
    a, b = _batches(build_dataset(tiny_shards / "train2017", CFG, training=True, synthetic=True), 2)
    np.testing.assert_array_equal(a["images"], b["images"])


def test_resized_size_keeps_aspect_within_limits():
    h, w, s = preprocess.resized_size(480, 640, 800, 1333)
    assert (int(h), int(w)) == (800, 1067) and float(s) == pytest.approx(800 / 480)
    h, w, s = preprocess.resized_size(100, 1000, 800, 1333)
    assert (int(h), int(w)) == (133, 1333)


def test_box_masks_sample_cell_centres():
    mask = np.zeros((1, 40, 80, 1), np.float32)
    mask[0, 10:30, 20:60] = 1
    crop = preprocess.box_masks(tf.constant(mask), tf.constant([[10.0, 20.0, 30.0, 60.0]]), 8).numpy()
    assert crop.shape == (1, 8, 8) and crop.all()
    half = preprocess.box_masks(tf.constant(mask), tf.constant([[10.0, 0.0, 30.0, 40.0]]), 8).numpy()[0]
    np.testing.assert_array_equal(half, np.repeat([[0, 0, 0, 0, 1, 1, 1, 1]], 8, axis=0))


def test_preprocess_image_matches_the_eval_pipeline(synth_coco, tiny_shards):
    from maskrcnn.data.pipeline import preprocess_image

    batch = _batches(build_dataset(tiny_shards / "val2017", CFG, training=False), 1)[0]
    coco = COCO(str(synth_coco / "annotations" / "instances_val2017.json"))
    file_name = coco.imgs[int(batch["source_id"][0])]["file_name"]
    image = tf.io.decode_jpeg((synth_coco / "val2017" / file_name).read_bytes(), channels=3)
    padded, info = preprocess_image(image, CFG)
    np.testing.assert_allclose(padded.numpy(), batch["images"][0], atol=1e-5)
    np.testing.assert_allclose(info.numpy(), batch["image_info"][0])
