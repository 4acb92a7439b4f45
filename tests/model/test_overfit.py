"""The model can learn: on one fixed batch of the tiny preset the total loss falls by >= 90 %."""

import numpy as np
import pytest
import tensorflow as tf

from maskrcnn.config import get_config
from maskrcnn.model.mask_rcnn import MaskRCNN


def shapes_batch(cfg):
    """Two 192x192 images: red rectangles (class 1, full box masks) and green ellipses (class 2)."""
    ph, pw = cfg.PREPROC.PAD_SIZE
    m, s = cfg.PREPROC.MAX_INSTANCES, cfg.PREPROC.GT_MASK_SIZE
    images = np.full((2, ph, pw, 3), -1.0, np.float32)
    boxes = np.zeros((2, m, 4), np.float32)
    classes = np.zeros((2, m), np.int32)
    masks = np.zeros((2, m, s, s), np.float32)
    v, u = (np.mgrid[0:s, 0:s] + 0.5) / s
    objects = [[(20, 30, 80, 100, 1), (100, 90, 170, 180, 2)], [(40, 40, 140, 120, 2)]]
    for b, objs in enumerate(objects):
        for k, (y1, x1, y2, x2, c) in enumerate(objs):
            boxes[b, k], classes[b, k] = (y1, x1, y2, x2), c
            if c == 1:
                images[b, y1:y2, x1:x2, 0] = 1.5
                masks[b, k] = 1.0
            else:
                yy, xx = np.mgrid[y1:y2, x1:x2] + 0.5
                inside = ((yy - (y1 + y2) / 2) / ((y2 - y1) / 2)) ** 2 + ((xx - (x1 + x2) / 2) / ((x2 - x1) / 2)) ** 2 <= 1
                images[b, y1:y2, x1:x2, 1] = np.where(inside, 1.5, -1.0)
                masks[b, k] = (v - 0.5) ** 2 + (u - 0.5) ** 2 <= 0.25
    return {
        "images": tf.constant(images),
        "image_info": tf.constant([[ph, pw, 1.0, ph, pw]] * 2, tf.float32),
        "gt_boxes": tf.constant(boxes),
        "gt_classes": tf.constant(classes),
        "gt_masks": tf.constant(masks),
        "num_gt": tf.constant([2, 1], tf.int32),
    }


@pytest.mark.slow
def test_total_loss_falls_by_90_percent_on_one_batch():
    tf.random.set_seed(0)
    cfg = get_config("tiny", ["NUM_CLASSES=2"])
    model = MaskRCNN(cfg)
    batch = shapes_batch(cfg)
    optimizer = tf.keras.optimizers.Adam(1e-3)

    @tf.function(jit_compile=True)  # also proves the training graph compiles with XLA
    def step(batch):
        with tf.GradientTape() as tape:
            losses = model.compute_losses(batch, training=True)
        grads = tape.gradient(losses["total_loss"], model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return losses["total_loss"]

    history = [float(step(batch)) for _ in range(100)]
    first, last = history[0], float(np.mean(history[-10:]))
    assert np.all(np.isfinite(history))
    assert last <= 0.1 * first, f"total loss {first:.3f} -> {last:.3f}"

    out = model.detect(batch["images"], batch["image_info"])
    # The overfit model finds the three objects with the right classes.
    assert out["num_detections"].numpy().min() >= 1
    assert sorted(out["classes"].numpy()[0, :2].tolist()) == [1, 2] and out["classes"].numpy()[1, 0] == 2
