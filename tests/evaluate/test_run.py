"""`maskrcnn evaluate` end to end on the real tiny model, and the server giving the same answers."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest

from maskrcnn.cli import main
from maskrcnn.evaluate.cocoeval import STAT_NAMES
from maskrcnn.utils.io import read_json

from notebook_client import rle_to_binary_mask

from .coco_cases import pycocotools_stats

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def eval_dir(tiny_model_dir, tiny_shards, synth_coco, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    code = main(["evaluate", "--model-dir", str(tiny_model_dir), "--data", str(tiny_shards / "val2017"),
                 "--annotations", str(synth_coco / "annotations" / "instances_val2017.json"), "--out", str(out),
                 "--samples", "2"])
    assert code == 0
    return out


def test_eval_dir_is_complete(eval_dir, synth_coco):
    gt = read_json(synth_coco / "annotations" / "instances_val2017.json")
    metrics = read_json(eval_dir / "metrics.json")
    for iou_type in ("bbox", "segm"):
        assert list(metrics[iou_type]) == list(STAT_NAMES)
        assert all(-1 <= v <= 1 for v in metrics[iou_type].values())
    assert set(metrics["per_class"]) == {c["name"] for c in gt["categories"]}
    assert metrics["num_images"] == len(gt["images"])
    assert metrics["model_id"].startswith("sha256:")
    assert len(list((eval_dir / "samples").glob("[0-9]*.png"))) == 2
    assert (eval_dir / "samples" / "loss_curve.png").is_file()
    report = (eval_dir / "report.md").read_text()
    assert "| AP @[.50:.95] |" in report and "samples/" in report
    html = (eval_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3     # 2 samples + loss curve, inlined


def test_metrics_are_pycocotools_numbers_for_the_written_detections(eval_dir, synth_coco):
    gt = read_json(synth_coco / "annotations" / "instances_val2017.json")
    detections = read_json(eval_dir / "detections.json")
    assert detections, "the tiny model should detect something on its own training distribution"
    gt_cats = {c["id"] for c in gt["categories"]}
    for d in detections:
        assert d["category_id"] in gt_cats and len(d["bbox"]) == 4 and isinstance(d["segmentation"]["counts"], str)
    metrics = read_json(eval_dir / "metrics.json")
    for iou_type in ("bbox", "segm"):
        ref, _ = pycocotools_stats(gt, detections, iou_type)
        np.testing.assert_allclose([metrics[iou_type][n] for n in STAT_NAMES], ref, rtol=0, atol=1e-12)


def test_server_returns_the_same_detections_as_evaluate(eval_dir, tiny_model_dir, synth_coco):
    """Same model, same answer: every image's boxes, classes, scores and masks, via HTTP."""
    from fastapi.testclient import TestClient

    from maskrcnn.config import load_yaml
    from maskrcnn.serve.app import create_app

    gt = read_json(synth_coco / "annotations" / "instances_val2017.json")
    mask_threshold = load_yaml(str(tiny_model_dir / "config.yaml")).TEST.MASK_THRESH
    by_image: dict[int, list] = {}
    for d in read_json(eval_dir / "detections.json"):
        by_image.setdefault(d["image_id"], []).append(d)
    with TestClient(create_app(tiny_model_dir)) as client:
        for _ in range(600):
            if client.get("/ping").status_code == 200:
                break
            time.sleep(0.1)
        for image in gt["images"]:
            data = (synth_coco / "val2017" / image["file_name"]).read_bytes()
            reply = client.post("/invocations", json={
                "img_id": image["file_name"], "img_data": base64.b64encode(data).decode(),
                "score_threshold": 0.0, "mask_threshold": mask_threshold, "rle": "coco"})
            assert reply.status_code == 200
            served = [{"image_id": image["id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": a["score"],
                       "segmentation": a["segmentation"]} for a in reply.json()["annotations"]]
            assert served == by_image.get(image["id"], [])


@pytest.mark.horovod
def test_two_horovod_ranks_give_the_single_process_metrics(eval_dir, tiny_model_dir, tiny_shards, synth_coco, tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("horovod.tensorflow", reason="horovod is not installed (make venv builds it)")
    exe = Path(sys.executable).with_name("horovodrun")
    horovodrun = str(exe) if exe.exists() else shutil.which("horovodrun")
    if not horovodrun:
        pytest.skip("horovodrun is not on PATH")
    out = tmp_path / "eval"
    cmd = [horovodrun, "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, "-m", "maskrcnn.cli", "evaluate",
           "--model-dir", str(tiny_model_dir), "--data", str(tiny_shards / "val2017"),
           "--annotations", str(synth_coco / "annotations" / "instances_val2017.json"), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    single, distributed = read_json(eval_dir / "metrics.json"), read_json(out / "metrics.json")
    assert distributed == single
    key = lambda d: (d["image_id"], -d["score"], d["category_id"])  # noqa: E731
    assert sorted(read_json(out / "detections.json"), key=key) == sorted(read_json(eval_dir / "detections.json"), key=key)


def test_notebook_client_decodes_the_real_models_masks(tiny_model_dir, synth_coco):
    """The contract on the trained model: every row-major RLE mask rebuilds the predictor's mask."""
    from fastapi.testclient import TestClient

    from maskrcnn.serve.app import create_app
    from maskrcnn.train.export import load_predictor

    gt = read_json(synth_coco / "annotations" / "instances_val2017.json")
    data = (synth_coco / "val2017" / gt["images"][0]["file_name"]).read_bytes()
    (det,) = load_predictor(tiny_model_dir)([data], mask_threshold=0.5)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    with TestClient(create_app(tiny_model_dir)) as client:
        for _ in range(600):
            if client.get("/ping").status_code == 200:
                break
            time.sleep(0.1)
        reply = client.post("/invocations", json={"img_id": "x", "img_data": base64.b64encode(data).decode(),
                                                  "score_threshold": 0.0})
    annotations = reply.json()["annotations"]
    assert len(annotations) == len(det.scores) > 0
    for a, mask, box, cat in zip(annotations, det.masks, det.boxes, det.category_ids):
        decoded = rle_to_binary_mask(a["segmentation"]["counts"], tuple(a["segmentation"]["size"]))
        np.testing.assert_array_equal(decoded, mask)
        y1, x1, y2, x2 = box
        np.testing.assert_allclose(a["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=0.01)
        assert a["category_id"] == cat and a["category_name"] == names[cat]
