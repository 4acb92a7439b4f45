"""Feature pyramid: P2–P5 from C2–C5 (1x1 lateral + top-down nearest upsampling + 3x3), P6 = max-pool of P5."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

keras = tf.keras


class FPN(keras.layers.Layer):
    """Args: ``channels`` (FPN.CHANNELS). Weight scopes follow tensorpack: ``fpn/lateral_1x1_c{2..5}``,
    ``fpn/posthoc_3x3_p{2..5}``.

    Input: ``[C2, C3, C4, C5]``, ``C_l`` of shape ``[B, H / 2**l, W / 2**l, *]``.
    Output: ``{level: [B, H / 2**level, W / 2**level, channels]}`` for levels 2..6.
    """

    def __init__(self, channels: int, name: str = "fpn"):
        super().__init__(name=name)
        self.channels = channels
        init = keras.initializers.VarianceScaling(scale=1.0, distribution="uniform")
        # Layers are attributes, not list items: Keras 3 hides layers held in lists from tf.train.Checkpoint.
        for level in range(2, 6):
            setattr(self, f"lateral_c{level}", keras.layers.Conv2D(channels, 1, kernel_initializer=init, name=f"fpn_lateral_1x1_c{level}"))
            setattr(
                self,
                f"posthoc_p{level}",
                keras.layers.Conv2D(channels, 3, padding="same", kernel_initializer=init, name=f"fpn_posthoc_3x3_p{level}"),
            )

    def get_config(self) -> dict:
        return {"channels": self.channels, "name": self.name}

    def call(self, features: Sequence[tf.Tensor]) -> dict[int, tf.Tensor]:
        laterals = [getattr(self, f"lateral_c{level}")(c) for level, c in zip(range(2, 6), features)]
        merged = [laterals[-1]]
        for lateral in reversed(laterals[:-1]):
            top = merged[0]
            upsampled = tf.repeat(tf.repeat(top, 2, axis=1), 2, axis=2)  # nearest 2x, XLA-friendly
            merged.insert(0, lateral + upsampled)
        outputs = {level: getattr(self, f"posthoc_p{level}")(m) for level, m in zip(range(2, 6), merged)}
        outputs[6] = outputs[5][:, ::2, ::2, :]  # max-pool with a 1x1 window and stride 2
        return outputs
