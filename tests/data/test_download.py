"""`download_coco` against a loopback HTTP server and a moto S3 server that the tests start themselves."""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import socket
import stat
import zipfile
from pathlib import Path

import pytest

from maskrcnn.data import download
from maskrcnn.data.download import Retry, download_coco
from maskrcnn.data.mirror import make_mirror
from maskrcnn.errors import UserError
from maskrcnn.utils.io import file_digest

from .archive_server import ArchiveServer, make_coco_dir, tree

FAST = Retry(attempts=3, first_wait_s=0.01, max_wait_s=0.01)
CUT = 150_000  # bytes sent before a cut connection (val2017.zip here is ~180 kB)


@pytest.fixture
def coco_dir(tmp_path) -> Path:
    return make_coco_dir(tmp_path / "coco", image_bytes=60_000)


@pytest.fixture
def mirror(tmp_path, coco_dir) -> Path:
    return make_mirror(coco_dir, tmp_path / "mirror")


@pytest.fixture
def server(mirror):
    with ArchiveServer(mirror) as running:
        yield running


def _val_only(coco_dir: Path) -> dict[str, bytes]:
    """What a val2017-only download must produce: the annotations folder and val2017/."""
    return {k: v for k, v in tree(coco_dir).items() if not k.startswith("train2017/")}


def test_http_mirror_round_trip(server, coco_dir, tmp_path):
    out = download_coco(tmp_path / "out", source=server.url, retry=FAST)
    assert tree(out) == tree(coco_dir)  # archives and .part files are gone, folders identical
    assert sorted(p.name for p in (out / ".download").glob("*.json")) == [
        "annotations_trainval2017.zip.json", "train2017.zip.json", "val2017.zip.json"]


def test_transfer_cut_midway_resumes_with_range(server, coco_dir, tmp_path):
    server.cut_after["val2017.zip"] = CUT
    out = download_coco(tmp_path / "out", source=server.url, splits=["val2017"], retry=FAST)
    first, second = server.requests_for("val2017.zip")
    assert (first.range, first.status, first.bytes_sent) == (None, 200, CUT)
    kept = _range_start(second.range)  # what the client had written when the connection dropped
    assert 0 < kept <= CUT and second.status == 206
    assert second.bytes_sent == (server.root / "val2017.zip").stat().st_size - kept
    assert tree(out) == _val_only(coco_dir)


def _range_start(header: str) -> int:
    match = re.fullmatch(r"bytes=(\d+)-", header)
    assert match, header
    return int(match.group(1))


def test_interrupted_run_resumes_from_part_file(server, coco_dir, tmp_path):
    server.cut_after["val2017.zip"] = CUT
    with pytest.raises(UserError, match=r"could not download val2017\.zip .*run again: it resumes from the \d+ bytes"):
        download_coco(tmp_path / "out", source=server.url, splits=["val2017"], retry=Retry(attempts=1))
    part = tmp_path / "out" / "val2017.zip.part"
    kept = part.stat().st_size
    assert 0 < kept <= CUT

    server.requests.clear()
    download_coco(tmp_path / "out", source=server.url, splits=["val2017"], retry=FAST)
    assert [(r.range, r.status) for r in server.requests_for("val2017.zip")] == [(f"bytes={kept}-", 206)]
    assert not part.exists()
    assert tree(tmp_path / "out") == _val_only(coco_dir)


def test_server_ignoring_range_restarts_from_zero(server, coco_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "val2017.zip.part").write_bytes(b"\0" * CUT)  # wrong bytes: appending to them would fail the MD5
    server.ignore_range = True
    download_coco(out, source=server.url, splits=["val2017"], retry=FAST)
    assert [(r.range, r.status) for r in server.requests_for("val2017.zip")] == [(f"bytes={CUT}-", 200)]
    assert tree(out) == _val_only(coco_dir)


def test_busy_server_is_retried(server, coco_dir, tmp_path):
    server.unavailable["val2017.zip"] = 2
    download_coco(tmp_path / "out", source=server.url, splits=["val2017"], retry=FAST)
    assert [r.status for r in server.requests_for("val2017.zip")] == [503, 503, 200]
    assert tree(tmp_path / "out") == _val_only(coco_dir)

    server.unavailable["val2017.zip"] = 3  # as many failures as attempts: give up with a clear error
    with pytest.raises(UserError, match=r"could not download val2017\.zip after 3 attempts .*HTTP 503"):
        download_coco(tmp_path / "out2", source=server.url, splits=["val2017"], retry=FAST)


