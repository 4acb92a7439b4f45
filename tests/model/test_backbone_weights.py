import numpy as np
import pytest
import tensorflow as tf

from maskrcnn.config import get_config
from maskrcnn.errors import UserError
from maskrcnn.model.backbone import BN_EPSILON, ConvNorm, ResNet
from maskrcnn.model.backbone_weights import initialize_backbone, load_backbone_weights

BLOCKS = (1, 2, 1, 1)
WIDTH = 8


def tensorpack_resnet_tensors(rng, blocks=BLOCKS, width=WIDTH):
    """Names and shapes as tensorpack's examples/FasterRCNN/modeling/backbone.py creates them (HWIO kernels)."""
    out = {}

    def conv(scope, k, cin, cout):
        out[f"{scope}/W:0"] = rng.normal(size=(k, k, cin, cout)).astype(np.float32)
        out[f"{scope}/bn/gamma:0"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        out[f"{scope}/bn/beta:0"] = rng.normal(size=cout).astype(np.float32)
        out[f"{scope}/bn/mean/EMA:0"] = rng.normal(size=cout).astype(np.float32)
        out[f"{scope}/bn/variance/EMA:0"] = rng.uniform(0.5, 2.0, cout).astype(np.float32)

    conv("conv0", 7, 3, width)
    cin = width
    for g, count in enumerate(blocks):
        ch = width * 2**g
        for b in range(count):
            scope = f"group{g}/block{b}"
            conv(f"{scope}/conv1", 1, cin, ch)
            conv(f"{scope}/conv2", 3, ch, ch)
            conv(f"{scope}/conv3", 1, ch, ch * 4)
            if b == 0:
                conv(f"{scope}/convshortcut", 1, cin, ch * 4)
            cin = ch * 4
    return out


@pytest.fixture
def resnet():
    return ResNet(BLOCKS, width=WIDTH, freeze_at=2, norm="FreezeBN")


def test_generated_tensorpack_npz_loads_completely(tmp_path, resnet):
    tensors = tensorpack_resnet_tensors(np.random.default_rng(0))
    path = tmp_path / "ImageNet-R50-AlignPadding.npz"
    np.savez(path, **tensors)
    report = load_backbone_weights(resnet, str(path))
    assert report.problems() == [] and report.complete
    assert len(report.loaded) == len(tensors)
    weights = resnet.tensorpack_weights()
    np.testing.assert_array_equal(weights["group1/block1/conv2/W"].numpy(), tensors["group1/block1/conv2/W:0"])
    np.testing.assert_array_equal(weights["group3/block0/convshortcut/bn/variance/EMA"].numpy(), tensors["group3/block0/convshortcut/bn/variance/EMA:0"])
    # tensorpack's ImageNet models read BGR; the stem kernel is flipped to take RGB.
    np.testing.assert_array_equal(weights["conv0/W"].numpy(), tensors["conv0/W:0"][:, :, ::-1, :])


def test_missing_misshaped_and_extra_tensors_are_reported_by_name(tmp_path, resnet):
    tensors = tensorpack_resnet_tensors(np.random.default_rng(0))
    del tensors["group2/block0/conv1/bn/gamma:0"]
    tensors["group1/block0/conv3/W:0"] = np.zeros((1, 1, 16, 99), np.float32)
    tensors["linear/W:0"] = np.zeros((2048, 1000), np.float32)  # the ImageNet classifier is not part of the backbone
    path = tmp_path / "weights.npz"
    np.savez(path, **tensors)
    before = resnet.tensorpack_weights()["group1/block0/conv3/W"].numpy().copy()
    report = load_backbone_weights(resnet, str(path))
    assert report.missing == ["group2/block0/conv1/bn/gamma"]
    assert report.mismatched == ["group1/block0/conv3/W: model (1, 1, 16, 64) vs file (1, 1, 16, 99)"]
    assert report.unused == ["linear/W"]
    assert not report.complete and len(report.problems()) == 3
    np.testing.assert_array_equal(resnet.tensorpack_weights()["group1/block0/conv3/W"].numpy(), before)


def test_name_based_tf_checkpoint_loads(tmp_path, resnet):
    tensors = tensorpack_resnet_tensors(np.random.default_rng(1))
    prefix = str(tmp_path / "model-10000")
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        for name, value in tensors.items():
            tf.compat.v1.Variable(value, name=name[:-2])
        sess.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(sess, prefix, write_meta_graph=False)
    report = load_backbone_weights(resnet, prefix)
    assert report.problems() == []
    np.testing.assert_array_equal(
        resnet.tensorpack_weights()["group0/block0/conv1/bn/beta"].numpy(), tensors["group0/block0/conv1/bn/beta:0"]
    )


def test_frozen_bn_conv_matches_numpy():
    rng = np.random.default_rng(2)
    layer = ConvNorm("x", 4, 3, 1)
    w, g, b, m, v = rng.normal(size=(1, 1, 4, 3)), rng.uniform(1, 2, 3), rng.normal(size=3), rng.normal(size=3), rng.uniform(1, 2, 3)
    for var, value in ((layer.kernel, w), (layer.gamma, g), (layer.beta, b), (layer.moving_mean, m), (layer.moving_variance, v)):
        var.assign(value.astype(np.float32))
    x = rng.normal(size=(1, 2, 2, 4)).astype(np.float32)
    want = np.maximum((x @ w[0, 0] - m) / np.sqrt(v + BN_EPSILON) * g + b, 0)
    np.testing.assert_allclose(layer(tf.constant(x)).numpy(), want, atol=1e-5)


def test_frozen_stages_have_no_trainable_weights(resnet):
    trainable = {v.path for v in resnet.trainable_variables}
    assert not any(p.startswith(("conv0", "group0")) for p in trainable)
    assert any("group1_block0_conv1/gamma" in p for p in trainable)
    assert not any(p.endswith(("/mean", "/variance")) for p in trainable)


def test_initialize_backbone_semantics(tmp_path, resnet):
    with pytest.raises(UserError) as e:
        initialize_backbone(resnet, get_config("r50-fpn-1x"))
    assert "ImageNet-R50-AlignPadding.npz" in str(e.value) and "http://models.tensorpack.com" in str(e.value)
    assert "BACKBONE.WEIGHTS=none" in str(e.value)
    assert initialize_backbone(resnet, get_config("r50-fpn-1x", ["BACKBONE.WEIGHTS=none"])) is None
    with pytest.raises(UserError, match="no such file"):
        initialize_backbone(resnet, get_config("r50-fpn-1x", [f"BACKBONE.WEIGHTS={tmp_path}/nope.npz"]))
    tensors = tensorpack_resnet_tensors(np.random.default_rng(0), blocks=(1, 1, 1, 1))  # a different depth
    np.savez(tmp_path / "other.npz", **tensors)
    with pytest.raises(UserError, match="missing"):
        initialize_backbone(resnet, get_config("r50-fpn-1x", [f"BACKBONE.WEIGHTS={tmp_path}/other.npz"]))
    np.savez(tmp_path / "ok.npz", **tensorpack_resnet_tensors(np.random.default_rng(0)))
    assert initialize_backbone(resnet, get_config("r50-fpn-1x", [f"BACKBONE.WEIGHTS={tmp_path}/ok.npz"])).complete
