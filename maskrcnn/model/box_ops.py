"""Box math on ``[y1, x1, y2, x2]`` float boxes: IoU, encode/decode against anchors, clipping.

Boxes are continuous coordinates (a pixel ``k`` spans ``[k, k + 1)``), so a box's height is
``y2 - y1`` with no ``+ 1`` (the tensorpack / Detectron2 convention). Every function takes
leading batch dimensions and broadcasts over them. Box math stays in float32 under mixed precision.
"""

from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

# Largest log-scale change a decoded box may take (Detectron): exp(4.135) = 1000 / 16.
MAX_LOG_SCALE = math.log(1000.0 / 16.0)


def box_area(boxes: tf.Tensor) -> tf.Tensor:
    """``[..., 4]`` → ``[...]`` areas; degenerate boxes have area 0."""
    y1, x1, y2, x2 = tf.unstack(boxes, 4, axis=-1)
    return tf.maximum(y2 - y1, 0.0) * tf.maximum(x2 - x1, 0.0)


def pairwise_iou(boxes1: tf.Tensor, boxes2: tf.Tensor) -> tf.Tensor:
    """IoU of every pair: ``[..., N, 4]`` x ``[..., M, 4]`` → ``[..., N, M]``.

    A pair whose union is empty (two degenerate boxes) has IoU 0.
    """
    a = tf.expand_dims(boxes1, -2)  # [..., N, 1, 4]
    b = tf.expand_dims(boxes2, -3)  # [..., 1, M, 4]
    inter_h = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    inter_w = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = inter_h * inter_w
    union = tf.expand_dims(box_area(boxes1), -1) + tf.expand_dims(box_area(boxes2), -2) - inter
    return tf.math.divide_no_nan(inter, union)


def _centers_sizes(boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    y1, x1, y2, x2 = tf.unstack(boxes, 4, axis=-1)
    h, w = y2 - y1, x2 - x1
    return y1 + 0.5 * h, x1 + 0.5 * w, h, w


def encode_boxes(boxes: tf.Tensor, anchors: tf.Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> tf.Tensor:
    """Regression targets ``[..., 4]`` = ``(dy, dx, dh, dw)`` of ``boxes`` relative to ``anchors``.

    ``dy = wy * (cy - cy_a) / h_a``, ``dh = wh * log(h / h_a)``; ``weights = (wy, wx, wh, ww)``.
    Degenerate boxes are floored at a tiny size so the log stays finite.
    """
    cy, cx, h, w = _centers_sizes(boxes)
    acy, acx, ah, aw = _centers_sizes(anchors)
    eps = 1e-6
    ah, aw = tf.maximum(ah, eps), tf.maximum(aw, eps)
    wy, wx, wh, ww = weights
    return tf.stack(
        [
            wy * (cy - acy) / ah,
            wx * (cx - acx) / aw,
            wh * tf.math.log(tf.maximum(h, eps) / ah),
            ww * tf.math.log(tf.maximum(w, eps) / aw),
        ],
        axis=-1,
    )


def decode_boxes(deltas: tf.Tensor, anchors: tf.Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> tf.Tensor:
    """Inverse of :func:`encode_boxes`: ``deltas [..., 4]`` applied to ``anchors [..., 4]`` → boxes.

    Size changes are clamped at ``MAX_LOG_SCALE`` so a wild prediction cannot overflow.
    """
    deltas = tf.cast(deltas, tf.float32)
    acy, acx, ah, aw = _centers_sizes(anchors)
    wy, wx, wh, ww = weights
    dy, dx, dh, dw = tf.unstack(deltas, 4, axis=-1)
    cy = dy / wy * ah + acy
    cx = dx / wx * aw + acx
    h = tf.exp(tf.minimum(dh / wh, MAX_LOG_SCALE)) * ah
    w = tf.exp(tf.minimum(dw / ww, MAX_LOG_SCALE)) * aw
    return tf.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)


def clip_boxes(boxes: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """Clip ``[..., 4]`` boxes to ``[0, height] x [0, width]``.

    ``height``/``width`` broadcast against ``boxes[..., 0]`` (e.g. ``[B, 1]`` for ``[B, N, 4]``).
    """
    height = tf.cast(height, boxes.dtype)
    width = tf.cast(width, boxes.dtype)
    y1, x1, y2, x2 = tf.unstack(boxes, 4, axis=-1)
    zero = tf.zeros_like(y1)
    return tf.stack(
        [
            tf.clip_by_value(y1, zero, height + zero),
            tf.clip_by_value(x1, zero, width + zero),
            tf.clip_by_value(y2, zero, height + zero),
            tf.clip_by_value(x2, zero, width + zero),
        ],
        axis=-1,
    )


def is_valid_box(boxes: tf.Tensor, min_size: float = 0.0) -> tf.Tensor:
    """``[..., 4]`` → bool ``[...]``: height and width both larger than ``min_size``."""
    y1, x1, y2, x2 = tf.unstack(boxes, 4, axis=-1)
    return tf.logical_and(y2 - y1 > min_size, x2 - x1 > min_size)