def test_corrupted_archive_is_fetched_again_once(server, coco_dir, tmp_path, caplog):
    server.corrupt["val2017.zip"] = 1
    download_coco(tmp_path / "out", source=server.url, splits=["val2017"], retry=FAST)
    assert [r.range for r in server.requests_for("val2017.zip")] == [None, None]
    assert "fetching it again from the start" in caplog.text
    assert tree(tmp_path / "out") == _val_only(coco_dir)


def test_archive_corrupted_twice_is_a_clear_error(server, mirror, tmp_path):
    server.corrupt["val2017.zip"] = 2
    expected_md5 = json.loads((mirror / "checksums.json").read_text())["val2017.zip"]["md5"]
    with pytest.raises(UserError) as error:
        download_coco(tmp_path / "out", source=server.url, splits=["val2017"], retry=FAST)
    message = str(error.value)
    assert "val2017.zip" in message and "failed verification twice" in message
    assert f"md5 {expected_md5}" in message and "got " in message and "--checksums" in message
    assert len(server.requests_for("val2017.zip")) == 2
    out = tmp_path / "out"
    assert not (out / "val2017.zip").exists() and not (out / "val2017.zip.part").exists()
    assert not (out / "val2017").exists() and not (out / ".download" / "val2017.zip.json").exists()


def test_second_run_downloads_nothing(server, mirror, tmp_path):
    out = tmp_path / "out"
    download_coco(out, source=server.url, retry=FAST)
    before = tree(out)

    server.requests.clear()
    download_coco(out, source=server.url, retry=FAST)
    assert [r.path for r in server.requests] == ["/checksums.json"]  # the mirror's checksums, no archive

    server.requests.clear()
    download_coco(out, source=server.url, checksums=mirror / "checksums.json", retry=FAST)
    assert server.requests == []
    assert tree(out) == before


def test_kept_archive_is_not_fetched_again(server, coco_dir, tmp_path):
    out = tmp_path / "out"
    download_coco(out, source=server.url, splits=["val2017"], keep_archives=True, retry=FAST)
    assert (out / "val2017.zip").is_file()
    shutil.rmtree(out / "val2017")  # the marker is now stale: the folder must be extracted again

    server.requests.clear()
    download_coco(out, source=server.url, splits=["val2017"], keep_archives=True, retry=FAST)
    assert server.requests_for("val2017.zip") == []
    assert (out / "val2017").is_dir()
    assert {k: v for k, v in tree(out).items() if not k.endswith(".zip")} == _val_only(coco_dir)


def test_half_extracted_folder_is_redone(server, coco_dir, tmp_path):
    out = tmp_path / "out"
    download_coco(out, source=server.url, splits=["val2017"], retry=FAST)
    (out / ".download" / "val2017.zip.json").unlink()  # as if the run died while extracting
    next((out / "val2017").iterdir()).unlink()
    (out / "val2017" / "stray.tmp").write_bytes(b"x")

    server.requests.clear()
    download_coco(out, source=server.url, splits=["val2017"], retry=FAST)
    assert len(server.requests_for("val2017.zip")) == 1
    assert server.requests_for("annotations_trainval2017.zip") == []
    assert tree(out) == _val_only(coco_dir)


def test_folder_from_other_archives_is_replaced(server, tmp_path):
    """A new mirror (other data behind the same source) replaces what an older one extracted."""
    out = tmp_path / "out"
    download_coco(out, source=server.url, splits=["val2017"], retry=FAST)
    new_coco = make_coco_dir(tmp_path / "coco2", seed=1)
    make_mirror(new_coco, server.root)

    download_coco(out, source=server.url, splits=["val2017"], retry=FAST)
    assert tree(out) == _val_only(new_coco)


@pytest.mark.parametrize("member, kind", [
    ("val2017/../../escaped.txt", "'..'"),
    ("/tmp/absolute-escape.txt", "absolute path"),
    ("val2017/link", "symlink"),
])
def test_unsafe_archive_member_is_refused(server, mirror, tmp_path, member, kind):
    archive = mirror / "val2017.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("val2017/000000000001.jpg", b"fine")
        if kind == "symlink":
            info = zipfile.ZipInfo(member)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "../../outside")
        else:
            zf.writestr(member, b"evil")
    checksums = json.loads((mirror / "checksums.json").read_text())
    checksums["val2017.zip"] = {"size": archive.stat().st_size, "md5": file_digest(archive, "md5")}
    (mirror / "checksums.json").write_text(json.dumps(checksums))

    out = tmp_path / "work" / "out"
    with pytest.raises(UserError, match="refusing unsafe member") as error:
        download_coco(out, source=server.url, splits=["val2017"], retry=FAST)
    assert repr(member) in str(error.value) and kind in str(error.value)
    assert not (out / "val2017").exists() and not (out / ".download" / "val2017.zip.json").exists()
    assert not (tmp_path / "work" / "escaped.txt").exists() and not Path("/tmp/absolute-escape.txt").exists()
    assert not (out / ".val2017.zip.extracting").exists()  # the staging folder is cleaned up


