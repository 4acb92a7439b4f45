"""Horovod or a single process, decided in one place.

``init_replica()`` is the only caller of ``hvd.init()``. Under ``horovodrun`` or ``mpirun`` (the
launchers set rank variables in the environment) it initialises ``horovod.tensorflow``; run plainly
it returns a single-process replica. Everything else in training goes through the returned
``Replica`` (gradient tape, broadcast, reductions), so both cases run the same code path and
``import horovod`` stays optional: the library works without Horovod installed.

Keras 3 (TF 2.17's ``tf.keras``) is not supported by Horovod's Keras integration, hence the plain
``horovod.tensorflow`` API in a custom loop.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import tensorflow as tf

from maskrcnn.errors import UserError

log = logging.getLogger(__name__)

# Set by horovodrun (Gloo), Open MPI's mpirun (the MPIJob launcher), and MPICH/Intel MPI.
_LAUNCHER_SIZE_VARS = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def launched_world_size(environ: dict[str, str] | None = None) -> int:
    """Number of processes the launcher started (1 when run plainly)."""
    environ = os.environ if environ is None else environ
    for name in _LAUNCHER_SIZE_VARS:
        if environ.get(name):
            return int(environ[name])
    return 1


@dataclass(frozen=True)
class Replica:
    """This process's place in the job; ``hvd`` is the horovod.tensorflow module or None."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    hvd: Any = None

    @property
    def is_chief(self) -> bool:
        """Rank 0 writes checkpoints, logs, summaries and the export."""
        return self.rank == 0

    def gradient_tape(self, tape: tf.GradientTape) -> tf.GradientTape:
        """A tape whose ``gradient()`` returns gradients averaged over all processes."""
        if self.hvd is None:
            return tape
        return self.hvd.DistributedGradientTape(tape)

    def broadcast_from_chief(self, variables: Sequence[tf.Variable]) -> None:
        """Give every process rank 0's values (initial or restored weights, optimizer state, step)."""
        if self.hvd is not None and self.size > 1:
            self.hvd.broadcast_variables(tf_variables(variables), root_rank=0)

    def mean(self, value: tf.Tensor) -> tf.Tensor:
        """Average of a tensor over processes (metrics for logging)."""
        if self.hvd is None or self.size == 1:
            return value
        return self.hvd.allreduce(value, op=self.hvd.Average)

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any (a SIGTERM seen by one rank stops all)."""
        if self.hvd is None or self.size == 1:
            return bool(flag)
        total = self.hvd.allreduce(tf.constant(1.0 if flag else 0.0), op=self.hvd.Sum, name="stop_flag")
        return float(total) > 0


def tf_variables(variables: Sequence[Any]) -> list[tf.Variable]:
    """The ``tf.Variable`` behind each Keras 3 variable.

    Horovod's tape and broadcast need real ``tf.Variable`` objects (``ref()``, ``assign`` in a graph);
    Keras 3 variables wrap one in ``.value``. Gradients and updates on it are those of the Keras variable.
    """
    out = []
    for v in variables:
        inner = v if isinstance(v, tf.Variable) else getattr(v, "value", None)
        if not isinstance(inner, tf.Variable):
            raise TypeError(f"{v!r} is not backed by a tf.Variable")
        out.append(inner)
    return out


def init_replica() -> Replica:
    """Initialise Horovod when a launcher started several processes; otherwise one process.

    Raises UserError when a launcher asks for several processes but Horovod is not installed,
    instead of silently training N independent copies.
    """
    world = launched_world_size()
    if world == 1:
        return Replica()
    try:
        import horovod.tensorflow as hvd
    except ImportError as e:
        raise UserError(
            f"launched as {world} processes but horovod is not importable ({e}); install it with "
            "`make venv` (builds horovod 0.28.1 with Gloo) or run a single process"
        ) from None
    hvd.init()
    _pin_gpu(hvd.local_rank())
    replica = Replica(rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank(), hvd=hvd)
    log.info("horovod: rank %d of %d (local rank %d)", replica.rank, replica.size, replica.local_rank)
    return replica


def _pin_gpu(local_rank: int) -> None:
    """One GPU per process, chosen by local rank (no-op on CPU-only machines)."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        tf.config.set_visible_devices(gpus[local_rank % len(gpus)], "GPU")
