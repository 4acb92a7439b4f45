import numpy as np
import tensorflow as tf

from maskrcnn.model.rpn import RPNHead, generate_proposals

from . import numpy_ref


def random_boxes(rng, n, size):
    yx = rng.uniform(-10, size, (n, 2))
    hw = rng.uniform(4, size / 3, (n, 2))
    return np.concatenate([yx, yx + hw], axis=1).astype(np.float32)


def test_non_max_suppression_padded_matches_numpy_nms_per_batch_item():
    rng = np.random.default_rng(0)
    boxes = np.stack([random_boxes(rng, 80, 60) for _ in range(3)])
    scores = rng.uniform(size=(3, 80)).astype(np.float32)
    keep, num = tf.image.non_max_suppression_padded(
        boxes, scores, 80, iou_threshold=0.5, pad_to_max_output_size=True
    )
    for b in range(3):
        assert keep[b, : num[b]].numpy().tolist() == numpy_ref.nms(boxes[b], scores[b], 0.5)


def expected_proposals(levels, image_size, pre, post, thresh):
    """Per level: top-k, clip, drop empty, NMS; merge; best `post` (NumPy)."""
    h, w = image_size
    kept_boxes, kept_scores = [], []
    for boxes, scores in levels:
        order = np.argsort(-scores, kind="stable")[:pre]
        b = boxes[order].copy()
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, h)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, w)
        s = scores[order]
        ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        b, s = b[ok], s[ok]
        keep = numpy_ref.nms(b, s, thresh)[:post]
        kept_boxes.append(b[keep])
        kept_scores.append(s[keep])
    boxes, scores = np.concatenate(kept_boxes), np.concatenate(kept_scores)
    order = np.argsort(-scores, kind="stable")[:post]
    return boxes[order], scores[order]


def test_generate_proposals_matches_numpy_per_level_topk_nms_merge():
    rng = np.random.default_rng(1)
    image_sizes = [(50.0, 60.0), (64.0, 40.0)]
    anchors = {2: random_boxes(rng, 120, 64), 3: random_boxes(rng, 30, 64)}
    anchors[2][0] = [70, 70, 90, 90]  # entirely outside both images: clipped to nothing, never proposed
    logits = {l: rng.normal(size=(2, len(a))).astype(np.float32) for l, a in anchors.items()}
    logits[2][:, 0] = 10.0
    deltas = {l: np.zeros((2, len(a), 4), np.float32) for l, a in anchors.items()}  # proposals = anchors
    boxes, scores = generate_proposals(
        {l: tf.constant(v) for l, v in logits.items()},
        {l: tf.constant(v) for l, v in deltas.items()},
        anchors,
        tf.constant(image_sizes),
        pre_nms_topk=50,
        post_nms_topk=25,
        nms_thresh=0.7,
    )
    assert boxes.shape == (2, 25, 4) and scores.shape == (2, 25)
    for b in range(2):
        want_boxes, want_scores = expected_proposals(
            [(anchors[l], logits[l][b]) for l in (2, 3)], image_sizes[b], 50, 25, 0.7
        )
        n = len(want_scores)
        np.testing.assert_allclose(scores[b, :n], want_scores, rtol=1e-6)
        np.testing.assert_allclose(boxes[b, :n], want_boxes, atol=1e-4)
        assert not np.isfinite(scores[b, n:]).any() and not boxes[b, n:].numpy().any()


def test_generate_proposals_pads_when_too_few_boxes():
    anchors = {2: np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)}
    boxes, scores = generate_proposals(
        {2: tf.constant([[3.0, 2.0, 1.0]])},
        {2: tf.zeros([1, 3, 4])},
        anchors,
        tf.constant([[40.0, 40.0]]),
        pre_nms_topk=10,
        post_nms_topk=5,
        nms_thresh=0.5,
    )
    np.testing.assert_allclose(scores[0, :2], [3.0, 1.0])  # the second box overlaps the first: IoU 0.68
    assert scores.shape == (1, 5) and not np.isfinite(scores[0, 2:]).any()
    np.testing.assert_allclose(boxes[0, :2], [[0, 0, 10, 10], [20, 20, 30, 30]])


def test_rpn_head_output_layout():
    head = RPNHead(8, 3)
    features = {2: tf.zeros([2, 8, 6, 4]), 3: tf.zeros([2, 4, 3, 4])}
    logits, deltas = head(features)
    assert logits[2].shape == (2, 8 * 6 * 3) and deltas[3].shape == (2, 4 * 3 * 3, 4)
    assert logits[2].dtype == tf.float32
