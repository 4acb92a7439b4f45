"""Second-stage heads on pooled ROI features: the box head (2 FC) and the class-specific mask head."""

from __future__ import annotations

import tensorflow as tf

keras = tf.keras


class BoxHead(keras.layers.Layer):
    """Two FC layers of ``fc_dim``, then class logits (``num_classes + 1``, index 0 = background) and
    class-specific box deltas ``(dy, dx, dh, dw)`` for every class including background.

    Input: ``[B, R, P, P, C]``. Output: ``logits [B, R, K + 1]``, ``deltas [B, R, K + 1, 4]`` (float32).
    """

    def __init__(self, fc_dim: int, num_classes: int, name: str = "fastrcnn"):
        super().__init__(name=name)
        self.fc_dim = fc_dim
        self.num_classes = num_classes
        init = keras.initializers.VarianceScaling(scale=1.0, distribution="uniform")
        self.fc6 = keras.layers.Dense(fc_dim, activation="relu", kernel_initializer=init, name="fastrcnn_fc6")
        self.fc7 = keras.layers.Dense(fc_dim, activation="relu", kernel_initializer=init, name="fastrcnn_fc7")
        self.classifier = keras.layers.Dense(
            num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), name="fastrcnn_outputs_class"
        )
        self.box = keras.layers.Dense(
            (num_classes + 1) * 4, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001), name="fastrcnn_outputs_box"
        )

    def get_config(self) -> dict:
        return {"fc_dim": self.fc_dim, "num_classes": self.num_classes, "name": self.name}

    def call(self, pooled: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch, num_rois = tf.shape(pooled)[0], tf.shape(pooled)[1]
        x = tf.reshape(pooled, [batch, num_rois, pooled.shape[2] * pooled.shape[3] * pooled.shape[4]])
        x = self.fc7(self.fc6(x))
        logits = tf.cast(self.classifier(x), tf.float32)
        deltas = tf.reshape(tf.cast(self.box(x), tf.float32), [batch, num_rois, self.num_classes + 1, 4])
        return logits, deltas


class MaskHead(keras.layers.Layer):
    """``num_convs`` 3x3 convs of ``head_dim``, a 2x2 stride-2 deconv, and a 1x1 conv per class.

    Input: ``[B, R, P, P, C]``. Output: logits ``[B, R, K, 2P, 2P]`` float32 (channel ``k`` = class ``k + 1``).
    """

    def __init__(self, num_convs: int, head_dim: int, num_classes: int, name: str = "maskrcnn"):
        super().__init__(name=name)
        init = keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")
        # Layers are attributes, not list items: Keras 3 hides layers held in lists from tf.train.Checkpoint.
        self.num_convs = num_convs
        self.head_dim = head_dim
        self.num_classes = num_classes
        for i in range(num_convs):
            setattr(
                self,
                f"fcn{i}",
                keras.layers.Conv2D(head_dim, 3, padding="same", activation="relu", kernel_initializer=init, name=f"maskrcnn_fcn{i}"),
            )
        self.deconv = keras.layers.Conv2DTranspose(
            head_dim, 2, strides=2, activation="relu", kernel_initializer=init, name="maskrcnn_deconv"
        )
        self.predictor = keras.layers.Conv2D(num_classes, 1, kernel_initializer=init, name="maskrcnn_conv")

    def get_config(self) -> dict:
        return {"num_convs": self.num_convs, "head_dim": self.head_dim, "num_classes": self.num_classes, "name": self.name}

    def call(self, pooled: tf.Tensor) -> tf.Tensor:
        batch, num_rois = tf.shape(pooled)[0], tf.shape(pooled)[1]
        size, channels = pooled.shape[2], pooled.shape[4]
        x = tf.reshape(pooled, [-1, size, size, channels])
        for i in range(self.num_convs):
            x = getattr(self, f"fcn{i}")(x)
        x = self.predictor(self.deconv(x))  # [B * R, 2P, 2P, K]
        x = tf.transpose(tf.cast(x, tf.float32), [0, 3, 1, 2])
        return tf.reshape(x, [batch, num_rois, -1, 2 * size, 2 * size])
