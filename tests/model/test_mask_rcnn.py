import re

import numpy as np
import pytest
import tensorflow as tf

from maskrcnn.cli import main
from maskrcnn.config import get_config
from maskrcnn.errors import UserError
from maskrcnn.model.mask_rcnn import LOSS_KEYS, MaskRCNN
from maskrcnn.model.summary import total_params

NUM_CLASSES = 3


def tiny_batch(cfg, seed=0):
    """Two images: one with two objects, one without any (padded gt)."""
    rng = np.random.default_rng(seed)
    ph, pw = cfg.PREPROC.PAD_SIZE
    m, s = cfg.PREPROC.MAX_INSTANCES, cfg.PREPROC.GT_MASK_SIZE
    boxes = np.zeros((2, m, 4), np.float32)
    classes = np.zeros((2, m), np.int32)
    boxes[0, :2] = [[10, 20, 60, 90], [50, 50, 120, 140]]
    classes[0, :2] = [1, 3]
    masks = np.zeros((2, m, s, s), np.float32)
    masks[0, :2, 4:-4, 4:-4] = 1.0
    return {
        "images": tf.constant(rng.normal(size=(2, ph, pw, 3)), tf.float32),
        "image_info": tf.constant([[ph, pw, 1.0, ph, pw], [150, 180, 1.5, 100, 120]], tf.float32),
        "source_id": tf.constant([1, 2], tf.int64),
        "gt_boxes": tf.constant(boxes),
        "gt_classes": tf.constant(classes),
        "gt_masks": tf.constant(masks),
        "num_gt": tf.constant([2, 0], tf.int32),
    }


@pytest.fixture(scope="module")
def tiny():
    cfg = get_config("tiny", [f"NUM_CLASSES={NUM_CLASSES}"])
    return cfg, MaskRCNN(cfg)


def test_compute_losses_in_tf_function_gives_finite_scalars_and_gradients(tiny):
    cfg, model = tiny
    batch = tiny_batch(cfg)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            losses = model.compute_losses(batch, training=True)
        return losses, tape.gradient(losses["total_loss"], model.trainable_variables)

    losses, grads = step(batch)
    assert set(losses) == set(LOSS_KEYS) | {"total_loss"}
    for name, value in losses.items():
        assert value.shape == () and value.dtype == tf.float32 and np.isfinite(value.numpy()), name
    assert abs(float(losses["total_loss"]) - sum(float(losses[k]) for k in LOSS_KEYS)) < 1e-4
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert float(losses["loss_objectness"]) > 0 and float(losses["loss_mask"]) > 0


def test_detect_returns_contract_shapes_in_original_pixels(tiny):
    cfg, model = tiny
    batch = tiny_batch(cfg)
    out = tf.function(model.detect)(batch["images"], batch["image_info"])
    d = cfg.TEST.DETECTIONS_PER_IMAGE
    assert out["boxes"].shape == (2, d, 4) and out["scores"].shape == (2, d)
    assert out["classes"].shape == (2, d) and out["classes"].dtype == tf.int32
    assert out["masks"].shape == (2, d, 28, 28) and out["num_detections"].dtype == tf.int32
    boxes, masks = out["boxes"].numpy(), out["masks"].numpy()
    assert np.all(boxes >= 0) and np.all(boxes[1, :, [0, 2]] <= 100) and np.all(boxes[1, :, [1, 3]] <= 120)
    assert np.all((masks >= 0) & (masks <= 1))
    classes = out["classes"].numpy()
    for b, n in enumerate(out["num_detections"].numpy()):
        assert np.all((classes[b, :n] >= 1) & (classes[b, :n] <= NUM_CLASSES)) and not classes[b, n:].any()


def test_r50_fpn_has_the_published_parameter_count():
    model = MaskRCNN(get_config("r50-fpn-1x")).build_for_inputs()
    total, trainable = total_params(model)
    assert 44.0e6 <= total <= 44.5e6, total
    # Frozen: stem + group0 and every BN statistic.
    assert trainable < total - 200_000


