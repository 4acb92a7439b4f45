"""Bilinear sampling of feature grids by gathers: the core of ROIAlign, mask-target crops and mask pasting.

``tf.image.crop_and_resize`` does the same arithmetic but has no XLA kernel and can only read one
feature map per call; gathering from a flattened pyramid keeps the graph XLA-compilable and reads
each box from its own level only.
"""

from __future__ import annotations

import tensorflow as tf


def bilinear_sample(
    flat: tf.Tensor, offsets: tf.Tensor, heights: tf.Tensor, widths: tf.Tensor, ys: tf.Tensor, xs: tf.Tensor
) -> tf.Tensor:
    """Sample grids of points from row-major feature maps stored back to back.

    Args:
        flat: ``[B, T, C]`` feature maps flattened row-major and concatenated along ``T``.
        offsets: int32 ``[B, R]`` where box ``r``'s map starts in ``T``.
        heights, widths: int32 ``[B, R]`` size of box ``r``'s map.
        ys: float32 ``[B, R, P]`` row coordinates, in pixel-index units (pixel ``k``'s centre is ``k``).
        xs: float32 ``[B, R, Q]`` column coordinates.
    Returns:
        ``[B, R, P, Q, C]`` in ``flat``'s dtype. Neighbours outside the map count as zero (so a point
        half a pixel outside the border gets half the border value).
    """
    batch = tf.shape(flat)[0]
    num_boxes = tf.shape(offsets)[1]
    p, q = tf.shape(ys)[2], tf.shape(xs)[2]
    channels = flat.shape[-1]
    y0 = tf.floor(ys)
    x0 = tf.floor(xs)
    fy = ys - y0
    fx = xs - x0
    y0 = tf.cast(y0, tf.int32)
    x0 = tf.cast(x0, tf.int32)

    def axis_terms(start, frac, size):
        # Two neighbours per coordinate: (index clamped into the map, weight zeroed when outside).
        size = size[..., None]
        terms = []
        for idx, weight in ((start, 1.0 - frac), (start + 1, frac)):
            inside = tf.logical_and(idx >= 0, idx < size)
            terms.append((tf.clip_by_value(idx, 0, size - 1), tf.where(inside, weight, 0.0)))
        return terms

    out = None
    for yi, wy in axis_terms(y0, fy, heights):
        for xi, wx in axis_terms(x0, fx, widths):
            index = offsets[:, :, None, None] + yi[:, :, :, None] * widths[:, :, None, None] + xi[:, :, None, :]
            values = tf.gather(flat, tf.reshape(index, [batch, -1]), batch_dims=1)
            values = tf.reshape(values, [batch, num_boxes, p, q, channels])
            weight = tf.cast(wy[:, :, :, None] * wx[:, :, None, :], flat.dtype)[..., None]
            term = values * weight
            out = term if out is None else out + term
    return out
