"""Checkpoint and resume with the real tiny model: an interrupted-then-resumed run equals an
uninterrupted one (weights, momentum slots, step, data position, LR and the losses after resume)."""

import numpy as np
import pytest
import tensorflow as tf

from maskrcnn.config import get_config
from maskrcnn.train.checkpoint import CHECKPOINT_SUBDIR
from maskrcnn.train.loop import run_training

from . import DETERMINISTIC_SAMPLING

OVERRIDES = [*DETERMINISTIC_SAMPLING, "TRAIN.MAX_STEPS=6", "TRAIN.CHECKPOINT_EVERY=3", "TRAIN.LOG_EVERY=1",
             "TRAIN.WARMUP_STEPS=4"]


def _checkpoint_values(model_dir, step):
    path = str(model_dir / CHECKPOINT_SUBDIR / f"ckpt-{step}")
    return {name: tf.train.load_variable(path, name) for name, _ in tf.train.list_variables(path)
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for name in a:
        if "save_counter" in name:
            continue
        # Float rounding differs with the order of the sampled anchors (relative 1e-5 here); a lost
        # slot, a wrong LR or a different batch differs by far more.
        diff = float(np.linalg.norm(np.asarray(a[name], np.float64) - b[name]))
        assert diff <= 1e-3 * float(np.linalg.norm(a[name])) + 1e-7, (name, diff)


@pytest.mark.slow
def test_resume_continues_exactly_like_an_uninterrupted_run(tiny_shards, tmp_path):
    cfg = get_config("tiny", OVERRIDES)
    straight = run_training(cfg, tiny_shards, tmp_path / "straight", export=False)
    assert straight["steps"] == 6 and not straight["interrupted"]

    first = run_training(cfg, tiny_shards, tmp_path / "resumed", max_steps_this_run=3, export=False)
    assert first["steps"] == 3 and first["interrupted"]
    second = run_training(cfg, tiny_shards, tmp_path / "resumed", export=False)
    assert second["resumed_from_step"] == 3 and second["steps"] == 6 and not second["interrupted"]

    at3_straight = _checkpoint_values(tmp_path / "straight", 3)
    _assert_same_state(at3_straight, _checkpoint_values(tmp_path / "resumed", 3))
    final_straight = _checkpoint_values(tmp_path / "straight", 6)
    final_resumed = _checkpoint_values(tmp_path / "resumed", 6)
    _assert_same_state(final_straight, final_resumed)
    step_key = "state/step/.ATTRIBUTES/VARIABLE_VALUE"
    position_key = "state/data_position/.ATTRIBUTES/VARIABLE_VALUE"
    assert final_resumed[step_key] == 6 and final_resumed[position_key] == 6
    # The momentum slots moved between step 3 and 6 (a resume that dropped them would not match).
    slots = [k for k in final_resumed if k.startswith("optimizer/slots/")]
    assert slots and any(not np.allclose(at3_straight[k], final_resumed[k]) for k in slots)

    # Same LR and same losses after the resume: the same data in the same order reached the same weights.
    by_step = {e["step"]: e for e in straight["loss_curve"]}
    resumed_curve = second["loss_curve"]
    assert [e["step"] for e in resumed_curve] == [1, 2, 3, 4, 5, 6]  # the curve file continues across runs
    for entry in resumed_curve[3:]:
        assert entry["lr"] == pytest.approx(by_step[entry["step"]]["lr"], rel=1e-6)
        assert entry["total_loss"] == pytest.approx(by_step[entry["step"]]["total_loss"], rel=1e-3)
