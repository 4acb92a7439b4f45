"""Region proposal network: the shared head and proposal generation (batched over images)."""

from __future__ import annotations

from typing import Mapping

import tensorflow as tf

from maskrcnn.model import box_ops

keras = tf.keras


class RPNHead(keras.layers.Layer):
    """3x3 conv + ReLU, then per-anchor objectness logits and box deltas; shared by every level.

    Args: ``channels`` (RPN.HEAD_CHANNELS), ``num_anchors`` per cell.
    Input: ``{level: [B, H_l, W_l, C]}``.
    Output: ``({level: logits [B, H_l * W_l * A]}, {level: deltas [B, H_l * W_l * A, 4]})`` float32,
    ordered (row, column, anchor) like ``anchors.grid_anchors``; deltas are ``(dy, dx, dh, dw)``.
    """

    def __init__(self, channels: int, num_anchors: int, name: str = "rpn"):
        super().__init__(name=name)
        self.channels = channels
        self.num_anchors = num_anchors
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.conv = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", kernel_initializer=init, name="rpn_conv0")
        self.objectness = keras.layers.Conv2D(num_anchors, 1, kernel_initializer=init, name="rpn_class")
        self.deltas = keras.layers.Conv2D(4 * num_anchors, 1, kernel_initializer=init, name="rpn_box")

    def get_config(self) -> dict:
        return {"channels": self.channels, "num_anchors": self.num_anchors, "name": self.name}

    def call(self, features: Mapping[int, tf.Tensor]) -> tuple[dict[int, tf.Tensor], dict[int, tf.Tensor]]:
        logits, deltas = {}, {}
        for level, x in features.items():
            hidden = self.conv(x)
            batch = tf.shape(x)[0]
            logits[level] = tf.reshape(tf.cast(self.objectness(hidden), tf.float32), [batch, -1])
            deltas[level] = tf.reshape(tf.cast(self.deltas(hidden), tf.float32), [batch, -1, 4])
        return logits, deltas


def _top_boxes_per_level(logits, deltas, anchors, image_sizes, *, pre_nms_topk: int, min_size: float):
    """Per level, the ``pre_nms_topk`` best anchors decoded and clipped, stacked over levels.

    Returns ``boxes [B, L, k, 4]`` and ``scores [B, L, k]`` sorted best first within each level, where
    ``k`` is the largest per-level count; smaller levels and boxes clipped to nothing (or below
    ``min_size``) get score ``-inf``.
    """
    levels = sorted(logits)
    counts = [min(pre_nms_topk, int(anchors[level].shape[0])) for level in levels]
    k = max(counts)
    level_boxes, level_scores = [], []
    for level, count in zip(levels, counts):
        scores, idx = tf.math.top_k(tf.stop_gradient(logits[level]), k=count, sorted=True)
        level_deltas = tf.gather(tf.stop_gradient(deltas[level]), idx, batch_dims=1)
        boxes = box_ops.decode_boxes(level_deltas, tf.gather(tf.convert_to_tensor(anchors[level], tf.float32), idx))
        boxes = box_ops.clip_boxes(boxes, image_sizes[:, 0:1], image_sizes[:, 1:2])
        scores = tf.where(box_ops.is_valid_box(boxes, min_size), scores, float("-inf"))
        level_boxes.append(tf.pad(boxes, [[0, 0], [0, k - count], [0, 0]]))
        level_scores.append(tf.pad(scores, [[0, 0], [0, k - count]], constant_values=float("-inf")))
    boxes = tf.stack(level_boxes, axis=1)
    scores = tf.stack(level_scores, axis=1)
    # Boxes invalidated above keep their place in the ranking; NMS wants them last.
    order = tf.argsort(scores, axis=-1, direction="DESCENDING", stable=True)
    return tf.gather(boxes, order, batch_dims=2), tf.gather(scores, order, batch_dims=2)


def _batched_nms(boxes: tf.Tensor, scores: tf.Tensor, max_output: int, iou_threshold: float) -> tuple[tf.Tensor, tf.Tensor]:
    """NMS over every ``[..., k]`` group of sorted boxes at once → ``boxes [..., max_output, 4]``,
    ``scores [..., max_output]`` (empty slots: zero box, score ``-inf``)."""
    keep, num_valid = tf.image.non_max_suppression_padded(
        boxes,
        scores,
        max_output_size=max_output,
        iou_threshold=iou_threshold,
        score_threshold=float("-inf"),  # only -inf (invalid) boxes are dropped
        pad_to_max_output_size=True,
        sorted_input=True,
        canonicalized_coordinates=True,
    )
    kept = tf.sequence_mask(num_valid, max_output)
    kept_boxes = tf.where(kept[..., None], tf.gather(boxes, keep, batch_dims=len(boxes.shape) - 2), 0.0)
    kept_scores = tf.where(kept, tf.gather(scores, keep, batch_dims=len(scores.shape) - 1), float("-inf"))
    return kept_boxes, kept_scores


def generate_proposals(
    logits: Mapping[int, tf.Tensor],
    deltas: Mapping[int, tf.Tensor],
    anchors: Mapping[int, tf.Tensor],
    image_sizes: tf.Tensor,
    *,
    pre_nms_topk: int,
    post_nms_topk: int,
    nms_thresh: float,
    min_size: float = 0.0,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per level: top-k by objectness, decode, clip, drop small boxes, NMS; then the best of all levels.

    Args:
        logits: ``{level: [B, N_l]}`` objectness logits.
        deltas: ``{level: [B, N_l, 4]}``.
        anchors: ``{level: [N_l, 4]}`` ``[y1, x1, y2, x2]`` image pixels (NumPy or tensor).
        image_sizes: ``[B, 2]`` float32 ``(height, width)`` of each resized image (not the padding).
        pre_nms_topk: boxes kept per level before NMS; post_nms_topk: proposals per image.
    Returns:
        ``boxes [B, post_nms_topk, 4]`` and ``scores [B, post_nms_topk]`` (objectness logits, best
        first), without gradient. Slots left empty when an image has fewer boxes hold a zero box and
        score ``-inf``; use ``tf.math.is_finite(scores)`` as the validity mask.
    """
    boxes, scores = _top_boxes_per_level(
        logits, deltas, anchors, image_sizes, pre_nms_topk=pre_nms_topk, min_size=min_size
    )
    num_levels, k = boxes.shape[1], boxes.shape[2]
    per_level = min(post_nms_topk, k)
    boxes, scores = _batched_nms(boxes, scores, per_level, nms_thresh)  # [B, L, per_level(, 4)]
    batch = tf.shape(boxes)[0]
    boxes = tf.reshape(boxes, [batch, num_levels * per_level, 4])
    scores = tf.reshape(scores, [batch, num_levels * per_level])
    num_out = min(post_nms_topk, num_levels * per_level)
    scores, idx = tf.math.top_k(scores, k=num_out, sorted=True)
    boxes = tf.gather(boxes, idx, batch_dims=1)
    pad = post_nms_topk - num_out
    boxes = tf.pad(boxes, [[0, 0], [0, pad], [0, 0]])
    scores = tf.pad(scores, [[0, 0], [0, pad]], constant_values=float("-inf"))
    return tf.stop_gradient(boxes), tf.stop_gradient(scores)
