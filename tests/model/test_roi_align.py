import numpy as np
import tensorflow as tf

from maskrcnn.model.roi_align import multilevel_roi_align, roi_levels

from . import numpy_ref


def test_roi_levels_follow_the_fpn_formula():
    sides = np.array([10, 111, 112, 223, 224, 447, 448, 900, 2000], np.float32)
    boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides], axis=1)
    got = roi_levels(tf.constant(boxes)).numpy()
    assert got.tolist() == [numpy_ref.fpn_level(b) for b in boxes]
    assert got.tolist() == [2, 2, 3, 3, 4, 4, 5, 5, 5]


def test_multilevel_roi_align_matches_numpy_bilinear_reference():
    rng = np.random.default_rng(0)
    image = 256
    features = {l: rng.normal(size=(2, image >> l, image >> l, 3)).astype(np.float32) for l in range(2, 7)}
    boxes = np.array(
        [
            [[3.3, 5.1, 40.7, 30.2], [0.0, 0.0, 256.0, 256.0], [100.5, 20.25, 230.0, 190.0], [250.0, 250.0, 256.0, 256.0]],
            [[10.0, 12.0, 11.5, 14.0], [-3.0, 60.0, 120.0, 130.0], [30.0, 30.0, 150.0, 250.0], [60.0, 1.0, 90.0, 130.0]],
        ],
        np.float32,
    )
    got = multilevel_roi_align({l: tf.constant(f) for l, f in features.items()}, tf.constant(boxes), 7, 2).numpy()
    assert got.shape == (2, 4, 7, 7, 3)
    levels_used = set()
    for b in range(2):
        for r in range(4):
            level = numpy_ref.fpn_level(boxes[b, r])
            levels_used.add(level)
            want = numpy_ref.roi_align(features[level][b], boxes[b, r], 2**level, 7, 2)
            np.testing.assert_allclose(got[b, r], want, atol=1e-4, err_msg=f"image {b} box {r} level {level}")
    assert levels_used >= {2, 3, 4}


def test_roi_align_is_exact_on_a_linear_ramp():
    # Bilinear sampling reproduces a linear function: bin centres of a box on a ramp are known in closed form.
    ramp = np.arange(64, dtype=np.float32)[None, :, None, None] * np.ones((1, 64, 64, 1), np.float32)
    features = {2: tf.constant(ramp)}
    box = tf.constant([[[40.0, 40.0, 72.0, 72.0]]])  # level 2 (side 32), feature rows 10..18
    got = multilevel_roi_align(features, box, 4, 2).numpy()[0, 0, :, 0, 0]
    np.testing.assert_allclose(got, 10 + (np.arange(4) + 0.5) * 2 - 0.5, atol=1e-5)


def test_roi_align_gradient_reaches_only_the_assigned_level():
    features = {l: tf.Variable(tf.ones([1, 64 >> l, 64 >> l, 2])) for l in range(2, 6)}
    with tf.GradientTape() as tape:
        out = multilevel_roi_align(features, tf.constant([[[4.0, 4.0, 20.0, 20.0]]]), 7, 2)
        total = tf.reduce_sum(out)
    grads = tape.gradient(total, [features[l] for l in range(2, 6)])
    assert float(tf.reduce_sum(grads[0])) > 0
    assert all(g is None or float(tf.reduce_sum(tf.abs(g))) == 0 for g in grads[1:])
