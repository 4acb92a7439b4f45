import subprocess
import sys

import pytest

from maskrcnn.config import PRESETS, apply_overrides, from_dict, get_config, schedule, to_dict
from maskrcnn.errors import UserError


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_load_and_round_trip(preset):
    cfg = get_config(preset)
    assert cfg.PRESET == preset
    assert from_dict(to_dict(cfg)) == cfg


def test_reference_defaults():
    cfg = get_config("r50-fpn-1x")
    assert (cfg.PREPROC.SHORT_SIZE, cfg.PREPROC.MAX_SIZE) == (800, 1333)
    assert cfg.FPN.CHANNELS == 256
    assert cfg.RPN.ANCHOR_SIZES == (32, 64, 128, 256, 512)
    assert cfg.RPN.ANCHOR_RATIOS == (0.5, 1.0, 2.0)
    assert get_config("r101-fpn-1x").BACKBONE.DEPTH == 101


def test_overrides_are_typed():
    cfg = get_config("tiny", ["TRAIN.BASE_LR_PER_IMAGE=0.01", "TRAIN.XLA=true", "RPN.ANCHOR_RATIOS=0.5,1,2,4"])
    assert cfg.TRAIN.BASE_LR_PER_IMAGE == 0.01
    assert cfg.TRAIN.XLA is True
    assert cfg.RPN.ANCHOR_RATIOS == (0.5, 1.0, 2.0, 4.0)


@pytest.mark.parametrize(
    "override, message",
    [
        ("TRAIN.NOPE=1", "unknown key 'TRAIN.NOPE'"),
        ("NOPE.X=1", "unknown key 'NOPE.X'"),
        ("TRAIN.MAX_STEPS=ten", "expected int"),
        ("TRAIN.XLA=maybe", "expected bool"),
        ("PREPROC.PAD_SIZE=1,2,3", "expected 2 comma-separated values"),
        ("TRAIN=1", "is a section"),
        ("TRAIN.PRECISION=fp8", "must be one of"),
        ("PREPROC.PAD_SIZE=100,100", "multiple of 64"),
        ("justtext", "expected KEY=VALUE"),
    ],
)
def test_bad_overrides_fail_with_a_clear_message(override, message):
    with pytest.raises(UserError, match=message):
        apply_overrides(get_config("r50-fpn-1x"), [override])


def test_from_dict_rejects_wrong_types():
    with pytest.raises(UserError, match="TRAIN.MAX_STEPS"):
        from_dict({"TRAIN": {"MAX_STEPS": "ten"}})


def test_schedule_scales_lr_with_global_batch():
    cfg = get_config("r50-fpn-1x")
    one = schedule(cfg, world_size=8, num_train_images=117266)
    two = schedule(cfg, world_size=16, num_train_images=117266)
    assert one.global_batch == 32 and two.global_batch == 64
    assert two.learning_rate == pytest.approx(2 * one.learning_rate)
    assert one.learning_rate == pytest.approx(0.08)
    # Same number of epochs: half the steps at twice the batch.
    assert abs(two.total_steps * 2 - one.total_steps) <= 2
    assert one.decay_steps == (int(round(8 * one.steps_per_epoch)), int(round(11 * one.steps_per_epoch)))


def test_config_show_cli():
    out = subprocess.run(
        [sys.executable, "-m", "maskrcnn.cli", "config", "show", "--preset", "tiny", "TRAIN.MAX_STEPS=7"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "MAX_STEPS: 7" in out
    bad = subprocess.run(
        [sys.executable, "-m", "maskrcnn.cli", "config", "show", "TRAIN.MAX_STEP=7"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]  # one line, no traceback
    assert "unknown key 'TRAIN.MAX_STEP'" in bad.stderr
