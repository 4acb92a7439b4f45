import numpy as np
import pytest

from maskrcnn.model.anchors import grid_anchors, multilevel_anchors


def test_grid_anchors_hand_computed():
    anchors = grid_anchors(stride=4, size=32, ratios=(0.5, 1.0, 2.0), feature_height=2, feature_width=3)
    assert anchors.shape == (2 * 3 * 3, 4)
    r = np.sqrt(2.0)
    # Cell (0, 0) is centred at (2, 2): ratio 0.5 is 32/sqrt(2) high and 32*sqrt(2) wide.
    np.testing.assert_allclose(anchors[0], [2 - 8 * r, 2 - 16 * r, 2 + 8 * r, 2 + 16 * r], atol=1e-4)
    np.testing.assert_allclose(anchors[1], [-14, -14, 18, 18])
    np.testing.assert_allclose(anchors[2], [2 - 16 * r, 2 - 8 * r, 2 + 16 * r, 2 + 8 * r], atol=1e-4)
    # Row-major cells: index (row 1, column 2) * 3 ratios + ratio 1.0 → centre (6, 10).
    np.testing.assert_allclose(anchors[(1 * 3 + 2) * 3 + 1], [6 - 16, 10 - 16, 6 + 16, 10 + 16])


def test_anchor_area_is_size_squared_for_every_ratio():
    anchors = grid_anchors(stride=16, size=128, ratios=(0.5, 1.0, 2.0), feature_height=1, feature_width=1)
    heights, widths = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    np.testing.assert_allclose(heights * widths, 128**2, rtol=1e-5)
    np.testing.assert_allclose(heights / widths, [0.5, 1.0, 2.0], rtol=1e-5)


def test_multilevel_anchors_shapes_and_errors():
    anchors = multilevel_anchors(image_size=(128, 192), min_level=2, max_level=6, sizes=(32, 64, 128, 256, 512), ratios=(0.5, 1, 2))
    assert {l: a.shape[0] for l, a in anchors.items()} == {l: (128 >> l) * (192 >> l) * 3 for l in range(2, 7)}
    with pytest.raises(ValueError, match="stride 64"):
        multilevel_anchors(image_size=(96, 128), min_level=2, max_level=6, sizes=(1, 2, 3, 4, 5), ratios=(1,))
