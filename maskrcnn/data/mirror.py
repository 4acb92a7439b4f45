"""Pack a COCO dir into COCO's own archives, so ``download_coco(source=mirror)`` runs for real locally.

``make_mirror`` writes ``train2017.zip`` (members ``train2017/...``), ``val2017.zip`` and
``annotations_trainval2017.zip`` (``annotations/...``), the names and inner layout of the
published archives, plus ``checksums.json`` (``{archive: {"size": int, "md5": str}}``) that the
downloader prefers over the published values. The same folder is also what an air-gapped cluster
serves from an HTTP server, a bucket prefix or a shared volume.

Deterministic: members are sorted, timestamps and permissions fixed, JPEGs stored (they do not
compress) and JSON deflated at zlib's default level, so the same input gives the same bytes.
"""

from __future__ import annotations

import logging
import os
import shutil
import zipfile
from pathlib import Path
from typing import Sequence

from maskrcnn.data.download import CHECKSUMS_FILE, SPLITS, archives_for, folder_of
from maskrcnn.errors import UserError
from maskrcnn.utils.io import file_digest, write_json

log = logging.getLogger(__name__)

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date zip can store
_FILE_MODE = 0o100644 << 16
_DIR_MODE = (0o040755 << 16) | 0x10  # Unix mode bits, plus the MS-DOS directory flag
_STORED_SUFFIXES = (".jpg", ".jpeg", ".png")


def make_mirror(coco_dir: str | os.PathLike, mirror_dir: str | os.PathLike, *, splits: Sequence[str] = SPLITS) -> Path:
    """Zip ``coco_dir`` (COCO 2017 layout) into ``mirror_dir`` as COCO's archives; returns ``mirror_dir``."""
    coco_dir, mirror_dir = Path(coco_dir), Path(mirror_dir)
    _check_coco_dir(coco_dir, splits)
    mirror_dir.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for name in archives_for(splits):
        path = write_archive(coco_dir / folder_of(name), mirror_dir / name)
        checksums[name] = {"size": path.stat().st_size, "md5": file_digest(path, "md5")}
        log.info("mirror: %s, %d bytes", path, checksums[name]["size"])
    write_json(mirror_dir / CHECKSUMS_FILE, checksums)
    return mirror_dir


def _check_coco_dir(coco_dir: Path, splits: Sequence[str]) -> None:
    required = [coco_dir / "annotations" / f"instances_{s}.json" for s in splits] + [coco_dir / s for s in splits]
    missing = [str(p.relative_to(coco_dir)) for p in required if not p.exists()]
    if missing:
        raise UserError(f"{coco_dir} is not a COCO dir: missing {', '.join(missing)} "
                        "(make one with `maskrcnn data synth --out DIR`)")


def write_archive(folder: Path, archive: Path) -> Path:
    """Zip ``folder`` as ``<folder name>/...`` members into ``archive`` (atomically); returns ``archive``."""
    tmp = archive.with_name(f".{archive.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            _add(zf, folder, folder.name)
            for path in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix()):
                _add(zf, path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)
    return archive


def _add(zf: zipfile.ZipFile, path: Path, arcname: str) -> None:
    if path.is_dir():
        info = zipfile.ZipInfo(arcname + "/", date_time=_EPOCH)
        info.external_attr = _DIR_MODE
        info.create_system = 3
        zf.writestr(info, b"")
        return
    info = zipfile.ZipInfo(arcname, date_time=_EPOCH)
    info.external_attr = _FILE_MODE
    info.create_system = 3
    info.file_size = path.stat().st_size  # lets zipfile pick zip64 up front for large members
    stored = path.suffix.lower() in _STORED_SUFFIXES
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED  # zlib's default level
    with open(path, "rb") as src, zf.open(info, "w") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
