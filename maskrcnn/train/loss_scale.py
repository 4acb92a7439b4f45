"""Dynamic loss scaling for float16 training (a no-op scale of 1 otherwise).

float16 gradients underflow without scaling. The scale starts high, halves whenever a step's
(already all-reduced, hence identical on every process) gradients are not finite, in which case the
update is skipped, and doubles after ``growth_interval`` finite steps in a row.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf


class DynamicLossScale(tf.Module):
    def __init__(self, enabled: bool, *, initial: float = 2.0**15, growth_interval: int = 2000):
        super().__init__(name="loss_scale")
        self.enabled = bool(enabled)
        self._growth_interval = int(growth_interval)
        self.scale = tf.Variable(initial if enabled else 1.0, dtype=tf.float32, trainable=False, name="scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")

    @property
    def state(self) -> list[tf.Variable]:
        return [self.scale, self.good_steps]

    def scale_loss(self, loss: tf.Tensor) -> tf.Tensor:
        return loss * self.scale if self.enabled else loss

    def unscale(self, grads: Sequence[tf.Tensor | None]) -> tuple[list[tf.Tensor | None], tf.Tensor]:
        """Gradients divided by the scale, and whether all of them are finite (bool scalar)."""
        if not self.enabled:
            return list(grads), tf.constant(True)
        inv = 1.0 / self.scale
        out = [None if g is None else tf.cast(g, tf.float32) * inv for g in grads]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in out if g is not None])
        return out, finite

    def update(self, finite: tf.Tensor) -> None:
        """Adjust the scale after a step (call only when enabled)."""
        if not self.enabled:
            return
        grow = tf.logical_and(finite, self.good_steps + 1 >= self._growth_interval)
        new_scale = tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale), tf.maximum(self.scale * 0.5, 1.0))
        self.scale.assign(new_scale)
        self.good_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)), self.good_steps + 1, 0))
