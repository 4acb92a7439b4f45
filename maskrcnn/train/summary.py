"""What training reports: TensorBoard scalars, a loss curve file, a progress bar (rank 0 only).

The loss curve lives in ``logs/loss_curve.jsonl`` (one JSON object per logged step) so that it
survives restarts: on resume, entries after the restored step (written by the interrupted run
after its last checkpoint) are dropped and the file continues.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

import tensorflow as tf
from tqdm import tqdm

from maskrcnn.utils.io import atomic_write

log = logging.getLogger(__name__)

LOGS_SUBDIR = "logs"
LOSS_CURVE_FILE = "loss_curve.jsonl"


def read_loss_curve(path: str | Path, up_to_step: int | None = None) -> list[dict]:
    """Entries of a loss curve file, optionally only those with ``step <= up_to_step``."""
    path = Path(path)
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if up_to_step is None or e["step"] <= up_to_step]


class TrainReporter:
    """TensorBoard + loss curve + tqdm for the chief; every method is a no-op elsewhere."""

    def __init__(self, model_dir: str | Path, *, enabled: bool, start_step: int, total_steps: int):
        self.enabled = enabled
        self.logs_dir = Path(model_dir) / LOGS_SUBDIR
        self.curve_path = self.logs_dir / LOSS_CURVE_FILE
        self.curve: list[dict] = []
        self._writer = None
        self._bar = None
        if not enabled:
            return
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.curve = read_loss_curve(self.curve_path, up_to_step=start_step)
        with atomic_write(self.curve_path, "w") as f:
            f.writelines(json.dumps(e) + "\n" for e in self.curve)
        self._writer = tf.summary.create_file_writer(str(self.logs_dir))
        self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def step(self, step: int, total_loss: float, lr: float) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{total_loss:.4f}", lr=f"{lr:.2e}", refresh=False)

    def log(self, step: int, losses: Mapping[str, float], lr: float, images_per_second: float) -> None:
        """Record one logged step (losses averaged over the logging window and over processes)."""
        if not self.enabled:
            return
        entry = {"step": step, **{k: round(float(v), 6) for k, v in losses.items()}, "lr": float(lr),
                 "images_per_second": round(float(images_per_second), 3)}
        self.curve.append(entry)
        with open(self.curve_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        with self._writer.as_default(step=step):
            for name, value in losses.items():
                tf.summary.scalar(f"loss/{name}", value)
            tf.summary.scalar("learning_rate", lr)
            tf.summary.scalar("images_per_second", images_per_second)
        self._writer.flush()
        log.info(
            "step %d: total_loss %.4f lr %.3g %.1f images/s", step, losses.get("total_loss", float("nan")),
            lr, images_per_second,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
