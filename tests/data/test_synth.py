"""The generated COCO dataset: layout, determinism, and annotations that describe what is drawn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from maskrcnn.data import synth
from maskrcnn.errors import UserError


def _load(coco_dir, split):
    return json.loads((coco_dir / "annotations" / f"instances_{split}.json").read_text())


def test_layout_and_coco_fields(synth_coco):
    for split, count in (("train2017", 24), ("val2017", 8)):
        data = _load(synth_coco, split)
        assert set(data) == {"info", "licenses", "images", "annotations", "categories"}
        assert len(data["images"]) == count
        for image in data["images"]:
            with Image.open(synth_coco / split / image["file_name"]) as im:
                assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (image["width"], image["height"]))
            assert 160 <= image["width"] <= 320 and 160 <= image["height"] <= 320
        ids = [c["id"] for c in data["categories"]]
        assert ids != list(range(1, len(ids) + 1)), "category ids must be non-contiguous, like COCO's"
        assert {a["category_id"] for a in data["annotations"]} <= set(ids)
    train_ids = {i["id"] for i in _load(synth_coco, "train2017")["images"]}
    val_ids = {i["id"] for i in _load(synth_coco, "val2017")["images"]}
    assert not train_ids & val_ids
    sizes = {(i["width"], i["height"]) for i in _load(synth_coco, "train2017")["images"]}
    assert len(sizes) > 10, "image sizes must vary"


def test_same_seed_is_byte_identical_and_other_seed_differs(synth_coco, tmp_path):
    again = synth.generate(tmp_path / "again", train=3, val=1, seed=0)
    for split, n in (("train2017", 3), ("val2017", 1)):
        for image in _load(again, split)["images"][:n]:
            assert (again / split / image["file_name"]).read_bytes() == \
                (synth_coco / split / image["file_name"]).read_bytes()
    other = synth.generate(tmp_path / "other", train=3, val=0, seed=1)
    name = _load(other, "train2017")["images"][0]["file_name"]
    assert (other / "train2017" / name).read_bytes() != (synth_coco / "train2017" / name).read_bytes()
    # A prefix of a bigger set equals the smaller set: JSON and images alike.
    small = synth.generate(tmp_path / "small", train=3, val=1, seed=0)
    assert (small / "annotations" / "instances_train2017.json").read_bytes() == \
        (again / "annotations" / "instances_train2017.json").read_bytes()


def test_annotations_are_the_visible_regions(synth_coco):
    coco = COCO(str(synth_coco / "annotations" / "instances_train2017.json"))
    crowd = cut_by_border = occluded = 0
    for image_id, image in coco.imgs.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        masks = []
        for ann in anns:
            mask = coco.annToMask(ann)
            rle = mask_utils.encode(np.asfortranarray(mask))
            assert ann["area"] == pytest.approx(float(mask_utils.area(rle)))
            assert ann["bbox"] == pytest.approx(mask_utils.toBbox(rle).tolist())
            if ann["iscrowd"]:
                crowd += 1
                counts = ann["segmentation"]["counts"]
                assert isinstance(counts, list) and sum(counts) == image["width"] * image["height"]
                continue
            x, y, w, h = ann["bbox"]
            cut_by_border += x <= 0 or y <= 0 or x + w >= image["width"] or y + h >= image["height"]
            masks.append(mask.astype(bool))
        # Occlusion is resolved: visible masks of different objects share at most edge pixels.
        for i in range(len(masks)):
            for j in range(i + 1, len(masks)):
                shared = (masks[i] & masks[j]).sum()
                occluded += shared > 0
                assert shared <= 0.05 * min(masks[i].sum(), masks[j].sum())
    assert crowd >= 1 and cut_by_border >= 3 and occluded >= 1


def test_objects_are_learnably_sized(synth_coco):
    data = _load(synth_coco, "train2017")
    sizes = {i["id"]: min(i["width"], i["height"]) for i in data["images"]}
    per_image = {}
    for ann in data["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
        if not ann["iscrowd"]:
            assert max(ann["bbox"][2:]) >= 0.1 * sizes[ann["image_id"]]
    assert max(per_image.values()) <= 7 and len(per_image) == len(data["images"])


def test_uncompressed_rle_round_trips():
    mask = np.zeros((5, 4), np.uint8)
    mask[0, 0] = mask[1:3, 2] = 1
    rle = synth.uncompressed_rle(mask)
    assert rle["size"] == [5, 4] and sum(rle["counts"]) == 20 and rle["counts"][0] == 0
    decoded = mask_utils.decode(mask_utils.frPyObjects(rle, 5, 4))
    np.testing.assert_array_equal(decoded, mask)


def test_bad_arguments():
    with pytest.raises(UserError, match="counts"):
        synth.generate("/tmp/unused", train=-1)


def test_cli_fixed_image_size(tmp_path, capsys):
    from maskrcnn.cli import main

    assert main(["data", "synth", "--out", str(tmp_path), "--train", "2", "--val", "1", "--image-size", "64x48"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path)
    images = _load(tmp_path, "train2017")["images"] + _load(tmp_path, "val2017")["images"]
    assert {(i["width"], i["height"]) for i in images} == {(64, 48)}
    assert all((tmp_path / s).is_dir() for s in ("train2017", "val2017", "annotations"))
