"""Load ImageNet-pretrained backbone weights stored under tensorpack's variable names.

Sources: tensorpack's ``ImageNet-R50-AlignPadding.npz`` (keys like ``conv0/W`` or ``conv0/W:0``,
``group0/block0/conv1/bn/mean/EMA``) or a name-based TF checkpoint with the same names. tensorpack
trained those models on BGR input, so the stem kernel's input channels are reversed to take the
RGB images of our pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable

import numpy as np

from maskrcnn.errors import UserError

log = logging.getLogger(__name__)

IMAGENET_R50_URL = "http://models.tensorpack.com/FasterRCNN/ImageNet-R50-AlignPadding.npz"
IMAGENET_R101_URL = "http://models.tensorpack.com/FasterRCNN/ImageNet-R101-AlignPadding.npz"
STEM_KERNEL = "conv0/W"  # [7, 7, 3, C]: input channels in the source's (BGR) order


@dataclasses.dataclass
class LoadReport:
    """What a load did. Empty ``missing``/``mismatched``/``unused`` means every tensor matched."""

    loaded: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)          # model weights absent from the file
    mismatched: list[str] = dataclasses.field(default_factory=list)       # "name: model (..) vs file (..)"
    unused: list[str] = dataclasses.field(default_factory=list)           # file tensors no weight takes

    @property
    def complete(self) -> bool:
        """Every model weight was loaded."""
        return not self.missing and not self.mismatched

    def problems(self) -> list[str]:
        """One line per unmatched or mis-shaped tensor."""
        return (
            [f"missing from file: {n}" for n in self.missing]
            + [f"shape mismatch: {m}" for m in self.mismatched]
            + [f"unused in file: {n}" for n in self.unused]
        )


def _read_npz(path: str) -> tuple[list[str], Callable[[str], np.ndarray]]:
    data = np.load(path)
    names = {key[:-2] if key.endswith(":0") else key: key for key in data.files}
    return sorted(names), lambda name: data[names[name]]


def _read_checkpoint(path: str) -> tuple[list[str], Callable[[str], np.ndarray]]:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(path)
    return sorted(reader.get_variable_to_shape_map()), reader.get_tensor


def read_tensors(path: str) -> tuple[list[str], Callable[[str], np.ndarray]]:
    """Names (without ``:0``) and a reader for an ``.npz`` file or a TF checkpoint (prefix or directory)."""
    if path.endswith(".npz"):
        if not os.path.isfile(path):
            raise UserError(f"backbone weights {path}: no such file")
        return _read_npz(path)
    try:
        return _read_checkpoint(path)
    except (ValueError, OSError, RuntimeError) as e:  # TF raises NotFoundError (an OSError) or DataLossError
        raise UserError(f"backbone weights {path}: not an .npz file or a readable TF checkpoint ({e})") from None


def load_backbone_weights(model, path: str, *, source_bgr: bool = True) -> LoadReport:
    """Assign every backbone weight of ``model`` (a ``MaskRCNN`` or a ``ResNet``) from ``path`` by name.

    Weights are matched by tensorpack name; a tensor with the wrong shape is not assigned. Every
    problem is logged and returned in the report. ``source_bgr`` reverses the stem kernel's input
    channels (tensorpack's ImageNet models read BGR).
    """
    backbone = getattr(model, "backbone", model)
    weights = backbone.tensorpack_weights()
    names, read = read_tensors(path)
    available = set(names)
    report = LoadReport()
    for name, variable in sorted(weights.items()):
        if name not in available:
            report.missing.append(name)
            continue
        value = np.asarray(read(name))
        if tuple(value.shape) != tuple(variable.shape):
            report.mismatched.append(f"{name}: model {tuple(variable.shape)} vs file {tuple(value.shape)}")
            continue
        if name == STEM_KERNEL and source_bgr:
            value = value[:, :, ::-1, :]
        variable.assign(value.astype(np.float32))
        report.loaded.append(name)
    report.unused = sorted(available - set(weights))
    log.info("loaded %d/%d backbone tensors from %s", len(report.loaded), len(weights), path)
    for line in report.problems():
        log.warning("backbone weights %s: %s", path, line)
    return report


def initialize_backbone(model, cfg) -> LoadReport | None:
    """Apply ``cfg.BACKBONE.WEIGHTS``: a path loads (every backbone weight must match or UserError),
    ``none`` keeps the random initialization on purpose, and empty is an error: training a
    ResNet from random weights by accident is the usual cause of NaN losses."""
    weights = cfg.BACKBONE.WEIGHTS.strip()
    if weights.lower() == "none":
        log.warning("BACKBONE.WEIGHTS=none: training the backbone from random initialization")
        return None
    if not weights:
        url = IMAGENET_R101_URL if cfg.BACKBONE.DEPTH == 101 and not cfg.BACKBONE.BLOCKS else IMAGENET_R50_URL
        raise UserError(
            f"BACKBONE.WEIGHTS is not set: download the ImageNet backbone ({url}) and pass "
            f"BACKBONE.WEIGHTS=/path/to/{url.rsplit('/', 1)[1]}, or set BACKBONE.WEIGHTS=none to train "
            "from scratch on purpose"
        )
    report = load_backbone_weights(model, weights)
    if not report.complete:
        shown = "; ".join((report.problems())[:5])
        raise UserError(
            f"BACKBONE.WEIGHTS={weights} does not fit this backbone ({len(report.missing)} missing, "
            f"{len(report.mismatched)} mis-shaped: {shown}); check BACKBONE.DEPTH/BLOCKS/WIDTH"
        )
    return report

