"""Per-image preprocessing of the input pipeline, as pure TensorFlow functions.

Box convention: ``[y1, x1, y2, x2]`` (docs/architecture.md); "normalized" boxes are divided by the
image height/width, "pixel" boxes are in continuous pixel coordinates (pixel ``i`` spans
``[i, i + 1)``).
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def resized_size(height: tf.Tensor, width: tf.Tensor, short_size: int, max_size: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``(resized_h, resized_w, scale)``: short side to ``short_size`` unless the long side would pass ``max_size``.

    ``height``/``width``: scalar int. Returns int32, int32, float32 (``scale = resized / original``).
    """
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    scale = tf.minimum(short_size / tf.minimum(h, w), max_size / tf.maximum(h, w))
    resized_h = tf.cast(tf.round(h * scale), tf.int32)
    resized_w = tf.cast(tf.round(w * scale), tf.int32)
    return resized_h, resized_w, scale


def normalize(image: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """uint8 or float ``[h, w, 3]`` RGB (0-255) -> float32 ``(image - mean) / std``."""
    return (tf.cast(image, tf.float32) - tf.constant(mean, tf.float32)) * tf.constant([1.0 / v for v in std], tf.float32)


def flip_normalized_boxes(boxes: tf.Tensor) -> tf.Tensor:
    """Horizontal flip of normalized ``[N, 4]`` ``[y1, x1, y2, x2]`` boxes."""
    y1, x1, y2, x2 = tf.unstack(boxes, axis=1)
    return tf.stack([y1, 1.0 - x2, y2, 1.0 - x1], axis=1)


def aligned_crop_boxes(boxes: tf.Tensor, height: tf.Tensor, width: tf.Tensor, size: int) -> tf.Tensor:
    """Pixel boxes ``[N, 4]`` -> the normalized boxes that make ``tf.image.crop_and_resize`` sample
    an ``size x size`` grid at the centres of equal cells of each box.

    ``crop_and_resize`` maps normalized ``y`` to ``y * (height - 1)`` and puts the first and last
    samples on the box edges; moving each edge half a cell inwards and half a pixel up-left (pixel
    centres are at ``i + 0.5``) gives cell-centre sampling (the misalignment tensorpack's NOTES
    describe).
    """
    y1, x1, y2, x2 = tf.unstack(boxes, axis=1)
    half_h, half_w = 0.5 * (y2 - y1) / size, 0.5 * (x2 - x1) / size
    h1 = tf.maximum(tf.cast(height, tf.float32) - 1.0, 1.0)
    w1 = tf.maximum(tf.cast(width, tf.float32) - 1.0, 1.0)
    return tf.stack([(y1 + half_h - 0.5) / h1, (x1 + half_w - 0.5) / w1,
                     (y2 - half_h - 0.5) / h1, (x2 - half_w - 0.5) / w1], axis=1)


def decode_masks(pngs: tf.Tensor) -> tf.Tensor:
    """``[N]`` PNG strings (full image size) -> uint8 ``[N, H, W, 1]`` in {0, 1} (nonzero = object)."""
    masks = tf.map_fn(lambda png: tf.io.decode_png(png, channels=1), pngs,
                      fn_output_signature=tf.TensorSpec([None, None, 1], tf.uint8))
    return tf.minimum(masks, 1)


def box_masks(masks: tf.Tensor, boxes: tf.Tensor, size: int) -> tf.Tensor:
    """Full-image {0, 1} masks ``[N, H, W, 1]`` cropped to their pixel boxes ``[N, 4]`` -> float32 ``[N, size, size]`` in {0, 1}."""
    height, width = tf.shape(masks)[1], tf.shape(masks)[2]
    crops = tf.image.crop_and_resize(masks, aligned_crop_boxes(boxes, height, width, size),
                                     tf.range(tf.shape(masks)[0]), [size, size])
    return tf.cast(crops[..., 0] >= 0.5, tf.float32)
