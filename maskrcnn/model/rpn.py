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
        self.num_anchors = num_anchors
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.conv = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", kernel_initializer=init, name="rpn_conv0")
        self.objectness = keras.layers.Conv2D(num_anchors, 1, kernel_initializer=init, name="rpn_class")
        self.deltas = keras.layers.Conv2D(4 * num_anchors, 1, kernel_initializer=init, name="rpn_box")

    def call(self, features: Mapping[int, tf.Tensor]) -> tuple[dict[int, tf.Tensor], dict[int, tf.Tensor]]:
        logits, deltas = {}, {}
        for level, x in features.items():
            hidden = self.conv(x)
            batch = tf.shape(x)[0]
            logits[level] = tf.reshape(tf.cast(self.objectness(hidden), tf.float32), [batch, -1])
            deltas[level] = tf.reshape(tf.cast(self.deltas(hidden), tf.float32), [batch, -1, 4])
        return logits, deltas


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
        ``boxes [B, post_nms_topk, 4]`` (no gradient) and ``scores [B, post_nms_topk]`` (objectness
        logits, best first). Slots left empty when an image has fewer boxes hold a zero box and
        score ``-inf``; use ``tf.math.is_finite(scores)`` as the validity mask.
    """
    levels = sorted(logits)
    batch = tf.shape(logits[levels[0]])[0]
    # One NMS over [B * L] "images" of k boxes each: pad every level to the same k.
    k = max(min(pre_nms_topk, int(anchors[level].shape[0])) for level in levels)
    level_boxes, level_scores = [], []
    for level in levels:
        scores = tf.stop_gradient(logits[level])
        k_level = min(pre_nms_topk, int(anchors[level].shape[0]))
        top_scores, top_idx = tf.math.top_k(scores, k=k_level, sorted=True)
        top_deltas = tf.gather(tf.stop_gradient(deltas[level]), top_idx, batch_dims=1)
        top_anchors = tf.gather(tf.convert_to_tensor(anchors[level], tf.float32), top_idx)
        boxes = box_ops.decode_boxes(top_deltas, top_anchors)
        boxes = box_ops.clip_boxes(boxes, image_sizes[:, 0:1], image_sizes[:, 1:2])
        valid = box_ops.is_valid_box(boxes, min_size)
        top_scores = tf.where(valid, top_scores, tf.fill(tf.shape(top_scores), float("-inf")))
        pad = k - k_level
        level_boxes.append(tf.pad(boxes, [[0, 0], [0, pad], [0, 0]]))
        level_scores.append(tf.pad(top_scores, [[0, 0], [0, pad]], constant_values=float("-inf")))
    boxes = tf.stack(level_boxes, axis=1)    # [B, L, k, 4]
    scores = tf.stack(level_scores, axis=1)  # [B, L, k]
    # Invalid boxes were sorted by their original score; push them behind every valid one.
    order = tf.argsort(scores, axis=-1, direction="DESCENDING", stable=True)
    boxes = tf.gather(boxes, order, batch_dims=2)
    scores = tf.gather(scores, order, batch_dims=2)
    per_level = min(post_nms_topk, k)
    keep, num_valid = tf.image.non_max_suppression_padded(
        boxes,
        scores,
        max_output_size=per_level,
        iou_threshold=nms_thresh,
        score_threshold=float("-inf"),
        pad_to_max_output_size=True,
        sorted_input=True,
        canonicalized_coordinates=True,
    )  # [B, L, per_level], [B, L]
    kept_boxes = tf.gather(boxes, keep, batch_dims=2)
    kept_scores = tf.gather(scores, keep, batch_dims=2)
    slot_valid = tf.sequence_mask(num_valid, per_level)
    kept_scores = tf.where(slot_valid, kept_scores, float("-inf"))
    merged_boxes = tf.reshape(kept_boxes, [batch, -1, 4])
    merged_scores = tf.reshape(kept_scores, [batch, -1])
    num_out = min(post_nms_topk, per_level * len(levels))
    top_scores, top_idx = tf.math.top_k(merged_scores, k=num_out, sorted=True)
    top_boxes = tf.gather(merged_boxes, top_idx, batch_dims=1)
    top_boxes = tf.where(tf.math.is_finite(top_scores)[..., None], top_boxes, 0.0)
    if num_out < post_nms_topk:
        pad = post_nms_topk - num_out
        top_boxes = tf.pad(top_boxes, [[0, 0], [0, pad], [0, 0]])
        top_scores = tf.pad(top_scores, [[0, 0], [0, pad]], constant_values=float("-inf"))
    return tf.stop_gradient(top_boxes), tf.stop_gradient(top_scores)
