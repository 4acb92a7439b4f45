import numpy as np
import tensorflow as tf

from maskrcnn.model import box_ops, targets

from . import numpy_ref


def test_sample_balanced_counts_and_order():
    positive = np.zeros((3, 200), bool)
    negative = np.zeros((3, 200), bool)
    positive[0, :10], negative[0, 50:150] = True, True     # plenty of both: 4 fg + 12 bg
    positive[1, 5:7], negative[1, 100:] = True, True       # few fg: 2 fg + 14 bg
    positive[2, 0], negative[2, 1:4] = True, True          # few candidates: 4 valid slots
    s = targets.sample_balanced(tf.constant(positive), tf.constant(negative), 16, 0.25)
    idx, pos, valid = s.indices.numpy(), s.positive.numpy(), s.valid.numpy()
    assert idx.shape == (3, 16)
    assert pos.sum(1).tolist() == [4, 2, 1] and valid.sum(1).tolist() == [16, 16, 4]
    for b in range(3):
        chosen = idx[b][valid[b]]
        assert len(set(chosen.tolist())) == len(chosen)                     # no duplicates
        assert positive[b, idx[b][pos[b]]].all()
        assert negative[b, idx[b][valid[b] & ~pos[b]]].all()
        n_pos = pos[b].sum()
        assert pos[b, :n_pos].all() and valid[b, : valid[b].sum()].all()    # positives first, then negatives
    assert set(idx[2][valid[2]].tolist()) == {0, 1, 2, 3}


def test_sample_balanced_is_random():
    positive = tf.constant(np.arange(1000) < 500)
    draws = {tuple(targets.sample_balanced(positive[None], ~positive[None], 8, 0.5).indices.numpy()[0, :4]) for _ in range(5)}
    assert len(draws) > 1


def test_rpn_targets_hand_made():
    anchors = np.array(
        [
            [10, 10, 30, 30],    # 0: equals gt 0 → positive
            [10, 14, 30, 34],    # 1: IoU 16*20/(2*400-320)=0.667 with gt 0 → ignored (0.3..0.7)
            [50, 50, 70, 70],    # 2: far from everything → negative
            [58, 60, 98, 100],   # 3: best anchor of gt 1 (IoU 0.613 < 0.7) → positive (low-quality match)
            [-10, -10, 10, 10],  # 4: crosses the image border → ignored
            [10, 10, 30, 31],    # 5: IoU 0.952 with gt 0 → positive
            [60, 10, 80, 20],    # 6: negative
        ],
        np.float32,
    )
    gt = np.zeros((2, 3, 4), np.float32)
    gt[0, 0] = [10, 10, 30, 30]
    gt[0, 1] = [60, 60, 100, 120]
    gt_valid = np.array([[True, True, False], [False, False, False]])  # image 1 has no gt boxes
    np.testing.assert_allclose(numpy_ref.iou(anchors[[1, 3]], gt[0, :2]).max(1), [320 / 480, 1520 / 2480], rtol=1e-5)
    t = targets.rpn_targets(
        anchors,
        tf.constant(gt),
        tf.constant(gt_valid),
        tf.constant([[100.0, 120.0], [100.0, 120.0]]),
        positive_thresh=0.7,
        negative_thresh=0.3,
        num_samples=16,
        positive_fraction=0.5,
    )
    idx, pos, valid = t.indices.numpy(), t.positive.numpy(), t.valid.numpy()
    assert sorted(idx[0][pos[0]].tolist()) == [0, 3, 5]
    assert sorted(idx[0][valid[0] & ~pos[0]].tolist()) == [2, 6]
    assert not pos[1].any() and sorted(idx[1][valid[1]].tolist()) == [0, 1, 2, 3, 5, 6]  # no gt: all inside anchors negative
    matched_gt = {0: 0, 3: 1, 5: 0}
    for slot in np.flatnonzero(pos[0]):
        a = idx[0, slot]
        want = box_ops.encode_boxes(tf.constant(gt[0, matched_gt[a]]), tf.constant(anchors[a])).numpy()
        np.testing.assert_allclose(t.box_targets[0, slot], want, atol=1e-5)
    assert not t.box_targets.numpy()[~pos].any()


def test_roi_targets_append_gt_and_label_by_iou():
    proposals = np.array([[[10, 10, 30, 30], [10, 12, 30, 32], [60, 60, 80, 80], [0, 0, 0, 0]]], np.float32)
    proposal_valid = np.array([[True, True, True, False]])
    gt = np.array([[[10, 10, 30, 31], [0, 0, 0, 0]]], np.float32)
    classes = np.array([[3, 0]], np.int32)
    t = targets.roi_targets(
        tf.constant(proposals),
        tf.constant(proposal_valid),
        tf.constant(gt),
        tf.constant(classes),
        num_samples=8,
        positive_fraction=0.5,
        fg_thresh=0.5,
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
    )
    pos, valid = t.positive.numpy()[0], t.valid.numpy()[0]
    rois = t.rois.numpy()[0]
    # Candidates: 3 valid proposals + 1 valid gt; fg = proposals 0, 1 and the gt itself; bg = proposal 2.
    assert pos.sum() == 3 and valid.sum() == 4
    assert {tuple(r) for r in rois[pos]} == {(10, 10, 30, 30), (10, 12, 30, 32), (10, 10, 30, 31)}
    assert rois[valid & ~pos].tolist() == [[60, 60, 80, 80]]
    assert t.classes.numpy()[0][pos].tolist() == [3, 3, 3] and not t.classes.numpy()[0][~pos].any()
    want = box_ops.encode_boxes(tf.constant(gt[0, 0]), tf.constant(rois[pos]), (10.0, 10.0, 5.0, 5.0)).numpy()
    np.testing.assert_allclose(t.box_targets.numpy()[0][pos], want, atol=1e-5)


def test_roi_targets_image_without_gt_is_all_background():
    proposals = tf.constant([[[0, 0, 10, 10], [5, 5, 20, 20]]], tf.float32)
    t = targets.roi_targets(
        proposals,
        tf.constant([[True, True]]),
        tf.zeros([1, 2, 4]),
        tf.zeros([1, 2], tf.int32),
        num_samples=4,
        positive_fraction=0.25,
        fg_thresh=0.5,
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
    )
    assert not t.positive.numpy().any() and t.valid.numpy().sum() == 2 and not t.classes.numpy().any()


def test_mask_targets_match_numpy_crop_of_box_relative_gt_masks():
    rng = np.random.default_rng(0)
    size = 16
    gt_boxes = np.array([[[10, 20, 50, 80], [30, 30, 60, 45]]], np.float32)
    gt_masks = (rng.uniform(size=(1, 2, size, size)) > 0.5).astype(np.float32)
    rois = np.array([[[12, 18, 45, 70], [30, 30, 60, 45], [25, 35, 70, 50]]], np.float32)
    matched = np.array([[0, 1, 1]], np.int32)
    got = targets.mask_targets(tf.constant(gt_masks), tf.constant(gt_boxes), tf.constant(rois), tf.constant(matched), 8).numpy()
    assert got.shape == (1, 3, 8, 8)
    for r in range(3):
        g = matched[0, r]
        want = numpy_ref.crop_mask(gt_masks[0, g], gt_boxes[0, g], rois[0, r], 8)
        np.testing.assert_array_equal(got[0, r], want, err_msg=f"roi {r}")
    assert not got[0, 2, -1].any()  # the bottom rows of ROI 2 lie below its gt box
