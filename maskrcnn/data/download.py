"""Download COCO 2017 into the COCO dir layout: resumable, verified, idempotent, atomic.

For each archive (``annotations_trainval2017.zip`` and one zip per split) the steps are:

1. **Skip** it when its folder was completely extracted before: a marker under
   ``OUT/.download/`` (written after extraction) records the archive's size and MD5 and must match
   what is expected now, so a half-extracted folder, or one from other archives (a different
   mirror), is redone.
2. **Fetch** into ``OUT/<archive>.part``, resuming from the bytes already there (HTTP ``Range``,
   ranged S3 GET, ``seek``); connection failures are retried with exponential back-off, and a
   server that ignores ``Range`` is read again from byte 0. The MD5 is computed while writing.
3. **Verify** size and MD5, then rename ``.part`` to ``OUT/<archive>``. A mismatch deletes the
   file and fetches it once more from the start; a second mismatch is a ``UserError`` naming the
   archive, the expected and the received size and MD5. An archive already present and verified
   is not fetched again.
4. **Extract** safely (``maskrcnn.data.extract``) into a temporary folder, rename it into place,
   write the marker, and delete the archive unless ``keep_archives`` (COCO's zips are as large as
   their contents: keeping both doubles the 20 GB; keep them to seed a mirror).

Expected sizes and MD5s: the published values below, overridden by a mirror's own
``checksums.json`` when the source has one, overridden by an explicit ``checksums`` file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from tqdm import tqdm

from maskrcnn.data.extract import safe_extract
from maskrcnn.data.sources import HttpSource, Source, TransientError, open_source
from maskrcnn.errors import UserError
from maskrcnn.utils.io import file_digest, read_json, write_json

log = logging.getLogger(__name__)

SPLITS = ("train2017", "val2017")
ANNOTATIONS_ARCHIVE = "annotations_trainval2017.zip"
CHECKSUMS_FILE = "checksums.json"
MARKER_DIR = ".download"

# The official host, as published on https://cocodataset.org/#download. Plain HTTP is what the
# host serves with a valid certificate; integrity comes from the size and MD5 checks.
OFFICIAL_BASE_URL = "http://images.cocodataset.org"
OFFICIAL_PATHS = {
    "train2017.zip": "zips/train2017.zip",
    "val2017.zip": "zips/val2017.zip",
    ANNOTATIONS_ARCHIVE: "annotations/annotations_trainval2017.zip",
}


@dataclass(frozen=True)
class Expected:
    """What an archive must be: its size in bytes and MD5, and where that expectation came from."""

    size: int
    md5: str
    origin: str


# Published COCO 2017 archives: sizes as served by images.cocodataset.org, MD5s as listed by
# PaddleDetection, the R torchvision port and MLCommons' dataset scripts (they agree).
PUBLISHED = {
    "train2017.zip": Expected(19_336_861_798, "cced6f7f71b7629ddf16f17bbcfab6b2", "published COCO 2017"),
    "val2017.zip": Expected(815_585_330, "442b8da7639aecaf257c1dceb8ba8c80", "published COCO 2017"),
    ANNOTATIONS_ARCHIVE: Expected(252_907_541, "f4bbac642086de4f52a3fdda2de5fa2c", "published COCO 2017"),
}


@dataclass(frozen=True)
class Retry:
    """How often and how patiently a failed transfer is retried (resuming each time).

    The count resets whenever an attempt received bytes, so a long download over a flaky link
    keeps going as long as it makes progress.
    """

    attempts: int = 5
    first_wait_s: float = 1.0
    max_wait_s: float = 30.0

    def wait_s(self, failures: int) -> float:
        return min(self.max_wait_s, self.first_wait_s * 2 ** (failures - 1))


def archive_for_split(split: str) -> str:
    return f"{split}.zip"


def folder_of(archive: str) -> str:
    """The one top-level folder an archive unpacks to (COCO's layout)."""
    return "annotations" if archive == ANNOTATIONS_ARCHIVE else archive.removesuffix(".zip")


def archives_for(splits: Sequence[str]) -> list[str]:
    """The annotations archive (it holds every split's annotations) and one image zip per split."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise UserError(f"unknown split(s) {', '.join(unknown)}: choose from {', '.join(SPLITS)}")
    return [ANNOTATIONS_ARCHIVE] + [archive_for_split(s) for s in dict.fromkeys(splits)]


def parse_checksums(obj: object, origin: str) -> dict[str, Expected]:
    """``{archive: {"size": int, "md5": str}}`` -> ``{archive: Expected}``; a malformed file is a UserError."""
    if not isinstance(obj, dict):
        raise UserError(f"{origin}: expected a JSON object {{archive: {{\"size\": int, \"md5\": str}}}}")
    parsed = {}
    for name, entry in obj.items():
        size = entry.get("size") if isinstance(entry, dict) else None
        md5 = entry.get("md5") if isinstance(entry, dict) else None
        valid_md5 = isinstance(md5, str) and len(md5) == 32 and all(c in "0123456789abcdef" for c in md5.lower())
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or not valid_md5:
            raise UserError(f"{origin}: entry {name!r} must be {{\"size\": <bytes>, \"md5\": <32 hex digits>}}, got {entry!r}")
        parsed[name] = Expected(size, md5.lower(), origin)
    return parsed


def resolve_checksums(source: Source, checksums: str | os.PathLike | None, official: bool,
                      retry: Retry = Retry()) -> dict[str, Expected]:
    """Published values, then the source's ``checksums.json`` (mirrors), then an explicit file."""
    expected = dict(PUBLISHED)
    if checksums is not None:
        path = Path(checksums)
        try:
            expected.update(parse_checksums(read_json(path), str(path)))
        except FileNotFoundError:
            raise UserError(f"checksums file {path} does not exist") from None
        except json.JSONDecodeError as e:
            raise UserError(f"checksums file {path} is not valid JSON: {e}") from None
    elif not official:
        raw = _with_retries(lambda: source.read_optional(CHECKSUMS_FILE), source.location(CHECKSUMS_FILE), retry)
        if raw is not None:
            where = source.location(CHECKSUMS_FILE)
            try:
                expected.update(parse_checksums(json.loads(raw), where))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise UserError(f"{where} is not valid JSON: {e}") from None
    return expected


def download_coco(
    out_dir: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    checksums: str | os.PathLike | None = None,
    splits: Sequence[str] = SPLITS,
    endpoint_url: str | None = None,
    keep_archives: bool = False,
    retry: Retry = Retry(),
) -> Path:
    """Fetch, verify and extract COCO 2017 into ``out_dir`` (the COCO dir); returns ``out_dir``.

    ``source``: ``None`` (the official host), an ``http(s)://`` base URL or a local folder holding
    the archives side by side, or ``s3://bucket/prefix`` (``endpoint_url`` for S3-compatible
    stores). ``checksums``: a JSON file ``{archive: {"size": int, "md5": str}}``. After it returns,
    ``annotations/instances_{split}.json`` and ``{split}/`` exist for every split in ``splits``.
    """
    out_dir = Path(out_dir)
    official = source is None
    src = HttpSource(OFFICIAL_BASE_URL, OFFICIAL_PATHS) if official else open_source(source, endpoint_url=endpoint_url)
    names = archives_for(splits)
    try:
        with _exclusive(out_dir):
            expected = resolve_checksums(src, checksums, official, retry)
            for name in names:
                _ensure_extracted(src, name, expected[name], out_dir, keep_archives, retry)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"disk full while writing {e.filename or out_dir}: free some space and run again "
                            "(finished archives and folders are kept), or choose another --out") from e
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UserError(f"cannot write {e.filename or out_dir} ({e.strerror}): choose a writable --out") from e
        raise
    _check_layout(out_dir, splits)
    log.info("COCO 2017 %s ready in %s", ", ".join(splits), out_dir)
    return out_dir


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold an advisory lock on ``out_dir`` so two downloads never write the same ``.part`` file.

    ``flock`` is released by the kernel when the process ends, so a crash leaves no stale lock.
    """
    lock_path = out_dir / MARKER_DIR / "lock"
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out_dir} ({e.strerror}): choose a writable --out") from e
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `maskrcnn data download` is writing into {out_dir}: "
                            "wait for it to finish, or choose another --out") from None
        yield


def _ensure_extracted(src: Source, name: str, expected: Expected, out_dir: Path, keep: bool, retry: Retry) -> None:
    folder = out_dir / folder_of(name)
    if is_extracted(out_dir, name, expected):
        log.info("%s: already extracted in %s, skipping", name, folder)
        return
    archive = fetch_archive(src, name, expected, out_dir, retry)
    extract_into_place(archive, out_dir, expected)
    if not keep:
        archive.unlink()
        log.info("%s: deleted after extraction (keep it with --keep-archives)", name)


def _marker(out_dir: Path, name: str) -> Path:
    return out_dir / MARKER_DIR / f"{name}.json"


def is_extracted(out_dir: Path, name: str, expected: Expected) -> bool:
    """True when ``name`` was completely extracted from an archive of the expected size and MD5."""
    marker = _marker(out_dir, name)
    if not marker.is_file() or not (out_dir / folder_of(name)).is_dir():
        return False
    try:
        record = read_json(marker)
    except (OSError, json.JSONDecodeError):
        return False
    return record.get("size") == expected.size and record.get("md5") == expected.md5


def fetch_archive(src: Source, name: str, expected: Expected, out_dir: Path, retry: Retry = Retry()) -> Path:
    """``out_dir/name``, verified against ``expected``: kept if already there, fetched otherwise."""
    dest = out_dir / name
    if dest.is_file():
        if dest.stat().st_size == expected.size and file_digest(dest, "md5") == expected.md5:
            log.info("%s: already downloaded and verified", name)
            return dest
        log.warning("%s: the file in %s does not match %s; downloading it again", name, out_dir, expected.origin)
        dest.unlink()
    part = out_dir / f"{name}.part"
    for attempt in (1, 2):
        size, md5 = _transfer(src, name, part, expected, retry)
        if (size, md5) == (expected.size, expected.md5):
            os.replace(part, dest)
            log.info("%s: %d bytes, md5 %s verified", name, size, md5)
            return dest
        part.unlink()
        if attempt == 1:
            log.warning("%s: got %d bytes md5 %s, expected %d bytes md5 %s; fetching it again from the start",
                        name, size, md5, expected.size, expected.md5)
    raise UserError(
        f"{name} from {src.location(name)} failed verification twice: expected {expected.size} bytes md5 "
        f"{expected.md5} ({expected.origin}), got {size} bytes md5 {md5}; the source holds a different or "
        "damaged file: fix the source, or pass --checksums FILE if it is a deliberately different archive"
    )


class _PartFile:
    """The ``.part`` file being written, with the running MD5 of its content."""

    def __init__(self, path: Path):
        self.path = path
        self.md5 = hashlib.md5()
        self.size = 0
        if path.is_file():  # left by an interrupted run: hash what is there, then append
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    self.md5.update(chunk)
                    self.size += len(chunk)

    def restart(self) -> None:
        self.path.unlink(missing_ok=True)
        self.md5, self.size = hashlib.md5(), 0

    def append(self, f, chunk: bytes) -> None:
        f.write(chunk)
        self.md5.update(chunk)
        self.size += len(chunk)


def _transfer(src: Source, name: str, part_path: Path, expected: Expected, retry: Retry) -> tuple[int, str]:
    """Bring ``part_path`` to ``expected.size`` bytes, resuming and retrying; returns (size, md5)."""
    part = _PartFile(part_path)
    if part.size > expected.size:
        part.restart()
    if part.size:
        log.info("%s: resuming at byte %d of %d", name, part.size, expected.size)
    _check_free_space(part_path.parent, expected.size - part.size, name)
    failures = 0
    with tqdm(total=expected.size, initial=part.size, unit="B", unit_scale=True, unit_divisor=1024,
              desc=name, mininterval=0.5) as bar:
        while part.size < expected.size:
            before = part.size
            try:
                _receive(src, name, part, expected, bar)
                if part.size < expected.size:
                    raise TransientError(f"{src.location(name)}: the transfer ended after {part.size} of {expected.size} bytes")
            except TransientError as e:
                failures = 1 if part.size > before else failures + 1
                if failures >= retry.attempts:
                    raise UserError(
                        f"could not download {name} after {failures} attempts ({e}); check the network and "
                        f"the source, then run again: it resumes from the {part.size} bytes in {part_path}"
                    ) from e
                wait = retry.wait_s(failures)
                log.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", name, e, wait, failures + 1, retry.attempts)
                time.sleep(wait)
    return part.size, part.md5.hexdigest()


def _receive(src: Source, name: str, part: _PartFile, expected: Expected, bar: tqdm) -> None:
    """One request: append what the source sends after ``part.size`` (or restart if it sends from 0)."""
    with src.open(name, part.size) as stream:
        if stream.total is not None and stream.total != expected.size:
            raise UserError(
                f"{src.location(name)} is {stream.total} bytes, expected {expected.size} ({expected.origin}): "
                "the source holds a different file: fix the source, or pass --checksums FILE for it"
            )
        if stream.start != part.size:
            log.warning("%s: the source ignored the byte range; downloading from the start", name)
            part.restart()
            bar.reset(total=expected.size)
        with open(part.path, "ab") as f:
            for chunk in stream.chunks:
                part.append(f, chunk)
                bar.update(len(chunk))
                if part.size > expected.size:
                    return  # the source sends more than expected: verification reports it


def _check_free_space(folder: Path, needed: int, name: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UserError(f"not enough disk space for {name}: needs {needed / 1e9:.1f} GB more, "
                        f"{free / 1e9:.1f} GB free in {folder}; free some space or choose another --out")


def _with_retries(call, what: str, retry: Retry):
    """``call()`` retried on ``TransientError`` with back-off, then a UserError naming ``what``."""
    for failures in range(1, retry.attempts + 1):
        try:
            return call()
        except TransientError as e:
            if failures == retry.attempts:
                raise UserError(f"could not reach {what} after {failures} attempts ({e}): check the network and --source") from e
            time.sleep(retry.wait_s(failures))


def extract_into_place(archive: Path, out_dir: Path, expected: Expected) -> Path:
    """Unpack ``archive`` next to itself via a temporary folder, rename its folder into place, mark it done."""
    name, folder = archive.name, folder_of(archive.name)
    _marker(out_dir, name).unlink(missing_ok=True)
    staging = out_dir / f".{name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        count = safe_extract(archive, staging, top_folder=folder)
        if not (staging / folder).is_dir():
            raise UserError(f"{name} holds no {folder}/ folder: it is not a COCO 2017 archive; check --source")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final = out_dir / folder
    if final.exists():
        log.warning("%s: replacing %s, which was not completely extracted from this archive", name, final)
        shutil.rmtree(final)
    os.replace(staging / folder, final)
    shutil.rmtree(staging)
    write_json(_marker(out_dir, name), {"archive": name, "size": expected.size, "md5": expected.md5, "files": count})
    log.info("%s: extracted %d files into %s", name, count, final)
    return final


def _check_layout(out_dir: Path, splits: Sequence[str]) -> None:
    for split in splits:
        annotations = out_dir / "annotations" / f"instances_{split}.json"
        if not annotations.is_file():
            raise UserError(f"{ANNOTATIONS_ARCHIVE} has no annotations/instances_{split}.json: "
                            "the source does not hold COCO 2017 archives for this split")

