"""Inference post-processing: per-class boxes and NMS, and pasting box masks into images."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from maskrcnn.model import box_ops
from maskrcnn.model.sampling import bilinear_sample


def detect_boxes(
    rois: tf.Tensor,
    class_logits: tf.Tensor,
    box_deltas: tf.Tensor,
    image_sizes: tf.Tensor,
    *,
    bbox_reg_weights: Sequence[float],
    score_thresh: float,
    nms_thresh: float,
    max_detections: int,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per-class decode, clip, score threshold and NMS, then the best ``max_detections`` per image.

    Args:
        rois: ``[B, R, 4]`` proposals (resized-image pixels); class_logits: ``[B, R, K + 1]``;
        box_deltas: ``[B, R, K + 1, 4]``; image_sizes: ``[B, 2]`` resized ``(height, width)``.
    Returns:
        ``boxes [B, D, 4]`` (resized-image pixels), ``scores [B, D]``, ``classes`` int32 ``[B, D]``
        (contiguous ids, 0 = empty slot), ``num_detections`` int32 ``[B]``; ``D = max_detections``.
    """
    probs = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)[:, :, 1:]        # [B, R, K]
    boxes = box_ops.decode_boxes(box_deltas[:, :, 1:, :], rois[:, :, None, :], bbox_reg_weights)
    boxes = box_ops.clip_boxes(boxes, image_sizes[:, 0, None, None], image_sizes[:, 1, None, None])
    # Degenerate boxes (clipped away) must not be detections.
    probs = tf.where(box_ops.is_valid_box(boxes), probs, 0.0)
    nms_boxes, nms_scores, nms_classes, num = tf.image.combined_non_max_suppression(
        boxes,
        probs,
        max_output_size_per_class=max_detections,
        max_total_size=max_detections,
        iou_threshold=nms_thresh,
        score_threshold=score_thresh,
        pad_per_class=False,
        clip_boxes=False,
    )
    slot_valid = tf.sequence_mask(num, max_detections)
    classes = tf.where(slot_valid, tf.cast(nms_classes, tf.int32) + 1, 0)
    return nms_boxes, tf.where(slot_valid, nms_scores, 0.0), classes, num


def paste_masks(
    masks: tf.Tensor, boxes: tf.Tensor, height: tf.Tensor, width: tf.Tensor, top: tf.Tensor = 0, left: tf.Tensor = 0
) -> tf.Tensor:
    """Paste box-relative masks into an image of ``height x width`` pixels, or a window of one.

    Args:
        masks: ``[N, m, m]`` float probabilities, covering each box.
        boxes: ``[N, 4]`` ``[y1, x1, y2, x2]`` in pixels of the target image.
        height, width: int scalars (tensors or ints), the target image size, or the window's.
        top, left: int scalars, the window's first row and column in the image (0: the whole image).
    Returns:
        ``[N, height, width]`` float32: each pixel centre's value bilinearly interpolated from the
        mask, which is taken as zero outside its box (a pixel centre on the box edge gets half the
        border value, so a 0.5 threshold ends the object at the box edge); beyond half a mask cell
        outside the box the value is exactly 0. A window holds the same values as the same pixels
        of the whole image. Every op has a CPU kernel.
    """
    masks = tf.cast(masks, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    num, size = tf.shape(masks)[0], tf.shape(masks)[1]
    top, left = tf.cast(top, tf.int32), tf.cast(left, tf.int32)
    bottom, right = top + tf.cast(height, tf.int32), left + tf.cast(width, tf.int32)
    y1, x1, y2, x2 = tf.unstack(boxes, 4, axis=-1)
    size_f = tf.cast(size, tf.float32)
    pixel_y = tf.cast(tf.range(top, bottom), tf.float32) + 0.5  # pixel centres, continuous coordinates
    pixel_x = tf.cast(tf.range(left, right), tf.float32) + 0.5
    # Mask pixel-index coordinate of every image pixel centre: (p - y1) / box_h * m - 0.5.
    ys = (pixel_y[None] - y1[:, None]) / tf.maximum(y2 - y1, 1e-6)[:, None] * size_f - 0.5
    xs = (pixel_x[None] - x1[:, None]) / tf.maximum(x2 - x1, 1e-6)[:, None] * size_f - 0.5
    flat = tf.reshape(masks, [1, -1, 1])
    offsets = tf.range(num)[None] * size * size
    extent = tf.fill([1, num], size)
    pasted = bilinear_sample(flat, offsets, extent, extent, ys[None], xs[None])
    return pasted[0, ..., 0]

