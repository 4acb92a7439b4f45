"""LR schedule: warmup, decay points, and scaling with the number of processes."""

import pytest

from maskrcnn.config import get_config, schedule
from maskrcnn.train.lr_schedule import learning_rate


def _lr(step, sched, cfg):
    return float(learning_rate(step, sched, warmup_factor=cfg.TRAIN.WARMUP_FACTOR, decay_factor=cfg.TRAIN.LR_DECAY_FACTOR))


def test_reference_recipe_warmup_and_decay_points():
    # r50-fpn-1x on COCO train2017 (118,287 images) with 8 processes x 4 images: Detectron's 1x.
    cfg = get_config("r50-fpn-1x")
    sched = schedule(cfg, world_size=8, num_train_images=118287)
    assert sched.global_batch == 32
    assert sched.learning_rate == pytest.approx(0.0025 * 32)
    assert sched.steps_per_epoch == 118287 // 32
    assert sched.decay_steps == (round(8 * 3696), round(11 * 3696))
    peak = sched.learning_rate
    assert _lr(0, sched, cfg) == pytest.approx(peak * 0.001)
    # linear: halfway through warmup is the midpoint of the factor and 1
    assert _lr(500, sched, cfg) == pytest.approx(peak * (0.001 + 0.999 * 0.5), rel=1e-5)
    assert _lr(1000, sched, cfg) == pytest.approx(peak)
    d1, d2 = sched.decay_steps
    assert _lr(d1 - 1, sched, cfg) == pytest.approx(peak)
    assert _lr(d1, sched, cfg) == pytest.approx(peak * 0.1, rel=1e-5)
    assert _lr(d2 - 1, sched, cfg) == pytest.approx(peak * 0.1, rel=1e-5)
    assert _lr(d2, sched, cfg) == pytest.approx(peak * 0.01, rel=1e-5)
    assert _lr(sched.total_steps - 1, sched, cfg) == pytest.approx(peak * 0.01, rel=1e-5)


@pytest.mark.parametrize("world_size", [1, 2, 4, 16])
def test_adding_processes_scales_lr_and_keeps_epochs(world_size):
    cfg = get_config("tiny")
    images = 1600
    sched = schedule(cfg, world_size=world_size, num_train_images=images)
    batch = cfg.TRAIN.BATCH_PER_GPU * world_size
    assert sched.global_batch == batch
    assert sched.learning_rate == pytest.approx(cfg.TRAIN.BASE_LR_PER_IMAGE * batch)
    assert sched.steps_per_epoch == images // batch
    # the same number of epochs (images seen) whatever the world size
    assert sched.total_steps * batch == pytest.approx(cfg.TRAIN.EPOCHS * images, rel=0.02)
    assert _lr(sched.warmup_steps, sched, cfg) == pytest.approx(sched.learning_rate)


def test_max_steps_keeps_decay_at_the_same_fraction():
    cfg = get_config("tiny", ["TRAIN.MAX_STEPS=300"])
    sched = schedule(cfg, world_size=1, num_train_images=100)
    assert sched.total_steps == 300
    assert sched.decay_steps == (200, 270)  # 20/30 and 27/30 of the run
    assert _lr(199, sched, cfg) > _lr(200, sched, cfg) > _lr(270, sched, cfg)


def test_warmup_longer_than_training_is_clipped():
    cfg = get_config("tiny", ["TRAIN.MAX_STEPS=10", "TRAIN.WARMUP_STEPS=50"])
    sched = schedule(cfg, world_size=1, num_train_images=100)
    assert sched.warmup_steps == 10
    assert _lr(10, sched, cfg) == pytest.approx(sched.learning_rate * cfg.TRAIN.LR_DECAY_FACTOR ** 2)
