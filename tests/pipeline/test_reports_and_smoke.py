"""The evaluation report (inlined images, loss curve), UI metrics, and the smoke request's contract checks."""

import base64

import pytest

from maskrcnn.pipeline import reports
from maskrcnn.pipeline.evaluate_step import ui_metrics
from maskrcnn.pipeline.smoke import response_problems

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def test_report_images_are_inlined_and_the_loss_curve_added(tmp_path):
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "a.png").write_bytes(PNG)
    (tmp_path / "report.html").write_text(
        '<html><body><img src="samples/a.png"><img src="samples/missing.png"><img src="https://x/y.png"></body></html>')
    summary = {"steps": 30, "loss_curve": [{"step": 10, "total_loss": 3.0}, {"step": 20, "total_loss": 2.0},
                                           {"step": 30, "total_loss": 1.5}]}
    page = reports.evaluation_html(tmp_path, {"bbox": {"AP": 0.5}, "segm": {"AP": 0.4}}, summary)
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in page
    assert 'src="samples/missing.png"' in page and 'src="https://x/y.png"' in page
    assert page.index("<svg") < page.index("</body>")
    assert "steps 30" in page


def test_loss_curve_points_and_svg_scale():
    assert reports.curve_points([{"step": 1, "total_loss": 2.0}, {"step": 2, "loss_mask": 1.0}]) == [(1.0, 2.0)]
    assert reports.curve_points({"step": [1, 2], "total_loss": [4, 3]}) == [(1.0, 4.0), (2.0, 3.0)]
    assert reports.curve_points([[5, 1.5]]) == [(5.0, 1.5)]
    assert reports.loss_curve_svg([]) == ""
    svg = reports.loss_curve_svg([(0, 4.0), (100, 0.0)], width=200, height=100)
    # first point at the top-left of the plot area, last at the bottom-right (margin 40)
    assert 'points="40.0,40.0 160.0,60.0"' in svg


def test_ui_metrics_names():
    metrics = {"bbox": {"AP": 0.5, "AP50": 0.7, "AR1": 0.1}, "segm": {"AP": 0.4}}
    assert ui_metrics(metrics) == {"box_AP": 0.5, "box_AP50": 0.7, "mask_AP": 0.4}


GOOD = {"bbox": [1.0, 2.0, 10.0, 5.0], "score": 0.9, "category_id": 18, "category_name": "cross",
        "segmentation": {"counts": [3, 4, 193], "size": [10, 20]}}


@pytest.mark.parametrize("change, problem", [
    ({"bbox": [1, 2, 3]}, "bbox"),
    ({"bbox": [0, 0, 50, 5]}, "outside"),
    ({"score": 1.5}, "score"),
    ({"category_id": 3}, "not in the model's class map"),
    ({"category_name": "star"}, "does not match"),
    ({"segmentation": {"counts": [3, 4], "size": [10, 20]}}, "sum to height x width"),
    ({"segmentation": {"counts": [200], "size": [20, 10]}}, "size"),
])
def test_contract_violations_are_named(change, problem):
    check = dict(height=10, width=20, class_names={18: "cross"})
    assert response_problems({"annotations": [GOOD]}, **check) == []
    assert response_problems({"annotations": []}, **check) == []
    problems = response_problems({"annotations": [GOOD, {**GOOD, **change}]}, **check)
    assert len(problems) == 1 and problems[0].startswith("annotations[1]") and problem in problems[0]
