"""`safe_extract`: members that would land outside the target are refused before anything is written."""

from __future__ import annotations

import os
import stat
import zipfile

import pytest

from maskrcnn.data.extract import safe_extract
from maskrcnn.errors import UserError


def _zip(path, members):
    """``members``: ``(name, bytes)`` for files, ``(name, "->target")`` for symlinks, ``(name, None)`` for dirs."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members:
            info = zipfile.ZipInfo(name)
            if content is None:
                info.external_attr = (stat.S_IFDIR | 0o755) << 16
            elif isinstance(content, str):
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                content = content.removeprefix("->").encode()
            zf.writestr(info, content or b"")
    return path


def test_extracts_files_dirs_and_inner_symlinks(tmp_path):
    archive = _zip(tmp_path / "a.zip", [
        ("top/", None), ("top/sub/x.bin", b"\x00\x01" * 1000), ("top/y.txt", b"y"), ("top/link", "->sub/x.bin")])
    assert safe_extract(archive, tmp_path / "out", top_folder="top") == 2
    assert (tmp_path / "out/top/sub/x.bin").read_bytes() == b"\x00\x01" * 1000
    assert os.readlink(tmp_path / "out/top/link") == "sub/x.bin"
    assert (tmp_path / "out/top/link").read_bytes() == b"\x00\x01" * 1000


@pytest.mark.parametrize("members, why", [
    ([("top/ok", b"1"), ("top/../../evil", b"x")], "'..'"),
    ([("top/ok", b"1"), ("../evil", b"x")], "'..'"),
    ([("top/ok", b"1"), ("/etc/evil", b"x")], "absolute path"),
    ([("top/ok", b"1"), ("C:/evil", b"x")], "absolute path"),
    ([("top/ok", b"1"), ("top/link", "->../../evil")], "points outside"),
    ([("top/ok", b"1"), ("top/link", "->/etc/passwd")], "points outside"),
    ([("top/ok", b"1"), ("other/file", b"x")], "not under top/"),
])
def test_unsafe_members_are_refused_before_writing(tmp_path, members, why):
    archive = _zip(tmp_path / "bad.zip", members)
    with pytest.raises(UserError, match="refusing unsafe member") as error:
        safe_extract(archive, tmp_path / "work" / "out", top_folder="top")
    assert repr(members[-1][0]) in str(error.value) and why in str(error.value)
    assert list((tmp_path / "work").rglob("*")) in ([], [tmp_path / "work" / "out"])  # nothing written


def test_link_chain_leading_outside_is_refused(tmp_path):
    """Each link passes the name check, but the second one, created through the first, resolves outside."""
    archive = _zip(tmp_path / "chain.zip", [("top/up", "->.."), ("top/up/up2", "->.."), ("top/up/up2/evil", b"x")])
    with pytest.raises(UserError, match=r"'top/up/up2'.*resolves outside"):
        safe_extract(archive, tmp_path / "work" / "out", top_folder="top")
    assert not (tmp_path / "work" / "up2").exists() and not (tmp_path / "work" / "evil").exists()
    assert not (tmp_path / "work" / "out" / "up2").is_symlink()


def test_device_entry_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "dev.zip", "w") as zf:
        info = zipfile.ZipInfo("top/fifo")
        info.external_attr = (stat.S_IFIFO | 0o644) << 16
        zf.writestr(info, b"")
    with pytest.raises(UserError, match="device, FIFO"):
        safe_extract(tmp_path / "dev.zip", tmp_path / "out")


def test_not_a_zip_and_bad_crc_are_user_errors(tmp_path):
    (tmp_path / "junk.zip").write_bytes(b"not a zip at all")
    with pytest.raises(UserError, match="not a readable zip"):
        safe_extract(tmp_path / "junk.zip", tmp_path / "out1")

    archive = _zip(tmp_path / "crc.zip", [("top/a", b"A" * 1000)])
    data = bytearray(archive.read_bytes())
    data[data.index(b"A" * 100)] ^= 0xFF  # stored member: flip one content byte, the CRC no longer matches
    archive.write_bytes(bytes(data))
    with pytest.raises(UserError, match="not a readable zip .*CRC"):
        safe_extract(archive, tmp_path / "out2")
