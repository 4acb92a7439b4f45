"""`maskrcnn pipeline run --local` end to end: the README's main job, on a tiny generated dataset.

The same compiled pipeline as on a cluster, executed by kfp.local: download from a local mirror,
convert, train (horovodrun -np 2 when Horovod is installed), evaluate, deploy a local server; then
the served model must answer the SageMaker notebook's client.
"""

import base64
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from maskrcnn.pipeline.local_server import free_port
from maskrcnn.utils.io import read_json
from notebook_client import rle_to_binary_mask

STATS = {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}


def _maskrcnn(*argv, timeout):
    return subprocess.run([sys.executable, "-m", "maskrcnn.cli", *argv], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_local_run_end_to_end(tmp_path):
    workdir = tmp_path / "demo"
    port = free_port()
    done = _maskrcnn("pipeline", "run", "--local", "--workdir", str(workdir), "--train-images", "48",
                     "--val-images", "12", "--max-steps", "60", "--port", str(port), timeout=1200)
    try:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        summary = read_json(workdir / "last_run.json")

        # Every step ran for real (nothing cached on a first run) and said where its output is.
        assert summary["download_cached"] is False and summary["convert_cached"] is False
        for key in ("coco", "shards", "model", "eval", "report_html", "decision", "kfp_artifacts", "log"):
            assert summary[key] in done.stdout, key
        assert (workdir / "runs").is_dir() and summary["model"].startswith(str(workdir / "runs"))
        assert (Path(summary["model"]) / "saved_model").is_dir()
        assert summary["train_steps"] == 60

        metrics = read_json(summary["metrics_json"])
        for kind in ("bbox", "segm"):
            assert set(metrics[kind]) >= STATS
            assert 0.0 <= metrics[kind]["AP"] <= 1.0
        assert summary["box_AP"] == metrics["bbox"]["AP"] and summary["mask_AP"] == metrics["segm"]["AP"]
        page = open(summary["report_html"]).read()
        assert "<svg" in page and "data:image/png;base64," in page

        # Deployed behind the gate, and the server keeps answering after the run returned.
        assert summary["deployed"] is True, summary["reason"]
        url = summary["endpoint"]
        assert url == f"http://127.0.0.1:{port}" and f"serving at       {url}" in done.stdout
        assert requests.get(f"{url}/ping", timeout=10).status_code == 200
        coco = read_json(f"{summary['coco']}/annotations/instances_val2017.json")
        class_names = {c["id"]: c["name"] for c in coco["categories"]}
        image = coco["images"][0]
        path = f"{summary['coco']}/val2017/{image['file_name']}"
        body = {"img_id": image["file_name"], "img_data": base64.b64encode(open(path, "rb").read()).decode(),
                "score_threshold": 0.05}
        answer = requests.post(f"{url}/invocations", json=body, timeout=60)
        assert answer.status_code == 200
        annotations = answer.json()["annotations"]
        height, width = Image.open(path).size[::-1]
        for annotation in annotations:
            mask = rle_to_binary_mask(annotation["segmentation"]["counts"], annotation["segmentation"]["size"])
            assert mask.shape == (height, width)
            assert class_names[annotation["category_id"]] == annotation["category_name"]
            x, y, w, h = annotation["bbox"]
            assert 0 <= x <= x + w <= width + 1 and 0 <= y <= y + h <= height + 1
    finally:
        stopped = _maskrcnn("pipeline", "stop", "--workdir", str(workdir), timeout=60)
    assert stopped.returncode == 0 and "stopped the local server" in stopped.stdout
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/ping", timeout=5)
