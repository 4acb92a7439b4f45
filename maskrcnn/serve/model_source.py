"""Where the served model comes from: a model dir, a ``model.tar.gz``, or ``s3://`` (either form).

``resolve_model_dir`` returns a local directory holding ``saved_model/``: a folder as is, an
archive extracted into a cache folder, an S3 object or prefix downloaded first (boto3, standard
credential chain, ``AWS_ENDPOINT_URL_S3`` for S3-compatible stores).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from maskrcnn.errors import UserError

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def _is_archive(name: str) -> bool:
    return name.endswith(ARCHIVE_SUFFIXES)


def _model_root(folder: Path, source: str) -> Path:
    """``folder`` or its one subfolder that holds ``saved_model/saved_model.pb``."""
    for candidate in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
        if (candidate / "saved_model" / "saved_model.pb").is_file():
            return candidate
    raise UserError(f"{source}: no saved_model/saved_model.pb inside; package a model dir with `maskrcnn model package`")


def extract_archive(archive: Path, dest: Path) -> Path:
    """Extract a model archive (refusing absolute paths, ``..`` and links outside ``dest``)."""
    shutil.rmtree(dest, ignore_errors=True)  # a previous extraction may be of another archive version
    dest.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise UserError(f"{archive}: not a readable model archive ({e})") from None
    return dest


def _download_s3(uri: str, dest: Path) -> Path:
    """Download ``s3://bucket/key`` (one object) or ``s3://bucket/prefix/`` (every object below)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or not key:
        raise UserError(f"{uri}: expected s3://BUCKET/KEY (a model.tar.gz or a model dir prefix)")
    s3 = boto3.client("s3")
    try:
        if _is_archive(key):
            target = dest / Path(key).name
            dest.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(target))
            return target
        prefix = key.rstrip("/") + "/"
        found = False
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix):]
                if not rel or rel.endswith("/"):
                    continue
                target = dest / rel
                if dest.resolve() not in target.resolve().parents:
                    raise UserError(f"{uri}: object key {obj['Key']!r} escapes the download folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, obj["Key"], str(target))
                found = True
        if not found:
            raise UserError(f"{uri}: no objects under this prefix")
        return dest
    except (BotoCoreError, ClientError) as e:
        raise UserError(f"{uri}: cannot download ({e})") from None


def resolve_model_dir(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local model dir for ``source`` (folder, ``.tar.gz``/``.tgz``, ``s3://...``)."""
    source = str(source)
    cache = Path(cache_dir or tempfile.gettempdir()) / f"maskrcnn-model-{hashlib.sha256(source.encode()).hexdigest()[:12]}"
    if source.startswith("s3://"):
        log.info("downloading %s", source)
        local = _download_s3(source, cache / "download")
        if _is_archive(local.name):
            return _model_root(extract_archive(local, cache / "model"), source)
        return _model_root(local, source)
    path = Path(source)
    if path.is_dir():
        return _model_root(path, source)
    if path.is_file() and _is_archive(path.name):
        log.info("extracting %s into %s", path, cache)
        return _model_root(extract_archive(path, cache / "model"), source)
    raise UserError(f"model {source}: not found (expected a model dir, a model.tar.gz or an s3:// URI)")
