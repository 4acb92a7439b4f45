"""Anchors: one size per FPN level, several aspect ratios, one anchor set per feature-map cell.

Anchors are computed once in NumPy for the fixed padded image size (every batch has the same
feature-map shapes), so the graph sees them as constants.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def cell_anchors(size: float, ratios: Sequence[float]) -> np.ndarray:
    """``[A, 4]`` anchors centred on (0, 0), ``[y1, x1, y2, x2]``; ratio = height / width, area = size**2."""
    out = []
    for ratio in ratios:
        h = size * np.sqrt(ratio)
        w = size / np.sqrt(ratio)
        out.append([-h / 2, -w / 2, h / 2, w / 2])
    return np.asarray(out, np.float32)


def grid_anchors(*, stride: int, size: float, ratios: Sequence[float], feature_height: int, feature_width: int) -> np.ndarray:
    """Anchors of one level, ``[H * W * A, 4]`` float32 in image pixels, ordered (row, column, ratio).

    The anchors of cell ``(i, j)`` are centred on that cell's centre ``((i + 0.5) * stride, (j + 0.5) * stride)``,
    which is where the cell's receptive field is centred in the continuous-coordinate convention.
    """
    cy = (np.arange(feature_height, dtype=np.float32) + 0.5) * stride
    cx = (np.arange(feature_width, dtype=np.float32) + 0.5) * stride
    cy, cx = np.meshgrid(cy, cx, indexing="ij")
    centers = np.stack([cy, cx, cy, cx], axis=-1)[:, :, None, :]  # [H, W, 1, 4]
    anchors = centers + cell_anchors(size, ratios)[None, None]    # [H, W, A, 4]
    return anchors.reshape(-1, 4).astype(np.float32)


def multilevel_anchors(
    *, image_size: tuple[int, int], min_level: int, max_level: int, sizes: Sequence[float], ratios: Sequence[float]
) -> dict[int, np.ndarray]:
    """``{level: [H_l * W_l * A, 4]}`` for a padded image of ``image_size = (height, width)``.

    Level ``l`` has stride ``2**l``; ``image_size`` must be divisible by ``2**max_level``.
    """
    height, width = image_size
    out = {}
    for level, size in zip(range(min_level, max_level + 1), sizes):
        stride = 2**level
        if height % stride or width % stride:
            raise ValueError(f"image size {image_size} is not divisible by the stride {stride} of level {level}")
        out[level] = grid_anchors(
            stride=stride, size=size, ratios=ratios, feature_height=height // stride, feature_width=width // stride
        )
    return out
