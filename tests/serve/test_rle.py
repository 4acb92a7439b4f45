"""Row-major RLE against the SageMaker notebook's own decoder."""

from __future__ import annotations

import numpy as np
import pytest

from maskrcnn.serve.rle import row_major_counts, row_major_decode
from notebook_client import rle_to_binary_mask


def test_random_masks_round_trip_through_the_notebook_decoder():
    rng = np.random.default_rng(0)
    masks = (rng.random((6, 7, 11)) > 0.6).astype(np.uint8)
    masks[0] = 0
    masks[1] = 1
    masks[2, 0, 0], masks[2, -1, -1] = 1, 1
    masks[3, 0, :], masks[3, 1, 0] = 1, 0     # run spanning a whole row: row-major, not column-major
    counts = row_major_counts(masks)
    for mask, c in zip(masks, counts):
        assert sum(c) == mask.size
        np.testing.assert_array_equal(rle_to_binary_mask(c, mask.shape), mask)
        np.testing.assert_array_equal(row_major_decode(c, mask.shape), mask)
    assert counts[0] == [77]
    assert counts[1] == [0, 77]
    assert counts[3][:2] == [0, 11]          # the first row is one run of 1s


def test_leading_zero_run_only_when_first_pixel_is_set():
    m = np.zeros((1, 2, 3), np.uint8)
    m[0, 0, 1] = 1
    assert row_major_counts(m) == [[1, 1, 4]]
    m[0, 0, 0] = 1
    assert row_major_counts(m) == [[0, 2, 4]]


def test_no_masks():
    assert row_major_counts(np.zeros((0, 4, 5), np.uint8)) == []


def test_decode_rejects_wrong_total():
    with pytest.raises(ValueError, match="expected 2 x 3"):
        row_major_decode([1, 2], (2, 3))
