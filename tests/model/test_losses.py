import numpy as np
import tensorflow as tf

from maskrcnn.model import losses


def bce(label, logit):
    return max(logit, 0) - logit * label + np.log1p(np.exp(-abs(logit)))


def test_smooth_l1_both_branches():
    got = losses.smooth_l1(tf.constant([0.05, -0.5, 2.0]), beta=0.1).numpy()
    np.testing.assert_allclose(got, [0.5 * 0.05**2 / 0.1, 0.5 - 0.05, 2.0 - 0.05], rtol=1e-6)


def test_rpn_losses_normalization():
    logits = np.array([[2.0, -1.0, 0.5, 3.0]], np.float32)
    positive = np.array([[True, False, False, False]])
    valid = np.array([[True, True, True, False]])  # slot 3 is padding: no loss
    deltas = np.zeros((1, 4, 4), np.float32)
    targets = np.zeros((1, 4, 4), np.float32)
    targets[0, 0] = [1.0, 0.0, 0.0, 0.05]
    objectness, box = losses.rpn_losses(logits, deltas, positive, valid, targets)
    want_objectness = (bce(1, 2.0) + bce(0, -1.0) + bce(0, 0.5)) / 3
    want_box = ((1.0 - 0.5 / 9) + 0.5 * 0.05**2 * 9) / 4  # sum over positives / all anchor slots
    np.testing.assert_allclose([float(objectness), float(box)], [want_objectness, want_box], rtol=1e-5)


def test_box_head_losses_use_the_gt_class_deltas_of_foreground_rois():
    logits = np.log(np.array([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]], np.float32))
    classes = np.array([[0, 2, 1]], np.int32)
    valid = np.array([[True, True, False]])
    deltas = np.zeros((1, 3, 3, 4), np.float32)
    deltas[0, 1, 2] = [0.5, 0.0, 0.0, 0.0]   # the gt class's deltas of the fg ROI
    deltas[0, 1, 1] = [9.0, 9.0, 9.0, 9.0]   # another class: ignored
    targets = np.zeros((1, 3, 4), np.float32)
    classifier, box = losses.box_head_losses(logits, deltas, classes, valid, targets)
    np.testing.assert_allclose(float(classifier), -(np.log(0.7) + np.log(0.8)) / 2, rtol=1e-5)
    np.testing.assert_allclose(float(box), 0.5 * 0.5**2 / 2, rtol=1e-5)  # / number of sampled ROIs


def test_mask_loss_uses_the_gt_class_channel_of_positive_rois():
    logits = np.zeros((1, 2, 3, 2, 2), np.float32)
    logits[0, 0, 1] = 2.0     # class 2 → channel 1
    logits[0, 0, 0] = -50.0   # other class: ignored
    logits[0, 1] = 50.0       # a negative ROI: ignored
    targets = np.ones((1, 2, 2, 2), np.float32)
    got = losses.mask_loss(logits, np.array([[2, 0]]), np.array([[True, False]]), targets)
    np.testing.assert_allclose(float(got), bce(1, 2.0), rtol=1e-5)
    none = losses.mask_loss(logits, np.array([[0, 0]]), np.array([[False, False]]), targets)
    assert float(none) == 0.0
