"""Parameter counts per module of a built model."""

from __future__ import annotations

from typing import Iterator

import numpy as np


def _count(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def module_rows(model) -> Iterator[tuple[str, int, int]]:
    """``(module path, parameters, trainable parameters)`` for the model's modules, outer modules
    first, with the backbone split into its stem and stages."""
    backbone = model.backbone
    yield "backbone", _count(backbone.variables), _count(backbone.trainable_variables)
    yield "backbone/conv0", _count(backbone.stem.variables), _count(backbone.stem.trainable_variables)
    for i, stage in enumerate(backbone.stages()):
        variables = [v for block in stage for v in block.variables]
        trainable = [v for block in stage for v in block.trainable_variables]
        yield f"backbone/group{i} ({len(stage)} blocks)", _count(variables), _count(trainable)
    for name, layer in (("fpn", model.fpn), ("rpn", model.rpn_head), ("box_head", model.box_head), ("mask_head", model.mask_head)):
        if layer is not None:
            yield name, _count(layer.variables), _count(layer.trainable_variables)


def total_params(model) -> tuple[int, int]:
    """``(all weights, trainable weights)``: every variable counts, frozen BN statistics included."""
    return _count(model.variables), _count(model.trainable_variables)


def format_summary(model) -> str:
    rows = list(module_rows(model))
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'module':<{width}}{'params':>14}{'trainable':>14}"]
    for name, params, trainable in rows:
        indent = "  " if "/" in name else ""
        lines.append(f"{indent + name:<{width}}{params:>14,}{trainable:>14,}")
    total, trainable = total_params(model)
    lines.append(f"{total} total params ({total / 1e6:.2f} M, {trainable} trainable)")
    return "\n".join(lines)
