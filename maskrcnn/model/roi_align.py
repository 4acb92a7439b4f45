"""Multi-level ROIAlign: each box is pooled from the FPN level that matches its size.

Sampling points sit at the centres of the output bins (``sampling_ratio`` points per bin side,
averaged), in continuous coordinates shifted by half a pixel: the alignment fix of tensorpack's
``crop_and_resize`` wrapper and Detectron2's ``ROIAlign(aligned=True)``. Points up to one pixel
outside the map are clamped onto the border, farther ones read zero (Detectron's rule).
"""

from __future__ import annotations

from typing import Mapping

import tensorflow as tf

from maskrcnn.model import box_ops
from maskrcnn.model.sampling import bilinear_sample

ROI_LEVELS = (2, 3, 4, 5)  # P6 only feeds the RPN


def roi_levels(boxes: tf.Tensor, min_level: int = 2, max_level: int = 5) -> tf.Tensor:
    """FPN level of each box ``[..., 4]`` (image pixels): ``floor(4 + log2(sqrt(area) / 224))``, clamped."""
    sqrt_area = tf.sqrt(box_ops.box_area(tf.cast(boxes, tf.float32)))
    level = tf.floor(4.0 + tf.math.log(sqrt_area / 224.0 + 1e-6) / tf.math.log(2.0))
    return tf.cast(tf.clip_by_value(level, float(min_level), float(max_level)), tf.int32)


def bin_centers(start: tf.Tensor, end: tf.Tensor, num_bins: int, sampling_ratio: int) -> tf.Tensor:
    """``[..., num_bins * sampling_ratio]`` sample coordinates between ``start`` and ``end`` (each ``[...]``),
    converted from continuous coordinates to pixel-index coordinates (minus one half)."""
    n = num_bins * sampling_ratio
    steps = (tf.range(n, dtype=tf.float32) + 0.5) / n
    return start[..., None] + (end - start)[..., None] * steps - 0.5


def _clamp_near_border(coords: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Points within one pixel outside the map move onto its border; farther ones stay (read zero)."""
    size = tf.cast(size, tf.float32)[..., None]
    near = tf.logical_and(coords >= -1.0, coords <= size)
    return tf.where(near, tf.clip_by_value(coords, 0.0, size - 1.0), coords)


def multilevel_roi_align(
    features: Mapping[int, tf.Tensor], boxes: tf.Tensor, output_size: int, sampling_ratio: int = 2
) -> tf.Tensor:
    """Pool ``output_size x output_size`` features for every box.

    Args:
        features: ``{level: [B, H / 2**level, W / 2**level, C]}`` with at least levels 2..5.
        boxes: ``[B, R, 4]`` ``[y1, x1, y2, x2]`` in image pixels (any padding boxes are harmless).
    Returns:
        ``[B, R, output_size, output_size, C]`` in the features' dtype.
    """
    levels = [level for level in ROI_LEVELS if level in features]
    shapes = [features[level].shape for level in levels]
    heights = tf.constant([s[1] for s in shapes], tf.int32)
    widths = tf.constant([s[2] for s in shapes], tf.int32)
    sizes = [s[1] * s[2] for s in shapes]
    starts = tf.constant([sum(sizes[:i]) for i in range(len(sizes))], tf.int32)
    batch = tf.shape(boxes)[0]
    channels = shapes[0][-1]
    flat = tf.concat([tf.reshape(features[level], [batch, -1, channels]) for level in levels], axis=1)

    boxes = tf.cast(boxes, tf.float32)
    index = roi_levels(boxes, levels[0], levels[-1]) - levels[0]  # [B, R]
    scale = 1.0 / tf.cast(tf.bitwise.left_shift(1, index + levels[0]), tf.float32)
    box_heights, box_widths = tf.gather(heights, index), tf.gather(widths, index)
    y1, x1, y2, x2 = tf.unstack(boxes * scale[..., None], 4, axis=-1)
    ys = _clamp_near_border(bin_centers(y1, y2, output_size, sampling_ratio), box_heights)
    xs = _clamp_near_border(bin_centers(x1, x2, output_size, sampling_ratio), box_widths)
    samples = bilinear_sample(flat, tf.gather(starts, index), box_heights, box_widths, ys, xs)
    if sampling_ratio == 1:
        return samples
    num_boxes = tf.shape(boxes)[1]
    samples = tf.reshape(
        samples, [batch, num_boxes, output_size, sampling_ratio, output_size, sampling_ratio, channels]
    )
    return tf.reduce_mean(samples, axis=[3, 5])
