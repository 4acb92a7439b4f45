"""Loss functions (pure, float32). Normalizations follow tensorpack / Detectron:

- RPN objectness: sigmoid cross-entropy averaged over the sampled anchors;
  RPN boxes: smooth-L1 (beta 1/9) summed over positive anchors / number of anchor slots (B x S).
- Box head classes: softmax cross-entropy averaged over the sampled ROIs;
  box head boxes: smooth-L1 (beta 1) on the gt class's deltas, summed over fg ROIs / number of sampled ROIs.
- Masks: per-pixel sigmoid cross-entropy on the gt class's channel, averaged over fg ROIs and pixels.
"""

from __future__ import annotations

import tensorflow as tf


def smooth_l1(diff: tf.Tensor, beta: float) -> tf.Tensor:
    """Elementwise smooth-L1 (Huber scaled by 1/beta): ``0.5 x^2 / beta`` below ``beta``, ``|x| - beta/2`` above."""
    absolute = tf.abs(diff)
    return tf.where(absolute < beta, 0.5 * tf.square(absolute) / beta, absolute - 0.5 * beta)


def _count(mask: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(mask, tf.float32))


def rpn_losses(
    logits: tf.Tensor, deltas: tf.Tensor, positive: tf.Tensor, valid: tf.Tensor, box_targets: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Objectness and box losses over the sampled anchors.

    Args:
        logits: ``[B, S]`` objectness logits of the sampled anchors; deltas: ``[B, S, 4]``.
        positive, valid: bool ``[B, S]``; box_targets: ``[B, S, 4]``.
    Returns: ``(loss_objectness, loss_rpn_box_reg)`` scalars.
    """
    logits = tf.cast(logits, tf.float32)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(positive, tf.float32), logits=logits)
    weights = tf.cast(valid, tf.float32)
    objectness = tf.math.divide_no_nan(tf.reduce_sum(ce * weights), tf.reduce_sum(weights))
    box = tf.reduce_sum(smooth_l1(tf.cast(deltas, tf.float32) - box_targets, 1.0 / 9.0), axis=-1)
    num_slots = tf.cast(tf.size(positive), tf.float32)
    box_loss = tf.reduce_sum(box * tf.cast(positive, tf.float32)) / num_slots
    return objectness, box_loss


def box_head_losses(
    class_logits: tf.Tensor, box_deltas: tf.Tensor, classes: tf.Tensor, valid: tf.Tensor, box_targets: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Classification and class-specific box regression over the sampled ROIs.

    Args:
        class_logits: ``[B, S, K + 1]`` (index 0 = background); box_deltas: ``[B, S, K + 1, 4]``.
        classes: int32 ``[B, S]`` (0 = background); valid: bool ``[B, S]``; box_targets: ``[B, S, 4]``.
    Returns: ``(loss_classifier, loss_box_reg)`` scalars.
    """
    weights = tf.cast(valid, tf.float32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=classes, logits=tf.cast(class_logits, tf.float32))
    num_valid = tf.reduce_sum(weights)
    classifier = tf.math.divide_no_nan(tf.reduce_sum(ce * weights), num_valid)
    deltas = tf.gather(tf.cast(box_deltas, tf.float32), classes, batch_dims=2)  # [B, S, 4]
    foreground = tf.cast((classes > 0) & valid, tf.float32)
    box = tf.reduce_sum(smooth_l1(deltas - box_targets, 1.0), axis=-1)
    box_loss = tf.math.divide_no_nan(tf.reduce_sum(box * foreground), num_valid)
    return classifier, box_loss


def mask_loss(mask_logits: tf.Tensor, classes: tf.Tensor, positive: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Sigmoid cross-entropy of the gt class's mask.

    Args:
        mask_logits: ``[B, F, K, m, m]`` (channel ``k`` is class ``k + 1``); classes: int32 ``[B, F]``;
        positive: bool ``[B, F]`` (only these count); targets: ``[B, F, m, m]`` in {0, 1}.
    """
    channel = tf.maximum(classes - 1, 0)
    logits = tf.gather(tf.cast(mask_logits, tf.float32), channel, batch_dims=2)  # [B, F, m, m]
    ce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits), axis=[2, 3])
    weights = tf.cast(positive, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(ce * weights), tf.reduce_sum(weights))
