"""In-graph target assignment and balanced fg/bg sampling, batched over padded images.

Everything here is training-only, has fixed output shapes (so it runs under XLA) and no gradient.
Ground truth arrives padded: ``gt_boxes [B, M, 4]``, ``gt_classes [B, M]`` with class 0 for padding.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import tensorflow as tf

from maskrcnn.model import box_ops
from maskrcnn.model.roi_align import bin_centers
from maskrcnn.model.sampling import bilinear_sample


class Sample(NamedTuple):
    """A fixed-size sample per image: ``indices [B, S]`` into the candidates, positives first;
    ``positive``/``valid`` bool ``[B, S]`` (a slot is invalid when the image had too few candidates)."""

    indices: tf.Tensor
    positive: tf.Tensor
    valid: tf.Tensor


def sample_balanced(positive: tf.Tensor, negative: tf.Tensor, num_samples: int, positive_fraction: float) -> Sample:
    """Draw up to ``num_samples * positive_fraction`` positives at random, fill up with negatives.

    Args:
        positive, negative: bool ``[B, N]`` disjoint candidate masks.
    Returns:
        :class:`Sample` with ``S = num_samples``; positives occupy the first slots.
    """
    num_candidates = positive.shape[1]
    max_positive = min(int(num_samples * positive_fraction), num_candidates)
    num_negative_slots = min(num_samples, num_candidates)
    noise = tf.random.uniform(tf.shape(positive))
    pos_score, pos_idx = tf.math.top_k(tf.where(positive, noise, -1.0), k=max_positive)
    neg_score, neg_idx = tf.math.top_k(tf.where(negative, noise, -1.0), k=num_negative_slots)
    pos_ok = pos_score >= 0.0
    num_pos = tf.reduce_sum(tf.cast(pos_ok, tf.int32), axis=1, keepdims=True)
    neg_ok = tf.logical_and(neg_score >= 0.0, tf.range(num_negative_slots)[None] < num_samples - num_pos)
    indices = tf.concat([pos_idx, neg_idx], axis=1)
    ok = tf.concat([pos_ok, neg_ok], axis=1)
    is_pos = tf.concat([pos_ok, tf.zeros_like(neg_ok)], axis=1)
    # Compact: chosen slots first (positives, then negatives), keep num_samples of them.
    order = tf.argsort(tf.cast(tf.logical_not(ok), tf.int32), axis=1, stable=True)[:, :num_samples]
    indices = tf.gather(indices, order, batch_dims=1)
    valid = tf.gather(ok, order, batch_dims=1)
    is_pos = tf.gather(is_pos, order, batch_dims=1)
    if indices.shape[1] < num_samples:  # fewer candidates than slots: pad with invalid slots
        pad = num_samples - indices.shape[1]
        indices = tf.pad(indices, [[0, 0], [0, pad]])
        valid = tf.pad(valid, [[0, 0], [0, pad]])
        is_pos = tf.pad(is_pos, [[0, 0], [0, pad]])
    return Sample(tf.stop_gradient(indices), is_pos, valid)


def _iou_with_valid_gt(boxes: tf.Tensor, gt_boxes: tf.Tensor, gt_valid: tf.Tensor) -> tf.Tensor:
    """IoU ``[B, N, M]`` of ``boxes [B, N, 4]`` with the gt boxes; padding gts overlap nothing (IoU 0).

    Padding is zeroed on the ``[B, M, 4]`` boxes rather than masked on the ``[B, N, M]`` result:
    with every anchor of a large image that matrix is the biggest tensor of target assignment.
    """
    return box_ops.pairwise_iou(boxes, tf.where(gt_valid[..., None], gt_boxes, 0.0))


class RPNTargets(NamedTuple):
    """Sampled anchors per image: ``indices``, ``positive``, ``valid`` ``[B, S]`` and encoded
    ``box_targets [B, S, 4]`` (zero for non-positives)."""

    indices: tf.Tensor
    positive: tf.Tensor
    valid: tf.Tensor
    box_targets: tf.Tensor


def rpn_targets(
    anchors: tf.Tensor,
    gt_boxes: tf.Tensor,
    gt_valid: tf.Tensor,
    image_sizes: tf.Tensor,
    *,
    positive_thresh: float,
    negative_thresh: float,
    num_samples: int,
    positive_fraction: float,
) -> RPNTargets:
    """Label anchors and sample them (Faster R-CNN rules).

    An anchor inside the image is positive when its IoU with some gt is >= ``positive_thresh`` or it is
    (one of) the best anchor(s) of some gt; negative when its best IoU is < ``negative_thresh``;
    ignored in between. Anchors crossing the image border (``image_sizes [B, 2]``, resized image,
    not the padding) are ignored. An image without gt boxes gets only negatives.

    Args:
        anchors: ``[N, 4]`` all levels concatenated. gt_boxes: ``[B, M, 4]``. gt_valid: bool ``[B, M]``.
    """
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    y1, x1, y2, x2 = tf.unstack(anchors[None], 4, axis=-1)
    inside = (y1 >= 0.0) & (x1 >= 0.0) & (y2 <= image_sizes[:, 0:1]) & (x2 <= image_sizes[:, 1:2])  # [B, N]
    # Anchors outside are ignored whatever their overlap: make them empty so they match nothing.
    iou = _iou_with_valid_gt(tf.where(inside[..., None], anchors[None], 0.0), gt_boxes, gt_valid)  # [B, N, M]
    best_iou = tf.reduce_max(iou, axis=2)
    best_gt = tf.argmax(iou, axis=2, output_type=tf.int32)
    # Low-quality matches: every gt keeps its best anchors, ties included (a gt overlapping nothing keeps none).
    gt_best = tf.reduce_max(iou, axis=1, keepdims=True)  # [B, 1, M]
    is_best = tf.reduce_any((iou == gt_best) & (gt_best > 0.0), axis=2)
    positive = inside & ((best_iou >= positive_thresh) | is_best)
    negative = inside & (best_iou < negative_thresh) & ~positive
    sample = sample_balanced(positive, negative, num_samples, positive_fraction)
    matched = tf.gather(gt_boxes, tf.gather(best_gt, sample.indices, batch_dims=1), batch_dims=1)
    targets = box_ops.encode_boxes(matched, tf.gather(anchors, sample.indices))
    targets = tf.where(sample.positive[..., None], targets, 0.0)
    return RPNTargets(sample.indices, sample.positive, sample.valid, tf.stop_gradient(targets))


class ROITargets(NamedTuple):
    """Sampled ROIs per image (positives first): ``rois [B, S, 4]``, ``classes`` int32 ``[B, S]``
    (0 = background), ``box_targets [B, S, 4]`` (weighted encoding, zero for background),
    ``matched_gt`` int32 ``[B, S]``, ``positive``/``valid`` bool ``[B, S]``."""

    rois: tf.Tensor
    classes: tf.Tensor
    box_targets: tf.Tensor
    matched_gt: tf.Tensor
    positive: tf.Tensor
    valid: tf.Tensor


def roi_targets(
    proposals: tf.Tensor,
    proposal_valid: tf.Tensor,
    gt_boxes: tf.Tensor,
    gt_classes: tf.Tensor,
    *,
    num_samples: int,
    positive_fraction: float,
    fg_thresh: float,
    bbox_reg_weights: Sequence[float],
) -> ROITargets:
    """Append the gt boxes to the proposals, label them (fg when IoU >= ``fg_thresh``) and sample.

    Args:
        proposals: ``[B, P, 4]`` with bool ``proposal_valid [B, P]``. gt_boxes: ``[B, M, 4]``;
        gt_classes: int32 ``[B, M]`` (0 = padding).
    """
    gt_valid = gt_classes > 0
    candidates = tf.concat([tf.stop_gradient(proposals), gt_boxes], axis=1)
    candidate_valid = tf.concat([proposal_valid, gt_valid], axis=1)
    iou = _iou_with_valid_gt(candidates, gt_boxes, gt_valid)
    best_iou = tf.reduce_max(iou, axis=2)
    best_gt = tf.argmax(iou, axis=2, output_type=tf.int32)
    positive = candidate_valid & (best_iou >= fg_thresh)
    negative = candidate_valid & ~positive
    sample = sample_balanced(positive, negative, num_samples, positive_fraction)
    rois = tf.gather(candidates, sample.indices, batch_dims=1)
    matched = tf.gather(best_gt, sample.indices, batch_dims=1)
    classes = tf.where(sample.positive, tf.gather(gt_classes, matched, batch_dims=1), 0)
    targets = box_ops.encode_boxes(tf.gather(gt_boxes, matched, batch_dims=1), rois, bbox_reg_weights)
    targets = tf.where(sample.positive[..., None], targets, 0.0)
    return ROITargets(
        tf.stop_gradient(rois), classes, tf.stop_gradient(targets), matched, sample.positive, sample.valid
    )


def mask_targets(gt_masks: tf.Tensor, gt_boxes: tf.Tensor, rois: tf.Tensor, matched_gt: tf.Tensor, mask_size: int) -> tf.Tensor:
    """Binary mask targets ``[B, K, mask_size, mask_size]`` float32 for ROIs ``[B, K, 4]``.

    Each gt mask ``gt_masks [B, M, S, S]`` covers its gt box ``gt_boxes [B, M, 4]`` (the training batch
    contract); the part of it under the ROI is resampled at the ROI's bin centres (zero outside
    the gt box) and thresholded at 0.5.
    """
    batch, num_gt, size = tf.shape(gt_masks)[0], gt_masks.shape[1], gt_masks.shape[2]
    flat = tf.reshape(tf.cast(gt_masks, tf.float32), [batch, num_gt * size * size, 1])
    gt = tf.gather(gt_boxes, matched_gt, batch_dims=1)
    gy1, gx1, gy2, gx2 = tf.unstack(gt, 4, axis=-1)
    ry1, rx1, ry2, rx2 = tf.unstack(rois, 4, axis=-1)
    sy = size / tf.maximum(gy2 - gy1, 1e-6)
    sx = size / tf.maximum(gx2 - gx1, 1e-6)
    ys = bin_centers((ry1 - gy1) * sy, (ry2 - gy1) * sy, mask_size, 1)
    xs = bin_centers((rx1 - gx1) * sx, (rx2 - gx1) * sx, mask_size, 1)
    extent = tf.fill(tf.shape(matched_gt), size)
    samples = bilinear_sample(flat, matched_gt * size * size, extent, extent, ys, xs)[..., 0]
    return tf.stop_gradient(tf.cast(samples >= 0.5, tf.float32))