def test_model_summary_command(capsys):
    assert main(["model", "summary", "--preset", "tiny", "NUM_CLASSES=5"]) == 0
    out = capsys.readouterr().out
    for module in ("backbone", "backbone/conv0", "backbone/group3", "fpn", "rpn", "box_head", "mask_head"):
        assert re.search(rf"^\s*{re.escape(module)}\b.*\d", out, re.M), module
    total = int(re.search(r"^(\d+) total params", out, re.M).group(1))
    top = [int(m.group(1).replace(",", "")) for m in re.finditer(r"^(?:backbone|fpn|rpn|box_head|mask_head)\s+([\d,]+)", out, re.M)]
    assert len(top) == 5 and sum(top) == total
    model = MaskRCNN(get_config("tiny", ["NUM_CLASSES=5"])).build_for_inputs()
    assert total == total_params(model)[0]


def test_model_summary_rejects_bad_override(capsys):
    assert main(["model", "summary", "--preset", "tiny", "FPN.NOPE=1"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_unsupported_fpn_levels_are_a_user_error():
    with pytest.raises(UserError, match="FPN levels"):
        MaskRCNN(get_config("tiny", ["FPN.MAX_LEVEL=5", "RPN.ANCHOR_SIZES=16,32,64,128"]))


def test_mask_size_must_match_the_deconv():
    with pytest.raises(UserError, match="MRCNN.MASK_SIZE"):
        MaskRCNN(get_config("tiny", ["MRCNN.MASK_SIZE=32"]))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_losses_and_outputs_in_float32(policy):
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        cfg = get_config("tiny", [f"NUM_CLASSES={NUM_CLASSES}"])
        model = MaskRCNN(cfg)
        batch = tiny_batch(cfg)
        features = model(batch["images"])
        assert sorted(features) == ["p2", "p3", "p4", "p5", "p6"]
        assert features["p2"].dtype == tf.as_dtype(policy.split("_")[1])
        assert all(v.dtype == tf.float32 for v in model.variables)
        losses = model.compute_losses(batch)
        assert all(v.dtype == tf.float32 and np.isfinite(v.numpy()) for v in losses.values())
        out = model.detect(batch["images"], batch["image_info"])
        assert out["boxes"].dtype == tf.float32 and out["masks"].dtype == tf.float32
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


def test_checkpoint_and_saved_model_cover_every_weight(tmp_path):
    cfg = get_config("tiny", [f"NUM_CLASSES={NUM_CLASSES}"])
    model = MaskRCNN(cfg).build_for_inputs()
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    saved = {name for name, _ in tf.train.list_variables(path) if name.startswith("model/")}
    assert len(saved) == len(model.variables)

    restored = MaskRCNN(cfg).build_for_inputs()
    tf.train.Checkpoint(model=restored).restore(path).assert_existing_objects_matched()
    for a, b in zip(model.variables, restored.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    module = tf.Module()
    module.model = model
    module.detect = tf.function(
        model.detect, input_signature=[tf.TensorSpec([None, *cfg.PREPROC.PAD_SIZE, 3]), tf.TensorSpec([None, 5])]
    )
    tf.saved_model.save(module, str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    batch = tiny_batch(cfg)
    want = model.detect(batch["images"], batch["image_info"])
    got = loaded.detect(batch["images"], batch["image_info"])
    np.testing.assert_allclose(got["scores"].numpy(), want["scores"].numpy(), atol=1e-5)


def test_layers_rebuild_from_their_config():
    cfg = get_config("tiny", ["NUM_CLASSES=4"])
    model = MaskRCNN(cfg)
    clone = MaskRCNN.from_config(model.get_config())
    assert clone.cfg == cfg
    for layer in (model.backbone, model.backbone.stem, model.fpn, model.rpn_head, model.box_head, model.mask_head):
        rebuilt = type(layer).from_config(layer.get_config())
        assert rebuilt.get_config() == layer.get_config()
