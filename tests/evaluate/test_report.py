"""Report, rendering and conversion pieces of `maskrcnn evaluate` (no model needed)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from maskrcnn.cli import main
from maskrcnn.evaluate.cocoeval import STAT_NAMES
from maskrcnn.evaluate.detections import boxes_to_xywh, coco_results
from maskrcnn.evaluate.report import write_html, write_markdown
from maskrcnn.evaluate.visualize import instance_colors, render_detections


def _metrics():
    stats = {n: round(0.1 * i, 3) for i, n in enumerate(STAT_NAMES)}
    return {"bbox": stats, "segm": {**stats, "APs": -1.0}, "per_class": {"circle": {"bbox": 0.5, "segm": -1.0}},
            "num_images": 8, "num_detections": 12, "model_id": "sha256:abc"}


def test_reports_hold_the_tables_and_inline_the_images(tmp_path):
    sample = tmp_path / "samples" / "1.png"
    sample.parent.mkdir()
    render_detections(np.zeros((20, 30, 3), np.uint8), np.array([[2, 2, 10, 8]]), np.ones((1, 20, 30)), ["a:1"]).save(sample)
    write_markdown(tmp_path / "report.md", _metrics(), [sample], None)
    write_html(tmp_path / "report.html", _metrics(), [sample], None)
    md = (tmp_path / "report.md").read_text()
    assert "| AP @[.50:.95] | 0.000 | 0.000 |" in md
    assert "| AP small | 0.300 | n/a |" in md              # -1 (undefined) is shown as n/a
    assert "| circle | 0.500 | n/a |" in md
    assert "![1](samples/1.png)" in md and "sha256:abc" in md
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and "<td>circle</td>" in html


def test_render_blends_masks_and_draws_boxes():
    image = np.full((40, 50, 3), 100, np.uint8)
    masks = np.zeros((2, 40, 50), np.uint8)
    masks[0, 5:15, 5:15] = 1
    masks[1, 20:30, 20:40] = 1
    out = np.asarray(render_detections(image, boxes_to_xywh(np.array([[5, 5, 15, 15], [20, 20, 30, 40]])), masks, ["a", "b"]))
    colors = instance_colors(2)
    expected = (100 * 0.5 + 0.5 * np.asarray(colors[1])).astype(np.uint8)
    np.testing.assert_allclose(out[25, 30], expected, atol=1)   # inside mask 2, away from box and label
    assert (out[38, 2] == 100).all()                              # untouched background
    assert (out[20, 30] == colors[1]).all()                       # the box outline


def test_coco_results_convert_boxes_ids_and_masks():
    masks = np.zeros((1, 6, 8), np.uint8)
    masks[0, 1:4, 2:7] = 1
    det = SimpleNamespace(boxes=np.array([[1.0, 2.0, 4.0, 7.0]], np.float32), scores=np.array([0.912345678], np.float32),
                          category_ids=np.array([18]), masks=masks)
    (r,) = coco_results(1000001, det)
    assert r["bbox"] == [2.0, 1.0, 5.0, 3.0] and r["category_id"] == 18 and r["score"] == 0.91235
    assert isinstance(r["segmentation"]["counts"], str)
    np.testing.assert_array_equal(mask_utils.decode({**r["segmentation"], "counts": r["segmentation"]["counts"].encode()}), masks[0])


@pytest.mark.parametrize("missing", ["annotations", "model"])
def test_evaluate_cli_reports_missing_inputs(tmp_path, capsys, missing):
    ann = tmp_path / "instances_val2017.json"
    if missing == "model":
        ann.write_text("{}")
    code = main(["evaluate", "--model-dir", str(tmp_path / "model"), "--data", str(tmp_path),
                 "--annotations", str(ann), "--out", str(tmp_path / "eval")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and ("annotations file" in err if missing == "annotations" else "config.yaml" in err)
