"""A model's identity: a digest of its exported SavedModel, so metrics name the exact model."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from maskrcnn.utils.io import file_digest


def model_id(model_dir: str | os.PathLike) -> str:
    """``sha256:<16 hex>`` over the relative paths and contents of ``model_dir/saved_model``.

    Retraining changes it, copying or re-packaging the model (tar, S3) does not.
    """
    root = Path(model_dir) / "saved_model"
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + file_digest(path).encode() + b"\n")
    return f"sha256:{h.hexdigest()[:16]}"
