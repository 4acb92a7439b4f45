"""Our parallel COCOeval gives plain pycocotools' numbers exactly."""

from __future__ import annotations

import numpy as np
import pytest

from maskrcnn.evaluate.cocoeval import STAT_NAMES, evaluate_coco, load_ground_truth, partition_categories
from .coco_cases import exact_detections, faster_coco_eval_stats, ground_truth_and_detections, pycocotools_stats


@pytest.fixture(scope="module")
def case():
    return ground_truth_and_detections(seed=0)


# faster-coco-eval's C++ accumulate divides in another order than numpy: precision values can
# differ from pycocotools' in the last bit (2.2e-16), never more.
ULP_TOLERANCE = 1e-12


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_parallel_equals_pycocotools(case, workers):
    gt, dets = case
    ours = evaluate_coco(load_ground_truth(gt), dets, workers=workers)
    for iou_type in ("bbox", "segm"):
        ref_stats, ref_precision = pycocotools_stats(gt, dets, iou_type)
        np.testing.assert_allclose([ours[iou_type].stats[n] for n in STAT_NAMES], ref_stats, rtol=0, atol=ULP_TOLERANCE)
        np.testing.assert_allclose(ours[iou_type].precision, ref_precision, rtol=0, atol=ULP_TOLERANCE)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_parallel_merge_is_bitwise_equal_to_one_faster_coco_eval_run(case, iou_type):
    gt, dets = case
    ours = evaluate_coco(load_ground_truth(gt), dets, iou_types=[iou_type], workers=2)[iou_type]
    ref_stats, ref_precision = faster_coco_eval_stats(gt, dets, iou_type)
    assert [ours.stats[n] for n in STAT_NAMES] == ref_stats.tolist()
    np.testing.assert_array_equal(ours.precision, ref_precision)


def test_case_exercises_every_branch(case):
    gt, dets = case
    stats = evaluate_coco(load_ground_truth(gt), dets, workers=1)
    # perturbed, so neither perfect nor zero; every area range is populated
    for iou_type in ("bbox", "segm"):
        s = stats[iou_type].stats
        assert 0 < s["AP"] < 1
        assert all(s[k] > -1 for k in ("APs", "APm", "APl", "ARs", "ARm", "ARl"))
        assert s["AR1"] < s["AR10"] <= s["AR100"]
    per_cat = stats["bbox"].per_category_ap
    assert per_cat[9] == -1.0                  # ghost: no ground truth, no detections
    assert 0 <= per_cat[7] < 1                 # triangle: one detection for 11 instances


def test_detections_equal_to_ground_truth_give_ap_one(case):
    gt, _ = case
    ours = evaluate_coco(load_ground_truth(gt), exact_detections(gt), workers=2)
    for iou_type in ("bbox", "segm"):
        assert ours[iou_type].stats["AP"] == pytest.approx(1.0)
        assert ours[iou_type].stats["AP50"] == pytest.approx(1.0)
        assert ours[iou_type].stats["AR100"] == pytest.approx(1.0)


def test_empty_detections_do_not_crash(case):
    gt, _ = case
    ours = evaluate_coco(load_ground_truth(gt), [], workers=2)
    for iou_type in ("bbox", "segm"):
        ref_stats, _ = pycocotools_stats(gt, [], iou_type)
        np.testing.assert_allclose([ours[iou_type].stats[n] for n in STAT_NAMES], ref_stats, rtol=0, atol=ULP_TOLERANCE)
        assert ours[iou_type].stats["AP"] == 0.0


def test_unknown_category_is_rejected(case):
    gt, dets = case
    bad = [dict(dets[0], category_id=1234)]
    with pytest.raises(ValueError, match="1234"):
        evaluate_coco(load_ground_truth(gt), bad, workers=1)


def test_partition_is_disjoint_and_balanced():
    weights = {1: 100, 2: 90, 3: 10, 4: 10, 5: 5, 6: 1}
    groups = partition_categories(weights, 2)
    assert sorted(c for g in groups for c in g) == sorted(weights)
    loads = sorted(sum(weights[c] for c in g) for g in groups)
    assert loads == [106, 110]
    assert partition_categories({1: 3}, 4) == [[1]]


def test_generated_val_set_with_exact_detections_gives_ap_one(synth_coco):
    from maskrcnn.utils.io import read_json

    gt = read_json(synth_coco / "annotations" / "instances_val2017.json")
    ours = evaluate_coco(load_ground_truth(gt), exact_detections(gt), workers=2)
    for iou_type in ("bbox", "segm"):
        assert ours[iou_type].stats["AP"] == pytest.approx(1.0)
        assert ours[iou_type].stats["AR100"] == pytest.approx(1.0)


@pytest.mark.parametrize("workers", [1, 2])
def test_caller_detections_are_left_as_they_were(case, workers):
    import copy

    gt, dets = case
    before = copy.deepcopy(dets)
    evaluate_coco(load_ground_truth(gt), dets, workers=workers)
    assert dets == before
