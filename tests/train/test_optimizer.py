"""SGD momentum update, weight decay term and selection, clipping, dynamic loss scale, NaN detection."""

import numpy as np
import pytest
import tensorflow as tf

from maskrcnn.train.loop import NonFiniteLossError, check_finite
from maskrcnn.train.loss_scale import DynamicLossScale
from maskrcnn.train.optimizer import SGDMomentum, is_decayed, weight_decay_loss


def _reference_sgd(ws, grads_per_step, lrs, momentum):
    """Plain numpy Detectron/PyTorch SGD: v = m v + g; w -= lr v."""
    ws = [w.copy() for w in ws]
    vs = [np.zeros_like(w) for w in ws]
    for grads, lr in zip(grads_per_step, lrs):
        for i, g in enumerate(grads):
            vs[i] = momentum * vs[i] + g
            ws[i] = ws[i] - lr * vs[i]
    return ws, vs


def test_momentum_update_matches_numpy_reference():
    rng = np.random.default_rng(0)
    init = [rng.normal(size=(3, 3, 2, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
    variables = [tf.Variable(w) for w in init]
    opt = SGDMomentum(variables, momentum=0.9)
    grads = [[rng.normal(size=w.shape).astype(np.float32) for w in init] for _ in range(4)]
    lrs = [0.1, 0.2, 0.05, 0.1]
    for g, lr in zip(grads, lrs):
        opt.apply([tf.constant(x) for x in g], variables, tf.constant(lr))
    want_w, want_v = _reference_sgd(init, grads, lrs, 0.9)
    for v, w in zip(variables, want_w):
        np.testing.assert_allclose(v.numpy(), w, rtol=1e-5, atol=1e-6)
    for s, ref in zip(opt.slots, want_v):
        np.testing.assert_allclose(s.numpy(), ref, rtol=1e-5, atol=1e-6)
    assert int(opt.iterations.numpy()) == 4


def test_weight_decay_only_on_kernels_and_none_gradients_skipped():
    dense = tf.keras.layers.Dense(3)
    dense.build((None, 2))
    assert [is_decayed(v) for v in dense.trainable_variables] == [True, False]  # kernel, bias
    kernel = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    bias = tf.Variable(np.ones(3, np.float32))
    with tf.GradientTape() as tape:
        loss = weight_decay_loss([kernel, bias], 0.01)
    g_kernel, g_bias = tape.gradient(loss, [kernel, bias])
    assert float(loss) == pytest.approx(0.01 * 0.5 * sum(x * x for x in range(6)))
    np.testing.assert_allclose(g_kernel.numpy(), 0.01 * kernel.numpy(), rtol=1e-6)
    assert g_bias is None
    variables = [tf.Variable(np.ones((2, 2), np.float32)), tf.Variable(np.ones(2, np.float32))]
    opt = SGDMomentum(variables, momentum=0.9)
    opt.apply([tf.fill((2, 2), 0.5), None], variables, tf.constant(1.0))
    np.testing.assert_allclose(variables[0].numpy(), 0.5)
    np.testing.assert_allclose(variables[1].numpy(), 1.0)  # no gradient: untouched
    np.testing.assert_allclose(opt.slots[1].numpy(), 0.0)


def test_global_norm_clipping():
    variables = [tf.Variable([0.0, 0.0])]
    opt = SGDMomentum(variables, momentum=0.0, clip_norm=1.0)
    norm = opt.apply([tf.constant([3.0, 4.0])], variables, tf.constant(1.0))
    assert float(norm) == pytest.approx(5.0)
    np.testing.assert_allclose(variables[0].numpy(), [-0.6, -0.8], rtol=1e-6)


def test_dynamic_loss_scale_halves_on_overflow_and_grows_after_good_steps():
    ls = DynamicLossScale(True, initial=8.0, growth_interval=2)
    grads, finite = ls.unscale([tf.constant([8.0, 16.0]), None])
    np.testing.assert_allclose(grads[0].numpy(), [1.0, 2.0])
    assert grads[1] is None and bool(finite)
    _, finite = ls.unscale([tf.constant([np.inf, 1.0])])
    assert not bool(finite)
    ls.update(finite)
    assert float(ls.scale) == 4.0 and int(ls.good_steps) == 0
    ls.update(tf.constant(True))
    assert float(ls.scale) == 4.0 and int(ls.good_steps) == 1
    ls.update(tf.constant(True))
    assert float(ls.scale) == 8.0 and int(ls.good_steps) == 0
    off = DynamicLossScale(False)
    assert float(off.scale_loss(tf.constant(3.0))) == 3.0


def test_non_finite_loss_names_the_step_and_term():
    check_finite(5, {"total_loss": 1.0, "loss_mask": 0.3})
    with pytest.raises(NonFiniteLossError, match=r"not finite at step 17 \(loss_mask=nan, total_loss=inf\)"):
        check_finite(17, {"total_loss": float("inf"), "loss_mask": float("nan"), "loss_classifier": 0.1})
