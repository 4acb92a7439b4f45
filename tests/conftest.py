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


TINY_MODEL_STEPS = 40


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_shards, tmp_path_factory) -> Path:
    """A model dir (``saved_model/``, ``class_map.json``, ``config.yaml``, ``checkpoints/``, ...) of the
    ``tiny`` preset trained TINY_MODEL_STEPS steps on ``tiny_shards`` and exported. Do not modify it."""
    from maskrcnn.config import get_config
    from maskrcnn.train.loop import run_training

    model_dir = tmp_path_factory.mktemp("tiny_model")
    cfg = get_config("tiny", [f"TRAIN.MAX_STEPS={TINY_MODEL_STEPS}", "TRAIN.WARMUP_STEPS=10", "TRAIN.LOG_EVERY=10"])
    run_training(cfg, tiny_shards / "train2017", model_dir)
    return model_dir
