"""``run_training``: the custom training loop, one code path for Horovod and a single process.

Order of events (the order matters for resuming and for Horovod):
1. the replica (Horovod or not), the data's class map -> ``NUM_CLASSES``, the schedule (global batch,
   LR, steps) from ``maskrcnn.config.schedule``;
2. the model is built on one batch, then the optimizer slots are created, so every variable exists;
3. rank 0 restores the latest checkpoint (or, on a fresh start, loads the pretrained backbone), then
   all of it (weights, momentum, loss scale, step, data position) is broadcast from rank 0;
4. each rank skips the batches it already consumed and the loop runs to the last step, saving every
   ``CHECKPOINT_EVERY`` steps and on SIGTERM, and stopping with a clear error on a NaN/Inf loss;
5. rank 0 writes the effective config, class map, summary and the SavedModel export.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import tensorflow as tf

from maskrcnn import config as config_lib
from maskrcnn.config import Config
from maskrcnn.errors import UserError
from maskrcnn.train.checkpoint import Checkpointer, TrainState, variables_by_path
from maskrcnn.train.distributed import Replica, init_replica, tf_variables
from maskrcnn.train.loss_scale import DynamicLossScale
from maskrcnn.train.lr_schedule import learning_rate
from maskrcnn.train.optimizer import SGDMomentum, weight_decay_loss
from maskrcnn.train.summary import TrainReporter
from maskrcnn.utils.io import atomic_write, read_json, write_json

log = logging.getLogger(__name__)

SIGTERM_EXIT_CODE = 143  # 128 + SIGTERM: an interrupted run must not look like a finished one


class NonFiniteLossError(UserError):
    """Training diverged: the loss became NaN or Inf."""


# ----------------------------------------------------------------------------- inputs


def resolve_shards_dir(data_dir: str | Path) -> Path:
    """The folder holding the training split's ``manifest.json`` (``DIR`` or ``DIR/train2017``)."""
    data_dir = Path(data_dir)
    for candidate in (data_dir, data_dir / "train2017"):
        if (candidate / "manifest.json").is_file():
            return candidate
    raise UserError(f"{data_dir}: no manifest.json; convert the data first with `maskrcnn data convert`")


def config_for_data(cfg: Config, manifest: Mapping[str, Any]) -> Config:
    """A new config whose NUM_CLASSES is the number of classes in the data's class map."""
    class_map = manifest.get("class_map") or {}
    if not class_map:
        raise UserError("the shards' manifest.json has an empty class_map; re-run `maskrcnn data convert`")
    ids = sorted(int(v["id"]) for v in class_map.values())
    if ids != list(range(1, len(ids) + 1)):
        raise UserError(f"the shards' class_map ids are not contiguous 1..{len(ids)}: {ids}")
    return dataclasses.replace(cfg, NUM_CLASSES=len(ids))


# ----------------------------------------------------------------------------- the step


def check_finite(step: int, losses: Mapping[str, float]) -> None:
    """Raise NonFiniteLossError naming the step and the offending loss terms."""
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        terms = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        raise NonFiniteLossError(
            f"loss is not finite at step {step} ({terms}); training stopped without saving this step. "
            "Lower TRAIN.BASE_LR_PER_IMAGE, lengthen TRAIN.WARMUP_STEPS, set TRAIN.GRAD_CLIP_NORM, "
            "or start from pretrained BACKBONE.WEIGHTS"
        )


def make_train_step(
    model: tf.keras.Model,
    optimizer: SGDMomentum,
    loss_scale: DynamicLossScale,
    state: TrainState,
    replica: Replica,
    lr_fn: Callable[[tf.Tensor], tf.Tensor],
    *,
    weight_decay: float,
    xla: bool,
    input_signature: Any,
) -> Callable[[Mapping[str, tf.Tensor]], tuple[dict[str, tf.Tensor], tf.Tensor]]:
    """A tf.function doing one update; returns (losses averaged over processes, LR used).

    The losses gain ``loss_weight_decay`` (added to ``total_loss`` before the gradient, so it is
    all-reduced with the rest).

    With XLA the forward/backward pass is compiled (``jit_compile``) while the Horovod all-reduce,
    which has no XLA kernel, stays outside the compiled cluster.
    """
    variables = tf_variables(model.trainable_variables)
    loss_fn = tf.function(model.compute_losses, jit_compile=True) if xla else model.compute_losses

    @tf.function(input_signature=[input_signature])
    def train_step(batch):
        with tf.GradientTape() as tape:
            losses = loss_fn(batch, training=True)
            losses = {k: tf.cast(v, tf.float32) for k, v in losses.items()}
            losses["loss_weight_decay"] = weight_decay_loss(variables, weight_decay)
            losses["total_loss"] = losses["total_loss"] + losses["loss_weight_decay"]
            scaled = loss_scale.scale_loss(losses["total_loss"])
        grads = replica.gradient_tape(tape).gradient(scaled, variables)
        grads, finite = loss_scale.unscale(grads)
        lr = lr_fn(state.step)
        if loss_scale.enabled:
            tf.cond(finite, lambda: optimizer.apply(grads, variables, lr), lambda: tf.constant(0.0))
            loss_scale.update(finite)
        else:
            optimizer.apply(grads, variables, lr)
        state.step.assign_add(1)
        state.data_position.assign_add(1)
        names = sorted(losses)
        averaged = replica.mean(tf.stack([losses[k] for k in names]))
        return {k: averaged[i] for i, k in enumerate(names)}, lr

    return train_step


