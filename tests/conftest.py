"""Session-wide fixtures shared by every test area: a generated COCO dir and its TFRecord shards."""

from __future__ import annotations

from pathlib import Path

import pytest

SYNTH_TRAIN, SYNTH_VAL, SYNTH_SEED = 24, 8, 0


@pytest.fixture(scope="session")
def synth_coco(tmp_path_factory) -> Path:
    """A generated COCO 2017 dir: 24 train2017 and 8 val2017 images (seed 0). Do not modify it."""
    from maskrcnn.data.synth import generate

    return generate(tmp_path_factory.mktemp("synth_coco"), train=SYNTH_TRAIN, val=SYNTH_VAL, seed=SYNTH_SEED)


@pytest.fixture(scope="session")
def tiny_shards(synth_coco, tmp_path_factory) -> Path:
    """``synth_coco`` converted: ``train2017/`` (4 shards) and ``val2017/`` (2 shards), each a shards dir."""
    from maskrcnn.data.convert import convert

    root = tmp_path_factory.mktemp("tiny_shards")
    for split, shards in (("train2017", 4), ("val2017", 2)):
        convert(annotations=synth_coco / "annotations" / f"instances_{split}.json", images_dir=synth_coco / split,
                out_dir=root / split, split=split, shards=shards, workers=1)
    return root
