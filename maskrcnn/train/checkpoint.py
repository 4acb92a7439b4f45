"""Checkpoints under ``model_dir/checkpoints``: model, optimizer, loss scale, step, data position.

Rank 0 alone writes and restores; the training loop then broadcasts the restored variables, so
every process starts from the same state even when the model dir is not on a shared volume.
``tf.train.CheckpointManager`` rewrites its index file only after a checkpoint is complete, so a
process killed mid-save leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import logging
from pathlib import Path

import tensorflow as tf

from maskrcnn.errors import UserError

log = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"


class TrainState(tf.Module):
    """Counters that must survive a restart: updates applied and batches drawn from the data."""

    def __init__(self):
        super().__init__(name="train_state")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        # Batches this process has drawn from its (deterministic, rank-sharded) input stream; a resumed
        # run skips that many so it continues where the interrupted one stopped.
        self.data_position = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_position")

    @property
    def variables_to_broadcast(self) -> list[tf.Variable]:
        return [self.step, self.data_position]


def variables_by_path(model: tf.keras.Model) -> dict[str, tf.Variable]:
    """The model's variables keyed by their unique Keras path (``mask_rcnn/backbone/.../kernel``).

    Checkpointing this mapping instead of the model object matters: Keras 3 does not expose layers
    held in Python lists (ResNet stages, FPN levels, head convs) to ``tf.train.Checkpoint``, so
    ``Checkpoint(model=model)`` silently leaves those weights out.
    """
    mapping: dict[str, tf.Variable] = {}
    for v in model.variables:
        key = getattr(v, "path", None) or v.name
        if key in mapping:
            raise ValueError(f"two model variables share the path {key!r}; give the layers unique names")
        mapping[key] = v
    return mapping


class Checkpointer:
    """Save every N steps and on demand; restore the latest (rank 0 only)."""

    def __init__(self, model_dir: str | Path, *, keep: int, is_chief: bool, **trackables: tf.Module):
        self.directory = Path(model_dir) / CHECKPOINT_SUBDIR
        self.is_chief = is_chief
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory), max_to_keep=keep)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def restore_latest(self) -> str | None:
        """Restore the newest checkpoint into the (already built) objects; None when there is none."""
        path = self.manager.latest_checkpoint
        if path is None or not self.is_chief:
            return None
        # Every saved value must find its variable: a checkpoint from another config fails loudly.
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
        except (AssertionError, ValueError) as e:
            raise UserError(
                f"checkpoint {path} does not match this model ({str(e).splitlines()[0]}); resume with the config "
                f"it was trained with (see config.yaml) or use a new --model-dir"
            ) from None
        log.info("restored %s", path)
        return path

    def save(self, step: int) -> str | None:
        if not self.is_chief:
            return None
        path = self.manager.save(checkpoint_number=step)
        log.info("saved checkpoint %s", path)
        return path
