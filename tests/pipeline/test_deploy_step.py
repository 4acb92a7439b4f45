"""The local deploy step: gate, detached server, smoke request with the serving contract, replacement."""

import base64

import numpy as np
import pytest
import requests
from PIL import Image

from maskrcnn.pipeline import local_server
from maskrcnn.pipeline.deploy_step import decision_markdown, deploy_step
from maskrcnn.serve.standin import STANDIN_CLASS_MAP, export_standin_model
from maskrcnn.utils.io import read_json, write_json


def _metrics(box_ap, mask_ap):
    return {"bbox": {"AP": box_ap}, "segm": {"AP": mask_ap}, "model_id": f"m-{box_ap}"}


@pytest.fixture
def coco_dir(tmp_path):
    """One val2017 image whose red and blue squares the stand-in model "detects"."""
    coco = tmp_path / "coco"
    (coco / "val2017").mkdir(parents=True)
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[5:20, 8:30, 0] = 255
    pixels[25:40, 30:60, 2] = 255
    Image.fromarray(pixels).save(coco / "val2017" / "000000000001.png")
    write_json(coco / "annotations" / "instances_val2017.json",
               {"images": [{"id": 1, "file_name": "000000000001.png", "height": 48, "width": 64}]})
    return coco


@pytest.mark.slow
def test_local_deploy_serves_smoke_tests_and_replaces_only_when_not_worse(tmp_path, coco_dir):
    root = tmp_path / "work"
    state_dir = root / "serving"

    def deploy(name, box_ap, mask_ap, min_box_ap=0.1):
        model = export_standin_model(root / "runs" / name / "model")
        metrics_path = root / "runs" / name / "eval" / "metrics.json"
        write_json(metrics_path, _metrics(box_ap, mask_ap))
        return deploy_step(executor="local", model_path=str(model), metrics_path=str(metrics_path),
                           coco_path=str(coco_dir), min_box_ap=min_box_ap, min_mask_ap=0.1, data_root=str(root),
                           port=local_server.free_port()).decision

    try:
        first = deploy("a", 0.5, 0.4)
        assert first["deploy"] is True
        assert first["smoke"]["status"] == 200 and first["smoke"]["annotations"] == 2
        image = base64.b64encode((coco_dir / "val2017" / "000000000001.png").read_bytes()).decode()
        answer = requests.post(f"{first['endpoint']}/invocations", timeout=30,
                               json={"img_id": "x", "img_data": image, "score_threshold": 0.05}).json()
        assert {a["category_name"] for a in answer["annotations"]} == {"red", "blue"}
        assert {a["category_id"] for a in answer["annotations"]} <= {int(k) for k in STANDIN_CLASS_MAP}
        assert read_json(root / "runs" / "a" / "deploy" / "decision.json")["endpoint"] == first["endpoint"]
        assert "Deployed" in decision_markdown(first)

        worse = deploy("b", 0.45, 0.5)  # box AP below the deployed model's: kept the old server
        assert worse["deploy"] is False and "deployed model" in worse["reason"]
        assert worse["endpoint"] == first["endpoint"]
        assert local_server.running(state_dir)["pid"] == first["pid"]
        assert "Not deployed" in decision_markdown(worse)

        refused = deploy("c", 0.9, 0.9, min_box_ap=0.95)  # below the threshold
        assert refused["deploy"] is False and "threshold" in refused["reason"]

        better = deploy("d", 0.6, 0.5)
        assert better["deploy"] is True and better["pid"] != first["pid"]
        with pytest.raises(requests.ConnectionError):  # the replaced server is gone
            requests.get(f"{first['endpoint']}/ping", timeout=5)
        assert requests.get(f"{better['endpoint']}/ping", timeout=5).status_code == 200
    finally:
        local_server.stop(state_dir)
    assert local_server.running(state_dir) is None
