"""`maskrcnn train` user errors: one line, exit code 2, nothing written."""

import subprocess
import sys


def _train(*args):
    return subprocess.run([sys.executable, "-m", "maskrcnn.cli", "train", *args], capture_output=True, text=True, timeout=300)


def test_missing_shards_is_a_one_line_error(tmp_path):
    proc = _train("--data", str(tmp_path / "nowhere"), "--model-dir", str(tmp_path / "model"), "--preset", "tiny")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "no manifest.json" in proc.stderr and "maskrcnn data convert" in proc.stderr
    assert not (tmp_path / "model").exists()


def test_reference_preset_without_backbone_weights_says_where_to_get_them(tiny_shards, tmp_path):
    proc = _train("--data", str(tiny_shards), "--model-dir", str(tmp_path / "model"), "--preset", "r50-fpn-1x",
                  "PREPROC.SHORT_SIZE=128", "PREPROC.MAX_SIZE=192", "PREPROC.PAD_SIZE=192,192")
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: BACKBONE.WEIGHTS is not set") and "BACKBONE.WEIGHTS=none" in last
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "model").glob("checkpoints/ckpt-*"))


def test_unknown_override_is_rejected(tiny_shards, tmp_path):
    proc = _train("--data", str(tiny_shards), "--model-dir", str(tmp_path / "model"), "--preset", "tiny", "TRAIN.NOPE=1")
    assert proc.returncode == 2 and "unknown key 'TRAIN.NOPE'" in proc.stderr
