"""Unpack a zip archive without letting any member land outside the target folder.

Every member is checked before anything is written, so a refused archive leaves nothing behind:
no ``..`` components, no absolute paths or drive letters, no symlink whose target leaves the
folder, no device or FIFO entries, and (optionally) nothing outside one expected top folder.
Zip has no hard links; symlinks (Unix mode bits in ``external_attr``) are recreated only when
they point inside the folder, as ``unzip`` does. Each write is re-checked against the real path,
so a chain of links cannot lead out either.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import zipfile
from pathlib import Path

from tqdm import tqdm

from maskrcnn.errors import UserError



def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, *, top_folder: str | None = None) -> int:
    """Extract ``archive`` into the folder ``dest`` (created); returns the number of files written.

    ``top_folder``: when given, every member must lie under ``top_folder/`` (COCO's archives
    each hold one folder). Raises ``UserError`` naming the first unsafe member, or for an archive
    that is not a readable zip.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            links = {info.filename: _link_target(zf, info) for info in members if _is_symlink(info)}
            for info in members:
                _check_member(archive, info, links.get(info.filename), top_folder)
            dest.mkdir(parents=True, exist_ok=True)
            _check_free_space(archive, dest, sum(info.file_size for info in members))
            return _write_members(zf, members, links, archive, dest)
    except zipfile.BadZipFile as e:
        raise UserError(f"{archive} is not a readable zip archive ({e}): delete it and download again") from e


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _link_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    return zf.read(info).decode("utf-8", errors="surrogateescape")


def _refuse(archive: Path, member: str, why: str) -> UserError:
    return UserError(f"{archive.name}: refusing unsafe member {member!r} ({why}); nothing was extracted: "
                     "the archive is not a genuine one, fetch it from a trusted source")


def _check_member(archive: Path, info: zipfile.ZipInfo, link_target: str | None, top_folder: str | None) -> None:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if "\x00" in name or not name:
        raise _refuse(archive, name, "empty name or NUL byte")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise _refuse(archive, name, "absolute path")
    if ".." in parts:
        raise _refuse(archive, name, "'..' leads outside the target folder")
    if top_folder is not None and parts[0] != top_folder:
        raise _refuse(archive, name, f"not under {top_folder}/")
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
        raise _refuse(archive, name, "device, FIFO or socket entry")
    if link_target is not None:
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), link_target))
        if link_target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise _refuse(archive, name, f"symlink to {link_target!r} points outside the target folder")


def _check_free_space(archive: Path, dest: Path, needed: int) -> None:
    free = shutil.disk_usage(dest).free
    if needed > free:
        raise UserError(f"not enough disk space to extract {archive.name}: needs {needed / 1e9:.1f} GB, "
                        f"{free / 1e9:.1f} GB free in {dest}; free some space or choose another --out")


def _write_members(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], links: dict[str, str],
                   archive: Path, dest: Path) -> int:
    root = os.path.realpath(dest)
    written = 0
    with tqdm(total=sum(i.file_size for i in members), unit="B", unit_scale=True, unit_divisor=1024,
              desc=f"extract {archive.name}", mininterval=0.5) as bar:
        for info in members:
            target = dest / info.filename
            # Re-check through the real filesystem: a link extracted earlier may sit on the path.
            if not _inside(root, os.path.realpath(target.parent)):
                raise _refuse(archive, info.filename, "its folder resolves outside the target through a symlink")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if info.filename in links:
                target.unlink(missing_ok=True)
                os.symlink(links[info.filename], target)
                if not _inside(root, os.path.realpath(target)):
                    target.unlink()
                    raise _refuse(archive, info.filename, "symlink resolves outside the target folder")
                continue
            with zf.open(info) as src, open(target, "wb") as out:  # zipfile checks each CRC-32
                shutil.copyfileobj(src, out, 1 << 20)
            written += 1
            bar.update(info.file_size)
    return written


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)