def test_declared_size_mismatch_fails_before_transfer(server, mirror, tmp_path):
    wrong = json.loads((mirror / "checksums.json").read_text())
    wrong["val2017.zip"]["size"] += 1
    (tmp_path / "checksums.json").write_text(json.dumps(wrong))
    with pytest.raises(UserError, match=r"val2017\.zip is \d+ bytes, expected \d+ \(.*checksums\.json\)"):
        download_coco(tmp_path / "out", source=server.url, checksums=tmp_path / "checksums.json",
                      splits=["val2017"], retry=FAST)


def test_official_source_uses_coco_paths_and_published_checksums(mirror, tmp_path, monkeypatch):
    """With no --source: COCO's URL layout, built-in checksums, no checksums.json request."""
    host = tmp_path / "host"
    for name, relative in download.OFFICIAL_PATHS.items():
        (host / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mirror / name, host / relative)
    published = download.parse_checksums(json.loads((mirror / "checksums.json").read_text()), "published COCO 2017")
    with ArchiveServer(host) as official:
        monkeypatch.setattr(download, "OFFICIAL_BASE_URL", official.url)
        monkeypatch.setattr(download, "PUBLISHED", published)
        download_coco(tmp_path / "out", splits=["val2017"], retry=FAST)
        assert [r.path for r in official.requests] == ["/annotations/annotations_trainval2017.zip", "/zips/val2017.zip"]


def test_published_checksums_table_is_consistent():
    assert set(download.PUBLISHED) == set(download.OFFICIAL_PATHS)
    assert all(len(e.md5) == 32 and e.size > 0 for e in download.PUBLISHED.values())
    assert download.PUBLISHED["train2017.zip"].size > download.PUBLISHED["val2017.zip"].size


def test_local_folder_source(mirror, coco_dir, tmp_path):
    out = download_coco(tmp_path / "out", source=mirror)
    assert tree(out) == tree(coco_dir)
    assert tree(mirror) == tree(make_mirror(coco_dir, tmp_path / "again"))  # the source is left as it was


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("source, message", [
    ("ftp://example.org/coco", "unsupported source"),
    ("relative/missing-folder", "does not exist"),
    ("s3://", "names no bucket"),
    ("s3://no spaces/coco", "not a valid bucket name"),
])
def test_bad_source_is_a_user_error(tmp_path, source, message):
    with pytest.raises(UserError, match=message):
        download_coco(tmp_path / "out", source=source, retry=FAST)


def test_missing_archive_is_a_user_error(server, tmp_path):
    (server.root / "annotations_trainval2017.zip").unlink()
    with pytest.raises(UserError, match=r"annotations_trainval2017\.zip does not exist \(HTTP 404\)"):
        download_coco(tmp_path / "out", source=server.url, retry=FAST)


def test_unreachable_host_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="could not reach .* after 3 attempts"):
        download_coco(tmp_path / "out", source=f"http://127.0.0.1:{_free_port()}/coco", retry=FAST)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"val2017.zip": {"size": "12", "md5": "abc"}}', "must be"),
])
def test_malformed_checksums_file_is_a_user_error(mirror, tmp_path, content, message):
    (tmp_path / "checksums.json").write_text(content)
    with pytest.raises(UserError, match=message):
        download_coco(tmp_path / "out", source=mirror, checksums=tmp_path / "checksums.json")


def test_concurrent_download_into_same_dir_is_refused(mirror, tmp_path):
    out = tmp_path / "out"
    (out / ".download").mkdir(parents=True)
    with open(out / ".download" / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another download is running
        with pytest.raises(UserError, match="another `maskrcnn data download` is writing into"):
            download_coco(out, source=mirror)
    download_coco(out, source=mirror)  # released: proceeds


def test_too_little_disk_space_is_a_user_error(mirror, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=100))
    with pytest.raises(UserError, match=r"not enough disk space for annotations_trainval2017\.zip: .*choose another --out"):
        download_coco(tmp_path / "out", source=mirror)
    assert not (tmp_path / "out" / "annotations_trainval2017.zip.part").exists()


