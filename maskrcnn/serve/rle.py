"""Mask encodings of the HTTP contract, vectorized over all detections of an image.

``row_major_counts``: the SageMaker notebook's uncompressed RLE. Run lengths over the mask scanned
row by row, alternating 0s and 1s and starting with a run of 0s (a leading 0 when the first pixel
is 1), summing to ``height * width``: the notebook's ``rle_to_binary_mask`` rebuilds it exactly.
``"rle": "coco"`` requests get pycocotools' compressed column-major RLE instead
(``maskrcnn.evaluate.detections.encode_masks_coco``).
"""

from __future__ import annotations

import numpy as np


def row_major_counts(masks: np.ndarray) -> list[list[int]]:
    """``[n, H, W]`` binary masks -> ``n`` lists of run lengths (row-major, 0-run first).

    One ``np.diff`` over all masks finds every value change; no per-pixel Python loop.
    """
    masks = np.asarray(masks)
    n = masks.shape[0]
    if n == 0:
        return []
    size = masks.shape[1] * masks.shape[2]
    flat = masks.reshape(n, size).astype(bool, copy=False)
    rows, cols = np.nonzero(flat[:, 1:] != flat[:, :-1])
    starts = np.searchsorted(rows, np.arange(n + 1))
    counts = []
    for i in range(n):
        # A run ends wherever the value changes; a mask starting with 1 gets an empty 0-run first.
        boundaries = np.concatenate([[0], cols[starts[i]:starts[i + 1]] + 1, [size]])
        runs = np.diff(boundaries).tolist()
        counts.append([0] + runs if flat[i, 0] else runs)
    return counts


def row_major_decode(counts: list[int], size: tuple[int, int]) -> np.ndarray:
    """Row-major run lengths (0-run first) -> uint8 ``[height, width]`` mask (``np.repeat``, no loop)."""
    height, width = size
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != height * width or (counts < 0).any():
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {height} x {width}")
    values = np.arange(len(counts), dtype=np.uint8) % 2
    return np.repeat(values, counts).reshape(height, width)
