"""ResNet-50/101 (bottleneck v1.5: stride in the 3x3 conv) with frozen batch norm.

Every weight carries the name tensorpack gives it (``conv0/W``, ``group0/block0/conv1/bn/gamma``,
``group1/block0/convshortcut/W``, ...), so tensorpack's ``ImageNet-R50-AlignPadding.npz`` loads by
name (see ``backbone_weights``). Stride-2 convolutions pad the way that model was trained
("AlignPadding": the extra row/column goes on the top/left), so pretrained filters see their
inputs at the offsets they were trained with.

Frozen batch norm is an affine transform with fixed ImageNet statistics (``mean/EMA``,
``variance/EMA``); ``gamma``/``beta`` train unless their stage is frozen (``FREEZE_AT``).
Without normalization (``NORM=None``, the from-scratch ``tiny`` preset) each conv gets a bias and
the last conv of every block starts at zero, so each block starts as the identity.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

keras = tf.keras

BN_EPSILON = 1e-5  # tensorpack's BatchNorm default, the value the ImageNet statistics were computed with
STANDARD_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class ConvNorm(keras.layers.Layer):
    """Conv (no bias) + optional frozen BN + optional ReLU; weights named like tensorpack's ``Conv2D``.

    Args:
        scope: tensorpack variable scope, e.g. ``"group0/block0/conv1"``.
        in_channels, out_channels, kernel_size, stride: the convolution.
        pad: ``(before, after)`` explicit spatial padding followed by a VALID conv, or None for SAME.
        norm: ``"FreezeBN"`` or ``"None"``.
        relu: apply ReLU after the norm.
        zero_init: start the output at zero (BN gamma = 0, or kernel = 0 without norm).
        trainable: False freezes every weight of this layer.
    Input/output: ``[B, H, W, C]`` (NHWC).
    """

    def __init__(
        self,
        scope: str,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        pad: tuple[int, int] | None = None,
        norm: str = "FreezeBN",
        relu: bool = True,
        zero_init: bool = False,
        trainable: bool = True,
    ):
        super().__init__(name=scope.replace("/", "_"), trainable=trainable)
        self._args = dict(
            scope=scope, in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size, stride=stride,
            pad=pad, norm=norm, relu=relu, zero_init=zero_init, trainable=trainable,
        )
        self.scope = scope
        self.stride = stride
        self.pad = pad
        self.relu = relu
        self.norm = norm
        use_norm = norm == "FreezeBN"
        kernel_init = (
            "zeros" if zero_init and not use_norm
            else keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")
        )
        self.kernel = self.add_weight(
            name="W", shape=(kernel_size, kernel_size, in_channels, out_channels), initializer=kernel_init
        )
        self.tensorpack_weights = {f"{scope}/W": self.kernel}
        if use_norm:
            self.gamma = self.add_weight(name="gamma", shape=(out_channels,), initializer="zeros" if zero_init else "ones")
            self.beta = self.add_weight(name="beta", shape=(out_channels,), initializer="zeros")
            self.moving_mean = self.add_weight(name="mean", shape=(out_channels,), initializer="zeros", trainable=False)
            self.moving_variance = self.add_weight(
                name="variance", shape=(out_channels,), initializer="ones", trainable=False
            )
            self.tensorpack_weights.update(
                {
                    f"{scope}/bn/gamma": self.gamma,
                    f"{scope}/bn/beta": self.beta,
                    f"{scope}/bn/mean/EMA": self.moving_mean,
                    f"{scope}/bn/variance/EMA": self.moving_variance,
                }
            )
        else:
            self.bias = self.add_weight(name="b", shape=(out_channels,), initializer="zeros")
            self.tensorpack_weights[f"{scope}/b"] = self.bias
        self.built = True

    def get_config(self) -> dict:
        return dict(self._args)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        dtype = x.dtype
        if self.pad is not None:
            before, after = self.pad
            x = tf.pad(x, [[0, 0], [before, after], [before, after], [0, 0]])
        x = tf.nn.conv2d(x, tf.cast(self.kernel, dtype), self.stride, "VALID" if self.pad is not None else "SAME")
        if self.norm == "FreezeBN":
            # Fold the frozen statistics into one scale and shift, computed in float32.
            scale = tf.cast(self.gamma, tf.float32) * tf.math.rsqrt(tf.cast(self.moving_variance, tf.float32) + BN_EPSILON)
            shift = tf.cast(self.beta, tf.float32) - tf.cast(self.moving_mean, tf.float32) * scale
            x = x * tf.cast(scale, dtype) + tf.cast(shift, dtype)
        else:
            x = x + tf.cast(self.bias, dtype)
        return tf.nn.relu(x) if self.relu else x


class Bottleneck(keras.layers.Layer):
    """1x1 → 3x3 (stride here) → 1x1 (x4 channels), plus a projection shortcut when the shape changes."""

    def __init__(self, scope: str, in_channels: int, channels: int, stride: int, *, norm: str, trainable: bool):
        super().__init__(name=scope.replace("/", "_"), trainable=trainable)
        self._args = dict(scope=scope, in_channels=in_channels, channels=channels, stride=stride, norm=norm, trainable=trainable)
        out_channels = channels * 4
        common = dict(norm=norm, trainable=trainable)
        self.conv1 = ConvNorm(f"{scope}/conv1", in_channels, channels, 1, **common)
        # AlignPadding: pad one row/column on the top/left before a VALID stride-2 conv.
        self.conv2 = ConvNorm(
            f"{scope}/conv2", channels, channels, 3, stride, pad=(1, 0) if stride == 2 else None, **common
        )
        self.conv3 = ConvNorm(f"{scope}/conv3", channels, out_channels, 1, relu=False, zero_init=True, **common)
        self.shortcut = (
            ConvNorm(f"{scope}/convshortcut", in_channels, out_channels, 1, stride, relu=False, **common)
            if in_channels != out_channels or stride != 1
            else None
        )
        self.built = True

    def get_config(self) -> dict:
        return dict(self._args)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return tf.nn.relu(self.conv3(self.conv2(self.conv1(x))) + shortcut)


class ResNet(keras.layers.Layer):
    """ResNet trunk returning ``[C2, C3, C4, C5]`` (strides 4, 8, 16, 32).

    Args:
        blocks: bottleneck blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        width: stem channels; stage ``i`` has ``width * 2**i`` bottleneck channels (x4 outputs).
        freeze_at: 0 trains everything, 1 freezes the stem, 2 the stem and stage 2 (group0), ...
        norm: ``"FreezeBN"`` or ``"None"``.
    Input: ``[B, H, W, 3]`` normalized RGB with ``H``, ``W`` divisible by 32.
    """

    def __init__(self, blocks: Sequence[int], *, width: int = 64, freeze_at: int = 2, norm: str = "FreezeBN", name="resnet"):
        super().__init__(name=name)
        self._args = dict(blocks=tuple(blocks), width=width, freeze_at=freeze_at, norm=norm, name=name)
        if len(blocks) != 4:
            raise ValueError(f"ResNet needs 4 stages of blocks, got {blocks}")
        # tensorpack pads 3 before / 2 after for the 7x7 stride-2 stem and 1 before the 3x3 max-pool.
        self.stem = ConvNorm("conv0", 3, width, 7, 2, pad=(3, 2), norm=norm, trainable=freeze_at < 1)
        # Blocks are attributes, not list items: Keras 3 hides layers held in lists from tf.train.Checkpoint.
        self.block_names = tuple(tuple(f"group{i}_block{j}" for j in range(count)) for i, count in enumerate(blocks))
        in_channels = width
        for i, names in enumerate(self.block_names):
            channels = width * 2**i
            for j, name in enumerate(names):
                stride = 2 if (i > 0 and j == 0) else 1
                block = Bottleneck(f"group{i}/block{j}", in_channels, channels, stride, norm=norm, trainable=freeze_at < i + 2)
                setattr(self, name, block)
                in_channels = channels * 4
        self.out_channels = [width * 2**i * 4 for i in range(4)]
        self.built = True

    def get_config(self) -> dict:
        return dict(self._args)

    def call(self, images: tf.Tensor) -> list[tf.Tensor]:
        x = self.stem(images)
        x = tf.pad(x, [[0, 0], [1, 0], [1, 0], [0, 0]])
        x = tf.nn.max_pool2d(x, 3, 2, "VALID")
        features = []
        for stage in self.stages():
            for block in stage:
                x = block(x)
            features.append(x)
        return features

    def stages(self) -> list[list[Bottleneck]]:
        """The bottleneck blocks of each stage (group0 ... group3)."""
        return [[getattr(self, name) for name in names] for names in self.block_names]

    def tensorpack_weights(self) -> dict[str, tf.Variable]:
        """``{tensorpack name: variable}`` for every backbone weight."""
        layers = [self.stem] + [
            conv
            for stage in self.stages()
            for block in stage
            for conv in (block.conv1, block.conv2, block.conv3, block.shortcut)
            if conv is not None
        ]
        return {name: var for layer in layers for name, var in layer.tensorpack_weights.items()}


def resnet_from_config(backbone_cfg) -> ResNet:
    """Build the ResNet described by ``cfg.BACKBONE``."""
    blocks = tuple(backbone_cfg.BLOCKS) or STANDARD_BLOCKS[backbone_cfg.DEPTH]
    return ResNet(blocks, width=backbone_cfg.WIDTH, freeze_at=backbone_cfg.FREEZE_AT, norm=backbone_cfg.NORM)
