import numpy as np
import tensorflow as tf

from maskrcnn.model.postprocess import detect_boxes, paste_masks

from . import numpy_ref


def test_paste_masks_matches_numpy_reference():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(3, 6, 6)).astype(np.float32)
    boxes = np.array([[2.0, 3.5, 12.0, 9.0], [-4.0, 10.0, 6.0, 30.0], [0.0, 0.0, 15.0, 25.0]], np.float32)
    got = paste_masks(tf.constant(masks), tf.constant(boxes), 15, 25).numpy()
    assert got.shape == (3, 15, 25)
    for i in range(3):
        np.testing.assert_allclose(got[i], numpy_ref.paste_mask(masks[i], boxes[i], 15, 25), atol=1e-5)


def test_paste_full_mask_fills_exactly_its_box_at_threshold_half():
    got = paste_masks(tf.ones([1, 28, 28]), tf.constant([[4.0, 6.0, 10.0, 20.0]]), tf.constant(16), tf.constant(24))
    binary = got.numpy()[0] >= 0.5
    want = np.zeros((16, 24), bool)
    want[4:10, 6:20] = True
    np.testing.assert_array_equal(binary, want)


def test_paste_masks_inside_tf_function_with_dynamic_size():
    fn = tf.function(paste_masks, input_signature=[
        tf.TensorSpec([None, 28, 28]), tf.TensorSpec([None, 4]), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)
    ])
    assert fn(tf.ones([2, 28, 28]), tf.zeros([2, 4]), tf.constant(7), tf.constant(9)).shape == (2, 7, 9)


def test_detect_boxes_per_class_nms_threshold_and_padding():
    rois = tf.constant([[[10, 10, 50, 50], [12, 12, 52, 52], [60, 60, 90, 140]]], tf.float32)
    probs = np.array([[[0.1, 0.8, 0.1], [0.1, 0.6, 0.3], [0.96, 0.02, 0.02]]], np.float32)
    boxes, scores, classes, num = detect_boxes(
        rois,
        tf.math.log(probs),
        tf.zeros([1, 3, 3, 4]),
        tf.constant([[100.0, 100.0]]),
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        score_thresh=0.05,
        nms_thresh=0.5,
        max_detections=5,
    )
    assert num.numpy().tolist() == [2]
    np.testing.assert_allclose(scores[0].numpy(), [0.8, 0.3, 0, 0, 0], atol=1e-5)
    assert classes[0].numpy().tolist() == [1, 2, 0, 0, 0]
    np.testing.assert_allclose(boxes[0, :2], [[10, 10, 50, 50], [12, 12, 52, 52]], atol=1e-4)


def test_detect_boxes_decodes_class_specific_deltas_and_clips():
    rois = tf.constant([[[10, 10, 50, 50]]], tf.float32)
    deltas = np.zeros((1, 1, 2, 4), np.float32)
    deltas[0, 0, 1] = [10.0, 0.0, 5 * np.log(2.0), 0.0]  # move down by one height, double the height
    boxes, _, classes, _ = detect_boxes(
        rois,
        tf.math.log(tf.constant([[[0.1, 0.9]]])),
        tf.constant(deltas),
        tf.constant([[80.0, 100.0]]),
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        score_thresh=0.05,
        nms_thresh=0.5,
        max_detections=2,
    )
    assert classes.numpy()[0].tolist() == [1, 0]
    np.testing.assert_allclose(boxes[0, 0], [30, 10, 80, 50], atol=1e-3)  # [30, 10, 110, 50] clipped at 80


def test_detect_boxes_matches_numpy_per_class_nms():
    rng = np.random.default_rng(3)
    num_rois, num_classes, max_det = 40, 3, 12
    yx = rng.uniform(0, 60, (num_rois, 2))
    rois = np.concatenate([yx, yx + rng.uniform(5, 40, (num_rois, 2))], axis=1).astype(np.float32)
    logits = rng.normal(scale=2.0, size=(num_rois, num_classes + 1)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    boxes, scores, classes, num = detect_boxes(
        tf.constant(rois[None]),
        tf.constant(logits[None]),
        tf.zeros([1, num_rois, num_classes + 1, 4]),
        tf.constant([[200.0, 200.0]]),
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        score_thresh=0.05,
        nms_thresh=0.5,
        max_detections=max_det,
    )
    want = []
    for c in range(1, num_classes + 1):
        candidates = np.flatnonzero(probs[:, c] > 0.05)
        for k in numpy_ref.nms(rois[candidates], probs[candidates, c], 0.5):
            want.append((probs[candidates[k], c], c, candidates[k]))
    want = sorted(want, reverse=True)[:max_det]
    assert int(num[0]) == len(want)
    np.testing.assert_allclose(scores[0, : len(want)], [w[0] for w in want], rtol=1e-5)
    assert classes[0, : len(want)].numpy().tolist() == [w[1] for w in want]
    np.testing.assert_allclose(boxes[0, : len(want)], rois[[w[2] for w in want]], atol=1e-4)
