"""What a KFP artifact of this pipeline carries: a location on the data volume plus small facts.

COCO (about 20 GB), its shards and the model are too big for KFP's artifact store, so on a cluster
they stay on the shared ReadWriteMany volume and an artifact records where: ``metadata["path"]``
(the path inside the step containers, where the volume is mounted), ``metadata["uri"]``
(``pvc://<claim>/<path on the claim>``, stable across mount paths) and a small summary. The
artifact's own file holds the same record as JSON, so it can be read back from the artifact store
and downloaded from the KFP UI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from maskrcnn.utils.io import write_json


def volume_uri(path: str | os.PathLike, data_root: str | os.PathLike, data_volume: str) -> str:
    """``pvc://<claim>/<path relative to the mount>``; a plain ``file://`` URI when no claim is named."""
    path = Path(path).resolve()
    if not data_volume:
        return path.as_uri()
    relative = path.relative_to(Path(data_root).resolve())
    return f"pvc://{data_volume}/{relative.as_posix()}"


def publish(artifact: Any, record: Mapping[str, Any]) -> None:
    """Write ``record`` into a KFP output artifact: its metadata and, as JSON, its file.

    ``artifact`` is any object with ``.path`` and ``.metadata`` (a ``kfp.dsl`` artifact).
    """
    for key, value in record.items():
        artifact.metadata[key] = value
    write_json(artifact.path, dict(record))


def record(artifact: Any) -> dict[str, Any]:
    """The record an input artifact carries (see ``publish``): its metadata, else its JSON file.

    Metadata is absent when the artifact was imported (``dsl.importer``) rather than produced.
    """
    if artifact.metadata.get("path"):
        return dict(artifact.metadata)
    with open(artifact.path) as f:
        return json.load(f)


def location(artifact: Any) -> Path:
    """The path on the data volume that an input artifact points at."""
    return Path(record(artifact)["path"])


def run_dir(data_root: str | os.PathLike, run_id: str) -> Path:
    """``{data_root}/runs/{run_id}``: the model, evaluation and deploy report of one pipeline run."""
    return Path(data_root) / "runs" / run_id
