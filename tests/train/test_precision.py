"""Mixed precision runs through the same loop: float16 with dynamic loss scaling, and bfloat16."""

import pytest
import tensorflow as tf

from maskrcnn.config import get_config
from maskrcnn.train.checkpoint import CHECKPOINT_SUBDIR
from maskrcnn.train.loop import run_training


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_and_checkpoints_the_loss_scale(precision, tiny_shards, tmp_path):
    cfg = get_config("tiny", [f"TRAIN.PRECISION={precision}", "TRAIN.MAX_STEPS=3", "TRAIN.LOG_EVERY=1"])
    summary = run_training(cfg, tiny_shards, tmp_path, export=False)
    assert summary["steps"] == 3
    assert all(tf.math.is_finite(e["total_loss"]) for e in summary["loss_curve"])
    assert summary["loss_curve"][-1]["loss_weight_decay"] > 0
    path = tf.train.latest_checkpoint(str(tmp_path / CHECKPOINT_SUBDIR))
    scale = float(tf.train.load_variable(path, "loss_scale/scale/.ATTRIBUTES/VARIABLE_VALUE"))
    # float16 scales the loss (2**15 unless a step overflowed); bfloat16 has float32's range and does not.
    assert scale >= 2.0**10 if precision == "mixed_float16" else scale == 1.0
    # every step was applied (no overflow skipped one); the policy is restored for whatever runs next
    assert tf.train.load_variable(path, "optimizer/iterations/.ATTRIBUTES/VARIABLE_VALUE") == 3
    assert tf.keras.mixed_precision.global_policy().name == "float32"
