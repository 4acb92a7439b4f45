"""SGD with momentum and optional global-norm clipping; L2 weight decay on kernels as a loss term.

Hand-rolled on ``tf.Variable`` slots rather than a Keras 3 optimizer so that (a) the momentum
slots exist as soon as the model is built, which lets a checkpoint restore them immediately and
Horovod broadcast them from rank 0 before the first step, and (b) the update needs no Keras
integration from Horovod (which does not support Keras 3).

The update is the Detectron/PyTorch form: ``v <- momentum * v + g``, ``w <- w - lr * v``. Weight
decay enters as the loss ``weight_decay / 2 * sum(w^2)`` (gradient ``weight_decay * w``) before the
gradients are all-reduced, as in tensorpack: adding it after the all-reduce made the ranks' weights
drift apart by float rounding (the fused update rounds differently from process to process).
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def is_decayed(variable: tf.Variable) -> bool:
    """Conv and dense kernels (rank >= 2) are decayed; biases and norm scales/offsets (rank 1) are not.

    Frozen variables (frozen stages, frozen batch norm) are not trainable and never reach the
    optimizer. Deciding by rank rather than by name keeps the rule right whatever naming the model
    uses for its weights (Keras ``kernel`` or tensorpack ``W``).
    """
    return len(variable.shape) >= 2


def weight_decay_loss(variables: Sequence[tf.Variable], weight_decay: float) -> tf.Tensor:
    """``weight_decay / 2 * sum(w^2)`` over the decayed variables (float32 scalar)."""
    decayed = [tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in variables if is_decayed(v)]
    if weight_decay <= 0 or not decayed:
        return tf.constant(0.0)
    return weight_decay * tf.add_n(decayed)


class SGDMomentum(tf.Module):
    """Momentum SGD over a fixed list of variables; its slots are checkpointed and broadcast."""

    def __init__(
        self,
        variables: Sequence[tf.Variable],
        *,
        momentum: float,
        clip_norm: float = 0.0,
        name: str = "sgd_momentum",
    ):
        super().__init__(name=name)
        self._momentum = float(momentum)
        self._clip_norm = float(clip_norm)
        # One slot per variable, same order as ``variables`` (the model's trainable_variables order).
        self.slots = [
            tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False, name=f"momentum_{i}")
            for i, v in enumerate(variables)
        ]
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")

    @property
    def state(self) -> list[tf.Variable]:
        """Every variable of the optimizer (for broadcast and checkpointing)."""
        return [*self.slots, self.iterations]

    def apply(self, grads: Sequence[tf.Tensor | None], variables: Sequence[tf.Variable], lr: tf.Tensor) -> tf.Tensor:
        """One update; ``grads[i]`` is None for a variable the loss does not reach. Returns the global grad norm."""
        if len(grads) != len(self.slots):
            raise ValueError(f"{len(grads)} gradients for an optimizer over {len(self.slots)} variables")
        present = [g for g in grads if g is not None]
        norm = tf.linalg.global_norm(present)
        if self._clip_norm > 0:
            clipped, _ = tf.clip_by_global_norm(present, self._clip_norm, use_norm=norm)
            it = iter(clipped)
            grads = [None if g is None else next(it) for g in grads]
        lr = tf.cast(lr, tf.float32)
        for grad, var, slot in zip(grads, variables, self.slots):
            if grad is None:
                continue
            grad = tf.cast(grad, tf.float32)
            slot.assign(self._momentum * slot + grad)
            var.assign_sub(tf.cast(lr * slot, var.dtype))
        self.iterations.assign_add(1)
        return norm