def test_unknown_split_is_a_user_error(mirror, tmp_path):
    with pytest.raises(UserError, match="unknown split"):
        download_coco(tmp_path / "out", source=mirror, splits=["test2017"])


# ---- S3 (moto's server mode on loopback) -------------------------------------------------------

@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    yield f"http://{host}:{port}"
    moto.stop()


@pytest.fixture
def s3_env(monkeypatch, tmp_path):
    """Fake credentials and a fresh default boto3 session, isolated from the developer's AWS config."""
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                       "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    return monkeypatch


@pytest.fixture
def s3_mirror(s3_endpoint, s3_env, mirror, tmp_path):
    """The mirror uploaded under s3://<fresh bucket>/mirrors/coco2017."""
    import boto3

    bucket = f"coco-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=bucket)
    for path in mirror.iterdir():
        client.upload_file(str(path), bucket, f"mirrors/coco2017/{path.name}")
    return f"s3://{bucket}/mirrors/coco2017"


def test_s3_resumes_with_ranged_get(s3_endpoint, s3_mirror, mirror, coco_dir, tmp_path):
    import boto3

    out = tmp_path / "out"
    out.mkdir()
    (out / "val2017.zip.part").write_bytes((mirror / "val2017.zip").read_bytes()[:CUT])  # an earlier run's part
    sent = []  # (object name, Range header) of every GetObject the downloader sends
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register(
        "before-send.s3.GetObject", lambda request, **_: sent.append((request.url.rsplit("/", 1)[-1], request.headers.get("Range"))))

    download_coco(out, source=s3_mirror, endpoint_url=s3_endpoint, splits=["val2017"], retry=FAST)
    assert [(name, _text(header)) for name, header in sent] == [
        ("checksums.json", None), ("annotations_trainval2017.zip", None), ("val2017.zip", f"bytes={CUT}-")]
    assert tree(out) == _val_only(coco_dir)


def _text(header: str | bytes | None) -> str | None:
    return header.decode() if isinstance(header, bytes) else header


def test_s3_endpoint_from_environment(s3_endpoint, s3_mirror, coco_dir, tmp_path, s3_env):
    s3_env.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    out = download_coco(tmp_path / "out", source=s3_mirror, splits=["val2017"], retry=FAST)
    assert tree(out) == _val_only(coco_dir)


def test_s3_missing_object_is_a_user_error(s3_endpoint, s3_mirror, tmp_path):
    with pytest.raises(UserError, match=r"s3://.*/elsewhere/annotations_trainval2017\.zip does not exist"):
        download_coco(tmp_path / "out", source=s3_mirror.rsplit("/", 1)[0] + "/elsewhere",
                      endpoint_url=s3_endpoint, retry=FAST)


def test_s3_without_credentials_is_a_user_error(s3_endpoint, s3_mirror, tmp_path, s3_env):
    import boto3

    s3_env.delenv("AWS_ACCESS_KEY_ID")
    s3_env.delenv("AWS_SECRET_ACCESS_KEY")
    s3_env.setattr(boto3, "DEFAULT_SESSION", None)
    with pytest.raises(UserError, match="no AWS credentials to read s3://"):
        download_coco(tmp_path / "out", source=s3_mirror, endpoint_url=s3_endpoint, retry=FAST)


# ---- command line -------------------------------------------------------------------------------

def test_cli_mirror_then_download(coco_dir, tmp_path, capsys):
    from maskrcnn.cli import main

    assert main(["data", "mirror", "--coco-dir", str(coco_dir), "--out", str(tmp_path / "m")]) == 0
    assert main(["data", "download", "--out", str(tmp_path / "out"), "--source", str(tmp_path / "m"),
                 "--splits", "val2017", "--keep-archives"]) == 0
    assert tree(tmp_path / "out") == {**_val_only(coco_dir),
                                      "annotations_trainval2017.zip": (tmp_path / "m" / "annotations_trainval2017.zip").read_bytes(),
                                      "val2017.zip": (tmp_path / "m" / "val2017.zip").read_bytes()}
    capsys.readouterr()
    assert main(["data", "download", "--out", str(tmp_path / "x"), "--source", "ftp://host/coco"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unsupported source") and "\n" not in err
