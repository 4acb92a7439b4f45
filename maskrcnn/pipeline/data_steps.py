"""The download and convert steps, with a cache keyed by the data source.

Both steps write into ``{data_root}/datasets/<name>-<hash of the source>/`` on the data volume
(``coco/`` and ``shards/<split>/``) and leave a stamp (``download.json``, ``convert-<split>.json``)
when they finish. A later run with the same source finds the stamp, checks it against the files
(annotation hashes, image counts, shard sizes, the converter's format version) and skips the work. This is what makes a second
local run fast (kfp.local has no step caching) and what lets a cluster run whose KFP cache entry
was evicted reuse the data already on the volume. A stamp that no longer matches is ignored and
the step runs again (the download and convert programs resume their own partial work).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

from maskrcnn.pipeline.artifacts import volume_uri
from maskrcnn.utils.io import file_digest, read_json, write_json

log = logging.getLogger(__name__)

SPLITS = ("train2017", "val2017")


def dataset_dir(data_root: str | os.PathLike, source: str) -> Path:
    """``{data_root}/datasets/<readable name>-<12 hex of sha256(source)>``: one folder per data source."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    tail = source.rstrip("/").rsplit("/", 1)[-1] if source else "coco2017"
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip("-.")[:40] or "data"
    return Path(data_root) / "datasets" / f"{name}-{digest}"


def coco_facts(coco_dir: Path, *, count_annotations: bool) -> dict[str, dict[str, Any]]:
    """Per split: sha256 of the annotation file and the number of image files (+ counts from the JSON)."""
    facts: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        annotations = coco_dir / "annotations" / f"instances_{split}.json"
        images = coco_dir / split
        if not annotations.is_file() or not images.is_dir():
            continue
        entry: dict[str, Any] = {
            "annotations_sha256": file_digest(annotations),
            "image_files": sum(1 for _ in os.scandir(images)),
        }
        if count_annotations:
            data = read_json(annotations)
            entry.update(
                images=len(data.get("images", [])),
                instances=len(data.get("annotations", [])),
                categories=len(data.get("categories", [])),
            )
        facts[split] = entry
    return facts


def _download_still_valid(stamp: Mapping[str, Any], coco_dir: Path) -> bool:
    now = coco_facts(coco_dir, count_annotations=False)
    return all(
        split in now
        and now[split]["annotations_sha256"] == recorded["annotations_sha256"]
        and now[split]["image_files"] == recorded["image_files"]
        for split, recorded in stamp["splits"].items()
    ) and set(stamp["splits"]) == set(SPLITS)


def download_step(*, source: str, data_root: str, data_volume: str = "") -> dict[str, Any]:
    """Fetch COCO 2017 from ``source`` (official URLs when empty) unless a verified copy is there.

    Returns the artifact record: ``path``, ``uri``, ``source``, ``cached`` and per-split facts.
    """
    root = dataset_dir(data_root, source)
    coco_dir = root / "coco"
    stamp_path = root / "download.json"
    stamp = read_json(stamp_path) if stamp_path.is_file() else None
    cached = bool(stamp) and stamp.get("source") == source and _download_still_valid(stamp, coco_dir)
    if cached:
        log.info("download: %s already holds a verified copy of %s; skipping", coco_dir, source or "COCO 2017")
    else:
        if stamp:
            # The copy changed since it was verified: the downloader's own extraction markers would
            # still call it complete, so start from an empty folder.
            log.warning("download: %s no longer matches %s; downloading again", coco_dir, stamp_path)
            stamp_path.unlink()
            shutil.rmtree(coco_dir, ignore_errors=True)
        from maskrcnn.data.download import download_coco

        coco_dir = Path(download_coco(coco_dir, source=source or None))
        stamp = {"source": source, "splits": coco_facts(coco_dir, count_annotations=True)}
        missing = [s for s in SPLITS if s not in stamp["splits"]]
        if missing:
            raise RuntimeError(f"download finished but {coco_dir} lacks {', '.join(missing)}")
        write_json(stamp_path, stamp)
    return {
        "path": str(coco_dir),
        "uri": volume_uri(coco_dir, data_root, data_volume),
        "source": source,
        "cached": cached,
        "splits": stamp["splits"],
    }


def _shard_sizes(out_dir: Path, manifest: Mapping[str, Any]) -> dict[str, int]:
    return {s["file"]: (out_dir / s["file"]).stat().st_size for s in manifest["shards"] if (out_dir / s["file"]).is_file()}


def _convert_still_valid(stamp: Mapping[str, Any], out_dir: Path, annotations_sha256: str, shards: int) -> bool:
    from maskrcnn.data.convert import FORMAT_VERSION

    manifest_path = out_dir / "manifest.json"
    if not manifest_path.is_file():
        return False
    manifest = read_json(manifest_path)
    return (
        stamp.get("format_version") == FORMAT_VERSION  # shards written by another converter are rebuilt
        and stamp.get("annotations_sha256") == annotations_sha256
        and manifest.get("source", {}).get("annotations_sha256") == annotations_sha256
        and stamp.get("shards") == shards == len(manifest["shards"])
        and stamp.get("sizes") == _shard_sizes(out_dir, manifest)
    )


def _split_summary(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "num_images": manifest["num_images"],
        "num_instances": manifest["num_instances"],
        "num_skipped": manifest.get("num_skipped", 0),
        "shards": len(manifest["shards"]),
    }


def convert_step(
    *,
    coco_path: str,
    coco_splits: Mapping[str, Mapping[str, Any]],
    data_root: str,
    data_volume: str = "",
    train_shards: int,
    val_shards: int,
    workers: int,
) -> dict[str, Any]:
    """Convert both splits of the COCO dir to TFRecord shards beside it, unless verified shards are there.

    ``coco_splits`` is the download record's per-split facts (its annotation hashes tie the shards
    to the exact annotations they came from). Returns the artifact record: ``path`` (holding one
    folder per split), ``uri``, ``class_map``, ``num_classes``, per-split counts and ``cached``.
    """
    coco_dir = Path(coco_path)
    shards_root = coco_dir.parent / "shards"
    summaries: dict[str, Any] = {}
    class_map: dict[str, Any] = {}
    all_cached = True
    for split, shards in ((SPLITS[0], train_shards), (SPLITS[1], val_shards)):
        out_dir = shards_root / split
        stamp_path = coco_dir.parent / f"convert-{split}.json"
        annotations = coco_dir / "annotations" / f"instances_{split}.json"
        annotations_sha256 = coco_splits[split]["annotations_sha256"]
        stamp = read_json(stamp_path) if stamp_path.is_file() else {}
        if stamp and _convert_still_valid(stamp, out_dir, annotations_sha256, shards):
            log.info("convert: %s already holds verified shards of %s; skipping", out_dir, annotations.name)
            manifest = read_json(out_dir / "manifest.json")
        else:
            from maskrcnn.data.convert import FORMAT_VERSION, convert

            all_cached = False
            manifest = convert(
                annotations=annotations,
                images_dir=coco_dir / split,
                out_dir=out_dir,
                split=split,
                shards=shards,
                workers=workers,
                strict=False,
            )
            write_json(
                stamp_path,
                {"format_version": FORMAT_VERSION, "annotations_sha256": annotations_sha256, "shards": shards,
                 "sizes": _shard_sizes(out_dir, manifest)},
            )
        summaries[split] = _split_summary(manifest)
        class_map = manifest["class_map"]
    return {
        "path": str(shards_root),
        "uri": volume_uri(shards_root, data_root, data_volume),
        "class_map": class_map,
        "num_classes": len(class_map),
        "splits": summaries,
        "cached": all_cached,
    }