# ----------------------------------------------------------------------------- SIGTERM


class StopFlag:
    """Set by SIGTERM; the loop checks it between steps, saves a checkpoint and returns."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("SIGTERM received: saving a checkpoint after this step and stopping")
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


# ----------------------------------------------------------------------------- run


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Keras' dtype policy for TRAIN.PRECISION while the model is built; restored afterwards
    (layers keep the policy they were built with)."""
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(precision)  # float32, mixed_float16, mixed_bfloat16
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


@dataclasses.dataclass
class Trainable:
    """Everything a checkpoint holds and rank 0 broadcasts."""

    model: tf.keras.Model
    optimizer: SGDMomentum
    loss_scale: DynamicLossScale
    state: TrainState

    @property
    def broadcast_variables(self) -> list[tf.Variable]:
        return [*self.model.variables, *self.optimizer.state, *self.loss_scale.state, *self.state.variables_to_broadcast]


def build_trainable(cfg: Config) -> Trainable:
    from maskrcnn.model.mask_rcnn import MaskRCNN

    model = MaskRCNN(cfg).build_for_inputs()  # every variable exists before restore and broadcast
    optimizer = SGDMomentum(model.trainable_variables, momentum=cfg.TRAIN.MOMENTUM, clip_norm=cfg.TRAIN.GRAD_CLIP_NORM)
    return Trainable(model, optimizer, DynamicLossScale(cfg.TRAIN.PRECISION == "mixed_float16"), TrainState())


def _initialise(trainable: Trainable, checkpointer: Checkpointer, cfg: Config, replica: Replica) -> None:
    """Rank 0 restores the latest checkpoint, or on a fresh start loads the pretrained backbone;
    then every process receives rank 0's state."""
    if checkpointer.restore_latest() is None and replica.is_chief:
        from maskrcnn.model.backbone_weights import initialize_backbone

        # A path loads (and logs what matched), "none" keeps random weights on purpose, empty is a
        # UserError saying where to get the ImageNet weights.
        initialize_backbone(trainable.model, cfg)
    replica.broadcast_from_chief(trainable.broadcast_variables)


class _Throughput:
    """Images per second over logging windows, leaving out the first (it includes tracing)."""

    def __init__(self, global_batch: int):
        self.global_batch = global_batch
        self.images = 0
        self.seconds = 0.0
        self._windows = 0
        self._start = time.time()

    def end_window(self, steps: int) -> float:
        seconds = time.time() - self._start
        if self._windows:
            self.images += steps * self.global_batch
            self.seconds += seconds
        self._windows += 1
        self._start = time.time()
        return steps * self.global_batch / max(seconds, 1e-9)

    def overall(self, steps: int, wall_seconds: float) -> float:
        if not self.seconds:  # shorter than two windows: time all of it
            return steps * self.global_batch / max(wall_seconds, 1e-9)
        return self.images / self.seconds


