"""Reading the val shards, splitting them over ranks, and gathering results on rank 0."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from maskrcnn.errors import UserError
from maskrcnn.evaluate.inference import InferenceOutput, encoded_images, run_inference, shard_files
from maskrcnn.evaluate.run import _gather
from maskrcnn.utils.io import read_json


def _ids(files, rank, world):
    return [int(i) for ids, _ in encoded_images(files, 3, rank, world) for i in ids.numpy()]


def test_shard_files_follow_the_manifest(tiny_shards):
    val = tiny_shards / "val2017"
    files = shard_files(val)
    assert [f.rsplit("/", 1)[1] for f in files] == [s["file"] for s in read_json(val / "manifest.json")["shards"]]
    assert shard_files(str(val / "*.tfrecord")) == sorted(files)


def test_missing_shards_are_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no .tfrecord shards"):
        shard_files(tmp_path)


def test_ranks_split_the_images_without_overlap(tiny_shards, synth_coco):
    files = shard_files(tiny_shards / "val2017")
    everything = _ids(files, 0, 1)
    gt_ids = {i["id"] for i in read_json(synth_coco / "annotations" / "instances_val2017.json")["images"]}
    assert sorted(everything) == sorted(gt_ids)
    r0, r1 = _ids(files, 0, 2), _ids(files, 1, 2)
    assert not set(r0) & set(r1) and sorted(r0 + r1) == sorted(everything)


def test_inference_converts_every_image(tiny_shards):
    calls = []

    def predictor(images, mask_threshold, score_threshold):
        assert score_threshold == 0.0  # the COCO protocol scores every detection the model keeps
        calls.append((len(images), mask_threshold))
        return [SimpleNamespace(boxes=np.array([[1, 2, 5, 9]], np.float32), scores=np.array([0.9], np.float32),
                                category_ids=np.array([3]), masks=np.ones((1, 4, 4), np.uint8)) for _ in images]

    out = run_inference(predictor, shard_files(tiny_shards / "val2017"), batch_size=3, mask_threshold=0.4, num_samples=2)
    assert sum(n for n, _ in calls) == len(out.image_ids) == len(out.results) == 8
    assert {t for _, t in calls} == {0.4} and max(n for n, _ in calls) == 3
    assert [s[0] for s in out.samples] == out.image_ids[:2] and out.samples[0][1][:2] == b"\xff\xd8"  # JPEG bytes
    assert out.results[0]["bbox"] == [2.0, 1.0, 7.0, 4.0]


def test_gather_concatenates_every_rank():
    class FakeHorovod:
        @staticmethod
        def allgather_object(obj, name=None):
            return [obj, ([{"image_id": 9}], [9])]

    local = InferenceOutput(results=[{"image_id": 1}], image_ids=[1], samples=[(1, b"", None)])
    gathered = _gather(SimpleNamespace(size=2, hvd=FakeHorovod()), local)
    assert gathered.image_ids == [1, 9] and gathered.results == [{"image_id": 1}, {"image_id": 9}]
    assert gathered.samples == local.samples
    assert _gather(SimpleNamespace(size=1, hvd=None), local) is local
