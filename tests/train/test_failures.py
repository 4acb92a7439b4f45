"""How training stops: a NaN/Inf loss, SIGTERM, and `kill -9` followed by a rerun of the same command."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf

from maskrcnn.config import get_config, schedule
from maskrcnn.train.checkpoint import CHECKPOINT_SUBDIR
from maskrcnn.train.loop import NonFiniteLossError, SIGTERM_EXIT_CODE, lr_at, run_training
from maskrcnn.train.summary import LOGS_SUBDIR, LOSS_CURVE_FILE
from maskrcnn.utils.io import read_json


def _latest_step(model_dir: Path) -> int:
    path = tf.train.latest_checkpoint(str(model_dir / CHECKPOINT_SUBDIR))
    return int(path.rsplit("-", 1)[1]) if path else 0


def _train_command(shards, model_dir, *overrides):
    return [sys.executable, "-m", "maskrcnn.cli", "train", "--data", str(shards), "--model-dir", str(model_dir),
            "--preset", "tiny", *overrides]


def _wait_for_logged_step(model_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    curve = model_dir / LOGS_SUBDIR / LOSS_CURVE_FILE
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"training exited early with {proc.returncode}"
        if curve.exists():
            lines = [json.loads(x) for x in curve.read_text().splitlines() if x.strip()]
            if lines and lines[-1]["step"] >= step:
                return
        time.sleep(0.2)
    raise AssertionError(f"no step {step} logged within {timeout} s")


def test_nan_loss_stops_with_the_step_and_never_checkpoints_it(tiny_shards, tmp_path):
    # An absurd LR makes the real model diverge within a few steps.
    cfg = get_config("tiny", ["TRAIN.BASE_LR_PER_IMAGE=1e6", "TRAIN.WARMUP_FACTOR=1.0", "TRAIN.MAX_STEPS=30",
                              "TRAIN.CHECKPOINT_EVERY=1"])
    with pytest.raises(NonFiniteLossError, match=r"not finite at step (\d+)") as info:
        run_training(cfg, tiny_shards, tmp_path / "model", export=False)
    bad_step = int(re.search(r"step (\d+)", str(info.value)).group(1))
    assert 1 < bad_step <= 30
    assert _latest_step(tmp_path / "model") == bad_step - 1  # the last finite step; the NaN state is not saved
    assert not (tmp_path / "model" / "saved_model").exists()


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143(tiny_shards, tmp_path):
    model_dir = tmp_path / "model"
    proc = subprocess.Popen(_train_command(tiny_shards, model_dir, "TRAIN.MAX_STEPS=500", "TRAIN.LOG_EVERY=1",
                                           "TRAIN.CHECKPOINT_EVERY=1000"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_logged_step(model_dir, 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == SIGTERM_EXIT_CODE, err[-2000:]
    summary = read_json(model_dir / "train_summary.json")
    assert summary["interrupted"] and 3 <= summary["steps"] < 500
    assert _latest_step(model_dir) == summary["steps"]  # saved on SIGTERM although CHECKPOINT_EVERY=1000
    assert "SIGTERM" in err
    assert not (model_dir / "saved_model").exists()


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_from_the_last_checkpoint(tiny_shards, tmp_path):
    model_dir = tmp_path / "model"
    overrides = ["TRAIN.MAX_STEPS=16", "TRAIN.LOG_EVERY=1", "TRAIN.CHECKPOINT_EVERY=4", "TRAIN.WARMUP_STEPS=12"]
    proc = subprocess.Popen(_train_command(tiny_shards, model_dir, *overrides),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_logged_step(model_dir, 10, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed_at = _latest_step(model_dir)
    assert killed_at >= 8 and killed_at % 4 == 0

    rerun = subprocess.run(_train_command(tiny_shards, model_dir, *overrides), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = read_json(model_dir / "train_summary.json")
    assert summary["resumed_from_step"] == killed_at and summary["steps"] == 16 and not summary["interrupted"]
    assert f"resuming from step {killed_at}" in rerun.stderr
    # The first update after the resume used the LR an uninterrupted run has at that step.
    cfg = get_config("tiny", overrides)
    sched = schedule(cfg, 1, read_json(_manifest(tiny_shards))["num_images"])
    entry = next(e for e in summary["loss_curve"] if e["step"] == killed_at + 1)
    assert entry["lr"] == pytest.approx(lr_at(killed_at, sched, cfg), rel=1e-6)
    assert [e["step"] for e in summary["loss_curve"]] == list(range(1, 17))
    assert (model_dir / "saved_model" / "saved_model.pb").is_file()


def _manifest(shards) -> Path:
    shards = Path(shards)
    return shards / "manifest.json" if (shards / "manifest.json").exists() else shards / "train2017" / "manifest.json"
