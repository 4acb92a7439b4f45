"""model.tar.gz packaging and model sources: folder, archive, s3:// (moto), bad sources."""

from __future__ import annotations

import io
import tarfile

import pytest

from maskrcnn.errors import UserError
from maskrcnn.serve.model_source import resolve_model_dir
from maskrcnn.serve.package import package_model


def test_package_is_deterministic_with_files_at_the_root(standin_model_dir, tmp_path):
    a, b = package_model(standin_model_dir, tmp_path / "a.tar.gz"), package_model(standin_model_dir, tmp_path / "b.tar.gz")
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tar:
        names = tar.getnames()
        assert {"saved_model", "saved_model/saved_model.pb", "class_map.json", "config.yaml"} <= set(names)
        assert names == sorted(names)
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in tar.getmembers())


def test_package_needs_a_model_dir(tmp_path):
    with pytest.raises(UserError, match="saved_model"):
        package_model(tmp_path, tmp_path / "m.tar.gz")


def test_folder_and_archive_resolve_to_the_same_files(standin_model_dir, tmp_path):
    assert resolve_model_dir(standin_model_dir) == standin_model_dir
    archive = package_model(standin_model_dir, tmp_path / "model.tar.gz")
    local = resolve_model_dir(archive, cache_dir=tmp_path / "cache")
    assert (local / "saved_model" / "saved_model.pb").read_bytes() == (standin_model_dir / "saved_model" / "saved_model.pb").read_bytes()
    assert (local / "class_map.json").is_file()


def test_archive_with_path_traversal_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(UserError, match="not a readable model archive"):
        resolve_model_dir(archive, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize("source", ["/nonexistent/model", "s3://bucket-only"])
def test_bad_sources_are_user_errors(source, tmp_path):
    with pytest.raises(UserError):
        resolve_model_dir(source, cache_dir=tmp_path)


def test_s3_archive_and_prefix(standin_model_dir, tmp_path, monkeypatch):
    boto3 = pytest.importorskip("boto3")
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="models")
        archive = package_model(standin_model_dir, tmp_path / "model.tar.gz")
        s3.upload_file(str(archive), "models", "run1/model.tar.gz")
        for path in standin_model_dir.rglob("*"):
            if path.is_file():
                s3.upload_file(str(path), "models", f"run1/dir/{path.relative_to(standin_model_dir).as_posix()}")
        from_archive = resolve_model_dir("s3://models/run1/model.tar.gz", cache_dir=tmp_path / "c1")
        from_prefix = resolve_model_dir("s3://models/run1/dir", cache_dir=tmp_path / "c2")
        for local in (from_archive, from_prefix):
            assert (local / "saved_model" / "saved_model.pb").is_file() and (local / "class_map.json").is_file()
        with pytest.raises(UserError, match="no objects"):
            resolve_model_dir("s3://models/absent", cache_dir=tmp_path / "c3")
        with pytest.raises(UserError, match="cannot download"):
            resolve_model_dir("s3://models/absent.tar.gz", cache_dir=tmp_path / "c4")
