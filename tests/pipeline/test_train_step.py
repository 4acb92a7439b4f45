"""The train step's launch: horovodrun or a single process, schedule overrides, cluster arguments, cancellation."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from maskrcnn.errors import UserError
from maskrcnn.pipeline.train_step import (
    horovod_available, k8s_train_args, local_train_argv, schedule_overrides, train_step,
)


def test_schedule_parameters_become_config_overrides():
    assert schedule_overrides(batch_per_gpu=4, epochs=12.0, max_steps=0) == ["TRAIN.BATCH_PER_GPU=4", "TRAIN.EPOCHS=12.0"]
    assert schedule_overrides(batch_per_gpu=0, epochs=0.0, max_steps=50) == ["TRAIN.MAX_STEPS=50"]


def test_local_launch_uses_horovodrun_when_installed(tmp_path):
    argv = local_train_argv(shards_dir=tmp_path / "shards", model_dir=tmp_path / "model", preset="tiny",
                            overrides=["TRAIN.MAX_STEPS=5"], processes=2)
    train = [sys.executable, "-m", "maskrcnn.cli", "train", "--data", str(tmp_path / "shards" / "train2017"),
             "--model-dir", str(tmp_path / "model"), "--preset", "tiny", "TRAIN.MAX_STEPS=5"]
    if horovod_available():
        assert argv[0].endswith("horovodrun") and argv[1:6] == ["--gloo", "-np", "2", "-H", "localhost:2"]
        assert argv[6:] == train
    else:
        assert argv == train
    single = local_train_argv(shards_dir=tmp_path / "shards", model_dir=tmp_path / "model", preset="tiny",
                              overrides=["TRAIN.MAX_STEPS=5"], processes=1)
    assert single == train


def test_cluster_arguments_name_the_run_and_the_gpu_placement():
    args = k8s_train_args(run_id="abc", namespace="ml", image="img:1", nodes=2, gpus_per_node=8, data_volume="pvc",
                          data_root="/data", node_selector={"gpu": "a100"},
                          tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}], timeout_hours=1.5)
    pairs = dict(zip(args[::2], args[1::2]))
    assert pairs["--run-id"] == "abc" and pairs["--nodes"] == "2" and pairs["--gpus-per-node"] == "8"
    assert pairs["--timeout"] == "5400" and pairs["--node-selector"] == "gpu=a100"
    assert pairs["--toleration"] == '{"key": "nvidia.com/gpu", "operator": "Exists"}'


def test_unknown_executor_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="executor 'gpu'"):
        train_step(executor="gpu", shards_path=str(tmp_path), run_dir=str(tmp_path), preset="tiny", overrides=[],
                   data_root=str(tmp_path))


def test_cancelling_the_step_stops_the_training_processes(tmp_path):
    """SIGTERM to the step (a cancelled run) reaches the child's whole process group."""
    pid_file = tmp_path / "grandchild.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    step = textwrap.dedent(f"""
        import sys
        from maskrcnn.pipeline.processes import run_to_completion
        run_to_completion([sys.executable, "-c", {child!r}], what="training")
    """)
    process = subprocess.Popen([sys.executable, "-c", step], stderr=subprocess.PIPE, text=True)
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode != 0 and "training failed" in err
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(grandchild, 0)
