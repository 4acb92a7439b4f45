"""COCO -> TFRecord conversion: round trip, determinism, resume, bad input, --strict."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from maskrcnn.cli import main
from maskrcnn.data.convert import convert
from maskrcnn.data.tfrecord import decode_example, read_records
from maskrcnn.errors import UserError
from maskrcnn.utils.io import file_digest, read_json


def _records(shards_dir: Path) -> list[dict]:
    manifest = read_json(shards_dir / "manifest.json")
    return [decode_example(r) for s in manifest["shards"] for r in read_records(shards_dir / s["file"])]


def _png(data: bytes) -> np.ndarray:
    return (np.asarray(Image.open(io.BytesIO(data)).convert("L")) > 0).astype(np.uint8)


@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_round_trip_matches_pycocotools(synth_coco, tiny_shards, split):
    coco = COCO(str(synth_coco / "annotations" / f"instances_{split}.json"))
    manifest = read_json(tiny_shards / split / "manifest.json")
    class_map = {int(k): v for k, v in manifest["class_map"].items()}
    assert [v["id"] for v in class_map.values()] == list(range(1, len(class_map) + 1))
    records = _records(tiny_shards / split)
    assert len(records) == manifest["num_images"] == len(coco.imgs) == manifest["num_input_images"]
    assert sum(len(r["image/object/mask"]) for r in records) == manifest["num_instances"] == len(coco.anns)
    for record in records:
        image_id = int(record["image/source_id"][0])
        info = coco.imgs[image_id]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert record["image/encoded"][0] == (synth_coco / split / info["file_name"]).read_bytes()
        assert record["image/filename"][0].decode() == info["file_name"]
        assert (record["image/height"][0], record["image/width"][0]) == (info["height"], info["width"])
        assert record["image/format"] == [b"jpeg"]
        w, h = info["width"], info["height"]
        for i, ann in enumerate(anns):
            np.testing.assert_array_equal(_png(record["image/object/mask"][i]), coco.annToMask(ann))
            x, y, bw, bh = ann["bbox"]
            got = [record[f"image/object/bbox/{k}"][i] for k in ("xmin", "ymin", "xmax", "ymax")]
            assert got == pytest.approx([x / w, y / h, min(x + bw, w) / w, min(y + bh, h) / h], abs=1e-6)
            assert record["image/object/class/label"][i] == class_map[ann["category_id"]]["id"]
            assert record["image/object/class/text"][i].decode() == class_map[ann["category_id"]]["name"]
            assert record["image/object/is_crowd"][i] == ann["iscrowd"]
            assert record["image/object/area"][i] == pytest.approx(ann["area"], rel=1e-6)
    for shard in manifest["shards"]:
        path = tiny_shards / split / shard["file"]
        assert sum(1 for _ in read_records(path)) == shard["records"]
        assert file_digest(path) == shard["sha256"]


def test_converting_again_is_byte_identical_whatever_the_workers(synth_coco, tiny_shards, tmp_path):
    out = tmp_path / "again"
    manifest = convert(annotations=synth_coco / "annotations" / "instances_train2017.json",
                       images_dir=synth_coco / "train2017", out_dir=out, split="train2017", shards=4, workers=2)
    reference = read_json(tiny_shards / "train2017" / "manifest.json")
    assert manifest["shards"] == reference["shards"]
    for shard in manifest["shards"]:
        assert (out / shard["file"]).read_bytes() == (tiny_shards / "train2017" / shard["file"]).read_bytes()


def test_resume_keeps_completed_shards(synth_coco, tiny_shards, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(tiny_shards / "val2017", out)
    (out / "manifest.json").unlink()                      # the run "died" before the manifest ...
    lost = out / "val2017-00001-of-00002.tfrecord"
    lost.unlink()                                         # ... and before finishing shard 1
    (out / "val2017-00001-of-00002.tfrecord.part").write_bytes(b"half a shard")
    kept = out / "val2017-00000-of-00002.tfrecord"
    kept_stat = kept.stat()
    manifest = convert(annotations=synth_coco / "annotations" / "instances_val2017.json",
                       images_dir=synth_coco / "val2017", out_dir=out, split="val2017", shards=2, workers=1)
    assert kept.stat().st_mtime_ns == kept_stat.st_mtime_ns and kept.stat().st_ino == kept_stat.st_ino
    assert lost.read_bytes() == (tiny_shards / "val2017" / lost.name).read_bytes()
    assert not (out / (lost.name + ".part")).exists()
    assert manifest == read_json(tiny_shards / "val2017" / "manifest.json") | {"source": manifest["source"]}

    # A shard whose bytes changed after it was written is rebuilt, not trusted.
    kept.write_bytes(b"tampered")
    convert(annotations=synth_coco / "annotations" / "instances_val2017.json", images_dir=synth_coco / "val2017",
            out_dir=out, split="val2017", shards=2, workers=1)
    assert kept.read_bytes() == (tiny_shards / "val2017" / kept.name).read_bytes()


def test_other_shard_count_replaces_old_shards(synth_coco, tmp_path):
    out = tmp_path / "reshard"
    args = dict(annotations=synth_coco / "annotations" / "instances_val2017.json", images_dir=synth_coco / "val2017",
                out_dir=out, split="val2017", workers=1)
    convert(shards=2, **args)
    manifest = convert(shards=3, **args)
    assert sorted(p.name for p in out.glob("*.tfrecord")) == [s["file"] for s in manifest["shards"]]
    assert sum(s["records"] for s in manifest["shards"]) == 8


# ----------------------------------------------------------------------------- bad input


def _save(image: Image.Image, path: Path, **kw) -> None:
    image.save(path, **kw)


@pytest.fixture(scope="module")
def bad_coco(synth_coco, tmp_path_factory):
    """A COCO dir with one problem of each kind (the ground truth of what the report must say)."""
    root = tmp_path_factory.mktemp("bad_coco")
    images = root / "images"
    images.mkdir()
    data = json.loads((synth_coco / "annotations" / "instances_val2017.json").read_text())
    good = data["images"][:3]
    for image in good:
        shutil.copy(synth_coco / "val2017" / image["file_name"], images / image["file_name"])
    src = Image.open(synth_coco / "val2017" / good[0]["file_name"])
    w, h = src.size
    raw = (synth_coco / "val2017" / good[0]["file_name"]).read_bytes()
    entries = {
        "missing.jpg": None,
        "corrupt.jpg": b"this is not an image" * 50,
        "truncated.jpg": raw[: len(raw) // 2],
        "gray.jpg": lambda p: _save(src.convert("L"), p, format="JPEG"),
        "cmyk.jpg": lambda p: _save(src.convert("CMYK"), p, format="JPEG"),
        "png.jpg": lambda p: _save(src, p, format="PNG"),
        "small.jpg": lambda p: _save(src.resize((w // 2, h // 2)), p, format="JPEG"),
    }
    new_images = []
    for i, (name, content) in enumerate(entries.items()):
        if callable(content):
            content(images / name)
        elif content is not None:
            (images / name).write_bytes(content)
        new_images.append({"id": 900 + i, "file_name": name, "width": w, "height": h})
    ids = {n["file_name"]: n["id"] for n in new_images}
    duplicate = dict(good[1], file_name="duplicate.jpg")
    bad_record = {"id": 990, "file_name": "no-size.jpg"}
    data["images"] = good + new_images + [duplicate, bad_record]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in {g["id"] for g in good}]
    first = good[0]["id"]
    square = [10, 10, 40, 10, 40, 40, 10, 40]
    base = {"image_id": first, "category_id": 1, "iscrowd": 0, "area": 900.0}
    data["annotations"] += [
        dict(base, id=5001, bbox=[w + 10, 5, 20, 20], segmentation=[square]),           # outside the image
        dict(base, id=5002, bbox=[10, 10, 0, 30], segmentation=[square]),                # zero size
        dict(base, id=5003, bbox=[10, 10, 30, 30], segmentation=[[10, 10, 40, 40]]),     # 2 points
        dict(base, id=5004, bbox=[10, 10, 30, 30], segmentation=[[10, 10, 20, 20, 30, 30]]),  # zero area
        dict(base, id=5005, bbox=[10, 10, 30, 30], segmentation=[square], category_id=99),  # unknown class
        dict(base, id=5006, bbox=[10, 10, 30, 30], segmentation=[square], image_id=424242),  # unknown image
        dict(base, id=5007, bbox=[-5, -5, 30, 30], segmentation=[square]),               # clipped, kept
        dict(base, id=5008, bbox=[10, 10, 30, 30], image_id=ids["gray.jpg"], segmentation=[square]),
    ]
    (root / "instances.json").write_text(json.dumps(data))
    return {"root": root, "annotations": root / "instances.json", "images": images, "ids": ids,
            "num_good": len(good), "first": first}


def test_bad_input_is_skipped_and_reported_by_reason(bad_coco, tmp_path):
    manifest = convert(annotations=bad_coco["annotations"], images_dir=bad_coco["images"], out_dir=tmp_path / "out",
                       split="val2017", shards=2, workers=2)
    ids = bad_coco["ids"]
    skipped = {reason: [e["image_id"] for e in entries] for reason, entries in manifest["skipped"].items()}
    assert skipped == {
        "missing_file": [ids["missing.jpg"]],
        "unreadable_image": [ids["corrupt.jpg"]],
        "truncated_image": [ids["truncated.jpg"]],
        "size_mismatch": [ids["small.jpg"]],
        "duplicate_image_id": [manifest_dup_id(bad_coco)],
        "bad_image_record": [990],
    }
    assert all(e["detail"] and e["file_name"] for entries in manifest["skipped"].values() for e in entries)
    instances = {reason: [e["annotation_id"] for e in entries] for reason, entries in manifest["skipped_instances"].items()}
    assert instances == {"box_outside_image": [5001], "zero_size_box": [5002], "degenerate_polygon": [5003, 5004],
                         "unknown_category": [5005], "unknown_image_id": [5006]}
    fixed = {reason: [e["image_id"] for e in entries] for reason, entries in manifest["fixed"].items()}
    assert fixed == {"grayscale": [ids["gray.jpg"]], "cmyk": [ids["cmyk.jpg"]], "not_jpeg": [ids["png.jpg"]]}

    # Every image is accounted for, and what was written decodes as 3-channel JPEG.
    assert manifest["num_images"] + manifest["num_skipped"] == manifest["num_input_images"] == 3 + 7 + 2
    assert manifest["num_images"] == bad_coco["num_good"] + 3
    import tensorflow as tf

    records = _records(tmp_path / "out")
    for record in records:
        image = tf.io.decode_jpeg(record["image/encoded"][0], channels=3)
        assert image.shape == (record["image/height"][0], record["image/width"][0], 3)
    by_id = {int(r["image/source_id"][0]): r for r in records}
    first = by_id[bad_coco["first"]]
    assert first["image/object/bbox/xmin"][-1] == 0.0 and first["image/object/bbox/ymin"][-1] == 0.0   # 5007 clipped
    assert len(by_id[ids["gray.jpg"]]["image/object/mask"]) == 1


def manifest_dup_id(bad_coco) -> int:
    data = json.loads(bad_coco["annotations"].read_text())
    return next(i["id"] for i in data["images"] if i["file_name"] == "duplicate.jpg")


@pytest.mark.parametrize("name, reason", [
    ("corrupt.jpg", "unreadable_image"), ("truncated.jpg", "truncated_image"), ("missing.jpg", "missing_file"),
])
def test_strict_stops_at_a_bad_image_naming_file_and_problem(bad_coco, tmp_path, name, reason):
    data = json.loads(bad_coco["annotations"].read_text())
    data["images"] = [i for i in data["images"] if i["file_name"] == name]
    data["annotations"] = []
    path = tmp_path / "one.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError) as err:
        convert(annotations=path, images_dir=bad_coco["images"], out_dir=tmp_path / "out", split="val2017",
                shards=1, workers=1, strict=True)
    message = str(err.value)
    assert name in message and reason in message and "\n" not in message
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_strict_cli_one_line_error_for_a_bad_instance(bad_coco, tmp_path, capsys):
    code = main(["data", "convert", "--annotations", str(bad_coco["annotations"]), "--images", str(bad_coco["images"]),
                 "--out", str(tmp_path / "out"), "--split", "val2017", "--shards", "1", "--workers", "1", "--strict"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "instances.json" in err[0]


def test_strict_fails_on_kept_shards_that_hold_skips(bad_coco, tmp_path):
    data = json.loads(bad_coco["annotations"].read_text())
    data["images"] = [i for i in data["images"] if i["file_name"] != "duplicate.jpg" and "width" in i]
    data["annotations"] = [a for a in data["annotations"] if a["id"] < 5000]   # only image-file problems left
    path = tmp_path / "files.json"
    path.write_text(json.dumps(data))
    args = dict(annotations=path, images_dir=bad_coco["images"], out_dir=tmp_path / "out", split="val2017",
                shards=1, workers=1)
    assert convert(**args)["num_skipped"] == 4
    with pytest.raises(UserError, match="missing.jpg: missing_file"):
        convert(strict=True, **args)


@pytest.mark.parametrize("content, match", [
    ('{"images": [', "malformed JSON"),
    ("[]", "not a COCO annotation file"),
    ('{"images": [], "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}', "appears twice"),
])
def test_unusable_annotation_file_is_a_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    for strict in (False, True):
        with pytest.raises(UserError, match=match):
            convert(annotations=path, images_dir=tmp_path, out_dir=tmp_path / "out", strict=strict)


def test_cli_converts_a_coco_dir(synth_coco, tmp_path, capsys):
    assert main(["data", "convert", "--coco-dir", str(synth_coco), "--split", "val2017", "--out", str(tmp_path),
                 "--shards", "1", "--workers", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_images"] == 8 and summary["shards"] == 1
    assert main(["data", "convert", "--out", str(tmp_path)]) == 2
