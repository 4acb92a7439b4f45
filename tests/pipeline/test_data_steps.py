"""The download and convert steps' cache keyed by the data source (what makes a second run fast)."""

import shutil

import pytest

from maskrcnn.data.mirror import make_mirror
from maskrcnn.pipeline.data_steps import convert_step, dataset_dir, download_step


@pytest.fixture
def mirror(synth_coco, tmp_path):
    return make_mirror(synth_coco, tmp_path / "mirror")


def test_dataset_dir_is_keyed_by_the_source(tmp_path):
    a = dataset_dir(tmp_path, "s3://bucket/coco")
    assert a == dataset_dir(tmp_path, "s3://bucket/coco")
    assert a != dataset_dir(tmp_path, "s3://bucket/coco-v2")
    assert a.parent == tmp_path / "datasets" and a.name.startswith("coco-")
    assert dataset_dir(tmp_path, "").name.startswith("coco2017-")


def test_second_download_is_skipped_without_touching_the_source(mirror, tmp_path, synth_coco):
    first = download_step(source=str(mirror), data_root=str(tmp_path / "root"), data_volume="data-pvc")
    assert first["cached"] is False
    assert first["splits"]["val2017"]["images"] == first["splits"]["val2017"]["image_files"] == 8
    assert first["uri"].startswith("pvc://data-pvc/datasets/mirror-") and first["uri"].endswith("/coco")
    shutil.rmtree(mirror)  # a cache hit must not need the source at all
    second = download_step(source=str(mirror), data_root=str(tmp_path / "root"), data_volume="data-pvc")
    assert second["cached"] is True and second["path"] == first["path"]


def test_a_changed_copy_is_downloaded_again(mirror, tmp_path):
    first = download_step(source=str(mirror), data_root=str(tmp_path))
    victim = next((tmp_path / first["path"] / "val2017").iterdir())
    victim.unlink()
    second = download_step(source=str(mirror), data_root=str(tmp_path))
    assert second["cached"] is False and victim.is_file()
    assert download_step(source=str(mirror), data_root=str(tmp_path))["cached"] is True


def test_second_convert_is_skipped_and_tied_to_the_annotations(mirror, tmp_path):
    coco = download_step(source=str(mirror), data_root=str(tmp_path))
    kwargs = dict(coco_path=coco["path"], data_root=str(tmp_path), train_shards=2, val_shards=1, workers=1)
    first = convert_step(coco_splits=coco["splits"], **kwargs)
    assert first["cached"] is False
    assert first["splits"]["train2017"] == {"num_images": 24, "num_instances": first["splits"]["train2017"]["num_instances"],
                                            "num_skipped": 0, "shards": 2}
    assert first["num_classes"] == len(first["class_map"]) > 0
    shard = next((tmp_path / first["path"] / "train2017").glob("*.tfrecord"))
    mtime = shard.stat().st_mtime_ns
    assert convert_step(coco_splits=coco["splits"], **kwargs)["cached"] is True
    assert shard.stat().st_mtime_ns == mtime
    # Other shard counts, or shards from other annotations, are not the cached ones.
    assert convert_step(coco_splits=coco["splits"], **{**kwargs, "train_shards": 3})["cached"] is False
    changed = {split: {**facts, "annotations_sha256": "0" * 64} for split, facts in coco["splits"].items()}
    assert convert_step(coco_splits=changed, **kwargs)["cached"] is False


def test_shards_of_another_converter_version_are_rebuilt(mirror, tmp_path, monkeypatch):
    import maskrcnn.data.convert

    coco = download_step(source=str(mirror), data_root=str(tmp_path))
    kwargs = dict(coco_path=coco["path"], coco_splits=coco["splits"], data_root=str(tmp_path), train_shards=2,
                  val_shards=1, workers=1)
    assert convert_step(**kwargs)["cached"] is False
    monkeypatch.setattr(maskrcnn.data.convert, "FORMAT_VERSION", maskrcnn.data.convert.FORMAT_VERSION + 1)
    assert convert_step(**kwargs)["cached"] is False
    assert convert_step(**kwargs)["cached"] is True
