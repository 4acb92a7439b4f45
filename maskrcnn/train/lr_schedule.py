"""Learning rate as a pure function of the step: linear warmup, then step decay.

The peak LR, the warmup length and the decay points come from ``maskrcnn.config.schedule`` (the one
place where the global batch and the LR it implies are computed from the number of processes).
Being a function of the step only, the LR after a resume is exactly the LR an uninterrupted run has
at that step.
"""

from __future__ import annotations

import tensorflow as tf

from maskrcnn.config import Schedule


def learning_rate(step: tf.Tensor | int, sched: Schedule, *, warmup_factor: float, decay_factor: float) -> tf.Tensor:
    """LR for the update made at ``step`` (0-based), float32 scalar.

    Warmup ramps linearly from ``warmup_factor * peak`` at step 0 to ``peak`` at ``warmup_steps``;
    after that the LR is ``peak * decay_factor ** k`` where ``k`` counts the decay points <= step.
    """
    step = tf.cast(step, tf.float32)
    peak = tf.constant(sched.learning_rate, tf.float32)
    decays = tf.constant(sched.decay_steps or (float("inf"),), tf.float32)
    passed = tf.reduce_sum(tf.cast(step >= decays, tf.float32))
    decayed = peak * tf.pow(tf.constant(decay_factor, tf.float32), passed)
    if sched.warmup_steps <= 0:
        return decayed
    alpha = tf.minimum(step / float(sched.warmup_steps), 1.0)
    warm = warmup_factor * (1.0 - alpha) + alpha
    return decayed * warm