def run_training(
    cfg: Config,
    data_dir: str | Path,
    model_dir: str | Path,
    *,
    max_steps_this_run: int | None = None,
    export: bool = True,
) -> dict[str, Any]:
    """Train (or resume) into ``model_dir``; returns the training summary (also written on rank 0).

    ``max_steps_this_run`` stops after that many updates in this invocation (checkpointed, not
    exported), for time-sliced jobs and tests; a rerun continues. The summary has ``interrupted``
    true when SIGTERM or that limit ended the run before the last step.
    """
    from maskrcnn.data.pipeline import build_dataset

    started = time.time()
    replica = init_replica()
    model_dir = Path(model_dir)
    shards_dir = resolve_shards_dir(data_dir)
    manifest = read_json(shards_dir / "manifest.json")
    cfg = config_for_data(cfg, manifest)
    sched = config_lib.schedule(cfg, replica.size, int(manifest.get("num_images", 0)))
    log.info(
        "world size %d, global batch %d, peak LR %.4g, %d steps (%d per epoch), warmup %d, decay at %s",
        sched.world_size, sched.global_batch, sched.learning_rate, sched.total_steps, sched.steps_per_epoch,
        sched.warmup_steps, list(sched.decay_steps),
    )
    tf.keras.utils.set_random_seed(cfg.TRAIN.SEED + replica.rank)
    with precision_policy(cfg.TRAIN.PRECISION):
        trainable = build_trainable(cfg)
    checkpointer = Checkpointer(
        model_dir, keep=cfg.TRAIN.CHECKPOINTS_KEPT, is_chief=replica.is_chief, model=variables_by_path(trainable.model),
        optimizer=trainable.optimizer, loss_scale=trainable.loss_scale, state=trainable.state,
    )
    _initialise(trainable, checkpointer, cfg, replica)
    state = trainable.state
    start_step = int(state.step.numpy())
    if start_step:
        log.info("resuming from step %d with lr %.6g", start_step, lr_at(start_step, sched, cfg))
    if replica.is_chief:
        _write_model_dir_files(model_dir, cfg, manifest["class_map"])

    # Deterministic order, so that skipping the batches already consumed continues the same stream.
    dataset = build_dataset(
        shards_dir, cfg, training=True, rank=replica.rank, world_size=replica.size, deterministic=True,
        skip_batches=int(state.data_position.numpy()),
    )
    lr_fn = functools.partial(
        learning_rate, sched=sched, warmup_factor=cfg.TRAIN.WARMUP_FACTOR, decay_factor=cfg.TRAIN.LR_DECAY_FACTOR
    )
    train_step = make_train_step(
        trainable.model, trainable.optimizer, trainable.loss_scale, state, replica, lr_fn,
        weight_decay=cfg.TRAIN.WEIGHT_DECAY, xla=cfg.TRAIN.XLA, input_signature=dataset.element_spec,
    )
    last_step = sched.total_steps if max_steps_this_run is None else min(sched.total_steps, start_step + max_steps_this_run)
    reporter = TrainReporter(model_dir, enabled=replica.is_chief, start_step=start_step, total_steps=sched.total_steps)
    throughput = _Throughput(sched.global_batch)
    window: dict[str, list[float]] = {}
    step = start_step
    try:
        with StopFlag() as stop:
            for batch in dataset:
                if step >= last_step:
                    break
                losses, lr = train_step(batch)
                step += 1
                values = {k: float(v) for k, v in losses.items()}
                check_finite(step, values)
                for k, v in values.items():
                    window.setdefault(k, []).append(v)
                reporter.step(step, values["total_loss"], float(lr))
                if step % cfg.TRAIN.LOG_EVERY == 0 or step == last_step:
                    rate = throughput.end_window(len(window["total_loss"]))
                    reporter.log(step, {k: float(np.mean(v)) for k, v in window.items()}, float(lr), rate)
                    window = {}
                if step % cfg.TRAIN.CHECKPOINT_EVERY == 0:
                    checkpointer.save(step)
                if replica.any(stop.requested):
                    break
    finally:
        reporter.close()
    if step > start_step and step % cfg.TRAIN.CHECKPOINT_EVERY != 0:
        checkpointer.save(step)

    wall = time.time() - started
    summary = {
        "steps": step,
        "total_steps": sched.total_steps,
        "resumed_from_step": start_step,
        "interrupted": step < sched.total_steps,
        "global_batch": sched.global_batch,
        "world_size": sched.world_size,
        "learning_rate": sched.learning_rate,
        "images_per_second": round(throughput.overall(step - start_step, wall), 3),
        "final_losses": reporter.curve[-1] if reporter.curve else {},
        "wall_seconds": round(wall, 2),
        "variables_checksum": variables_checksum(trainable.model.variables),
        "loss_curve": reporter.curve,
    }
    if replica.is_chief:
        if export and not summary["interrupted"]:
            from maskrcnn.train.export import export_saved_model

            summary["saved_model"] = str(export_saved_model(trainable.model, cfg, model_dir))
        write_json(model_dir / "train_summary.json", summary)
    return summary


def _write_model_dir_files(model_dir: Path, cfg: Config, class_map: Mapping[str, Any]) -> None:
    with atomic_write(model_dir / "config.yaml", "w") as f:
        f.write(config_lib.to_yaml(cfg))
    write_json(model_dir / "class_map.json", dict(class_map))


def variables_checksum(variables) -> str:
    """sha256 over the variables' bytes: equal on every process exactly when the weights are identical."""
    digest = hashlib.sha256()
    for v in variables:
        digest.update(np.ascontiguousarray(v.numpy()).tobytes())
    return digest.hexdigest()


def lr_at(step: int, sched: config_lib.Schedule, cfg: Config) -> float:
    """The LR of the update made after ``step`` updates (what a resumed run uses next)."""
    return float(
        learning_rate(step, sched, warmup_factor=cfg.TRAIN.WARMUP_FACTOR, decay_factor=cfg.TRAIN.LR_DECAY_FACTOR)
    )
