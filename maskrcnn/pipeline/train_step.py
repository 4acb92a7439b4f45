"""The train step: Horovod on this machine, or an MPIJob on the cluster.

Locally (``executor="local"``) the step runs ``horovodrun --gloo -np N maskrcnn train`` when Horovod
is installed and a plain single process otherwise: the same program an MPIJob's launcher runs.
On a cluster it runs ``maskrcnn k8s train``, which creates the MPIJob, streams the launcher's log,
and deletes the job when it ends or when this step is cancelled (SIGTERM), so cleanup does not
depend on an exit handler.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from maskrcnn.errors import UserError
from maskrcnn.pipeline.artifacts import volume_uri
from maskrcnn.pipeline.processes import run_to_completion
from maskrcnn.utils.io import read_json

log = logging.getLogger(__name__)

EXECUTORS = ("cluster", "local")


def schedule_overrides(*, batch_per_gpu: int, epochs: float, max_steps: int) -> list[str]:
    """The pipeline's schedule parameters as config overrides (0 keeps the preset's value)."""
    overrides = []
    if batch_per_gpu > 0:
        overrides.append(f"TRAIN.BATCH_PER_GPU={batch_per_gpu}")
    if epochs > 0:
        overrides.append(f"TRAIN.EPOCHS={epochs}")
    if max_steps > 0:
        overrides.append(f"TRAIN.MAX_STEPS={max_steps}")
    return overrides


def horovod_available() -> bool:
    return importlib.util.find_spec("horovod") is not None and _horovodrun() is not None


def _horovodrun() -> str | None:
    beside_python = Path(sys.executable).with_name("horovodrun")
    return str(beside_python) if beside_python.exists() else shutil.which("horovodrun")


def local_train_argv(
    *, shards_dir: Path, model_dir: Path, preset: str, overrides: Sequence[str], processes: int
) -> list[str]:
    """``[horovodrun --gloo -np N] python -m maskrcnn.cli train ...`` for this machine."""
    train = [sys.executable, "-m", "maskrcnn.cli", "train", "--data", str(shards_dir / "train2017"),
             "--model-dir", str(model_dir), "--preset", preset, *overrides]
    if processes > 1 and horovod_available():
        return [_horovodrun(), "--gloo", "-np", str(processes), "-H", f"localhost:{processes}", *train]
    if processes > 1:
        log.warning("horovod is not installed: training in a single process instead of %d", processes)
    return train


def model_record(model_dir: Path, *, data_root: str, data_volume: str) -> dict[str, Any]:
    """The Model artifact's record: location, class map and the training summary's figures."""
    summary = read_json(model_dir / "train_summary.json")
    class_map = read_json(model_dir / "class_map.json")
    return {
        "path": str(model_dir),
        "uri": volume_uri(model_dir, data_root, data_volume),
        "saved_model": str(model_dir / "saved_model"),
        "class_map": class_map,
        "num_classes": len(class_map),
        **{k: summary[k] for k in ("steps", "global_batch", "world_size", "images_per_second", "wall_seconds")
           if k in summary},
        "final_losses": summary.get("final_losses", {}),
    }


def train_step(
    *,
    executor: str,
    shards_path: str,
    run_dir: str,
    preset: str,
    overrides: Sequence[str],
    local_processes: int = 2,
    k8s_args: Sequence[str] = (),
    data_root: str,
    data_volume: str = "",
) -> dict[str, Any]:
    """Train into ``{run_dir}/model`` and return the Model artifact's record.

    ``overrides`` are config ``KEY=VALUE`` strings (schedule and user overrides). ``k8s_args`` are
    the cluster-only arguments of ``maskrcnn k8s train`` (nodes, GPUs, image, volume, ...).
    """
    if executor not in EXECUTORS:
        raise UserError(f"executor {executor!r}: must be one of {', '.join(EXECUTORS)}")
    model_dir = Path(run_dir) / "model"
    shards_dir = Path(shards_path)
    if executor == "local":
        argv = local_train_argv(
            shards_dir=shards_dir, model_dir=model_dir, preset=preset, overrides=overrides, processes=local_processes
        )
        run_to_completion(argv, what="training")
    else:
        from maskrcnn.cli import main as maskrcnn_main

        argv = ["k8s", "train", *k8s_args, "--data", str(shards_dir / "train2017"), "--model-dir", str(model_dir),
                "--preset", preset, *overrides]
        log.info("training on the cluster: maskrcnn %s", " ".join(argv))
        code = maskrcnn_main(argv)  # in this process, so its SIGTERM handler deletes the MPIJob
        if code != 0:
            raise RuntimeError(f"maskrcnn k8s train failed with exit code {code}")
    return model_record(model_dir, data_root=data_root, data_volume=data_volume)


def k8s_train_args(
    *,
    run_id: str,
    namespace: str,
    image: str,
    nodes: int,
    gpus_per_node: int,
    data_volume: str,
    data_root: str,
    node_selector: dict[str, str],
    tolerations: list[dict[str, Any]],
    timeout_hours: float,
) -> list[str]:
    """The cluster arguments of ``maskrcnn k8s train`` for one pipeline run (its id names the MPIJob)."""
    import json

    args = ["--run-id", run_id, "--namespace", namespace, "--image", image, "--nodes", str(nodes),
            "--gpus-per-node", str(gpus_per_node), "--pvc", data_volume, "--mount-path", data_root,
            "--timeout", str(int(timeout_hours * 3600)),
            "--log-file", str(Path(data_root) / "runs" / run_id / "train-launcher.log")]
    for key, value in sorted(node_selector.items()):
        args += ["--node-selector", f"{key}={value}"]
    for toleration in tolerations:
        args += ["--toleration", json.dumps(toleration, sort_keys=True)]
    return args
