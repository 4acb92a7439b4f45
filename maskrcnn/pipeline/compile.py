"""Compile the pipeline to its YAML package (pipeline spec + Kubernetes platform spec)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def committed_package() -> Path:
    """``pipelines/maskrcnn_pipeline.yaml``: the compiled package kept in the repository."""
    from pipelines import maskrcnn_pipeline

    return Path(maskrcnn_pipeline.__file__).with_suffix(".yaml")


def compile_pipeline(out: str | Path | None = None) -> Path:
    """Compile ``maskrcnn-coco`` to ``out`` (default: the committed package) and return the path."""
    from pipelines import maskrcnn_pipeline

    path = Path(out) if out else committed_package()
    path.parent.mkdir(parents=True, exist_ok=True)
    maskrcnn_pipeline.compile_to(str(path))
    log.info("compiled the pipeline to %s", path)
    return path
