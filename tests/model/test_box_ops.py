import numpy as np
import tensorflow as tf

from maskrcnn.model import box_ops
from . import numpy_ref


def random_boxes(rng, n, size=100.0):
    yx = rng.uniform(0, size, (n, 2))
    hw = rng.uniform(1, size / 2, (n, 2))
    return np.concatenate([yx, yx + hw], axis=1).astype(np.float32)


def test_pairwise_iou_matches_numpy_including_disjoint_and_degenerate_boxes():
    rng = np.random.default_rng(0)
    a = random_boxes(rng, 7)
    b = np.concatenate([random_boxes(rng, 5), [[0, 0, 0, 0], [500, 500, 510, 520]]]).astype(np.float32)
    got = box_ops.pairwise_iou(tf.constant(a), tf.constant(b)).numpy()
    np.testing.assert_allclose(got, numpy_ref.iou(a, b), atol=1e-6)
    assert got[:, -2:].max() == 0.0  # degenerate and far-away boxes


def test_pairwise_iou_hand_computed_and_batched():
    a = np.array([[[0, 0, 10, 10]], [[0, 0, 2, 2]]], np.float32)
    b = np.array([[[5, 5, 15, 15]], [[0, 0, 2, 2]]], np.float32)
    got = box_ops.pairwise_iou(tf.constant(a), tf.constant(b)).numpy()
    np.testing.assert_allclose(got[:, 0, 0], [25 / 175, 1.0], rtol=1e-6)


def test_encode_decode_round_trip_with_weights():
    rng = np.random.default_rng(1)
    anchors = random_boxes(rng, 50)
    boxes = random_boxes(rng, 50)
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        deltas = box_ops.encode_boxes(tf.constant(boxes), tf.constant(anchors), weights)
        back = box_ops.decode_boxes(deltas, tf.constant(anchors), weights).numpy()
        np.testing.assert_allclose(back, boxes, atol=1e-3)


def test_encode_hand_computed():
    anchor = np.array([[0, 0, 10, 20]], np.float32)   # centre (5, 10), h 10, w 20
    box = np.array([[2, 4, 22, 24]], np.float32)       # centre (12, 14), h 20, w 20
    got = box_ops.encode_boxes(tf.constant(box), tf.constant(anchor), (10.0, 10.0, 5.0, 5.0)).numpy()[0]
    np.testing.assert_allclose(got, [10 * 7 / 10, 10 * 4 / 20, 5 * np.log(2.0), 0.0], atol=1e-6)


def test_decode_clamps_huge_size_deltas():
    anchor = tf.constant([[0.0, 0.0, 10.0, 10.0]])
    box = box_ops.decode_boxes(tf.constant([[0.0, 0.0, 100.0, 100.0]]), anchor).numpy()[0]
    assert np.all(np.isfinite(box))
    np.testing.assert_allclose(box[2] - box[0], 10 * 1000 / 16, rtol=1e-4)


def test_clip_boxes_per_image_sizes():
    boxes = tf.constant([[[-5.0, -5.0, 50.0, 300.0]], [[-5.0, 10.0, 50.0, 300.0]]])
    sizes = tf.constant([[40.0, 200.0], [100.0, 100.0]])
    got = box_ops.clip_boxes(boxes, sizes[:, 0:1], sizes[:, 1:2]).numpy()
    np.testing.assert_array_equal(got[:, 0], [[0, 0, 40, 200], [0, 10, 50, 100]])
