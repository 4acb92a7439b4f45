"""`make_mirror`: COCO's archive names and inner layout, checksums.json, byte-identical output."""

from __future__ import annotations

import json
import os
import zipfile

import pytest

from maskrcnn.data.mirror import make_mirror
from maskrcnn.errors import UserError
from maskrcnn.utils.io import file_digest

from .archive_server import make_coco_dir

ARCHIVES = ["annotations_trainval2017.zip", "train2017.zip", "val2017.zip"]


def test_archives_have_coco_names_and_layout(tmp_path):
    coco = make_coco_dir(tmp_path / "coco")
    mirror = make_mirror(coco, tmp_path / "mirror")
    assert sorted(p.name for p in mirror.iterdir()) == sorted(ARCHIVES + ["checksums.json"])
    with zipfile.ZipFile(mirror / "annotations_trainval2017.zip") as zf:
        assert zf.namelist() == ["annotations/", "annotations/instances_train2017.json", "annotations/instances_val2017.json"]
        assert zf.read("annotations/instances_val2017.json") == (coco / "annotations/instances_val2017.json").read_bytes()
    with zipfile.ZipFile(mirror / "val2017.zip") as zf:
        assert zf.namelist() == ["val2017/"] + [f"val2017/{p.name}" for p in sorted((coco / "val2017").iterdir())]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist() if i.filename.endswith(".jpg"))
    checksums = json.loads((mirror / "checksums.json").read_text())
    assert checksums == {name: {"size": (mirror / name).stat().st_size, "md5": file_digest(mirror / name, "md5")}
                         for name in ARCHIVES}


def test_same_input_gives_same_bytes(tmp_path):
    coco = make_coco_dir(tmp_path / "coco")
    first = make_mirror(coco, tmp_path / "m1")
    for path in coco.rglob("*"):  # other timestamps must not change a byte
        os.utime(path, (1_700_000_000, 1_700_000_000))
    second = make_mirror(coco, tmp_path / "m2")
    for name in ARCHIVES + ["checksums.json"]:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    other = make_mirror(make_coco_dir(tmp_path / "coco2", seed=1), tmp_path / "m3")
    assert (other / "val2017.zip").read_bytes() != (first / "val2017.zip").read_bytes()


def test_not_a_coco_dir_is_a_user_error(tmp_path):
    coco = make_coco_dir(tmp_path / "coco")
    (coco / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(UserError, match="not a COCO dir: missing annotations/instances_val2017.json"):
        make_mirror(coco, tmp_path / "mirror")
    assert not (tmp_path / "mirror").exists()
