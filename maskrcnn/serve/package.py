"""``model.tar.gz`` as SageMaker hosts it: the model dir's serving files at the archive root.

SageMaker extracts ``ModelDataUrl`` into ``/opt/ml/model``, so ``saved_model/``, ``class_map.json``
and ``config.yaml`` sit at the root. The archive is reproducible (sorted entries, zero mtimes and
owners, normalized modes, no gzip timestamp): the same model always packs to the same bytes.
"""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

from maskrcnn.errors import UserError
from maskrcnn.utils.io import atomic_write

SERVING_FILES = ("saved_model", "class_map.json", "config.yaml")


def _entries(model_dir: Path) -> list[Path]:
    paths = []
    for name in SERVING_FILES:
        top = model_dir / name
        if not top.exists():
            raise UserError(f"{top} not found: `maskrcnn model package` needs a model dir written by `maskrcnn train`")
        paths.append(top)
        if top.is_dir():
            paths.extend(top.rglob("*"))
    return sorted(paths, key=lambda p: p.relative_to(model_dir).as_posix())


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def package_model(model_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``out`` (a ``.tar.gz``) from ``model_dir``; return its path."""
    model_dir, out = Path(model_dir), Path(out)
    entries = _entries(model_dir)
    with atomic_write(out) as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in entries:
                tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False, filter=_normalized)
    return out
