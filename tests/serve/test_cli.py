"""`maskrcnn predict` (local and against a live uvicorn server), `maskrcnn model package`, `serve` errors."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest
import uvicorn
from PIL import Image

from maskrcnn.cli import main

from .conftest import colored_image, encode_png


@pytest.fixture(scope="module")
def live_server(standin_model_dir):
    """The app on a real uvicorn server on 127.0.0.1 (a thread of this process)."""
    import requests

    from maskrcnn.serve.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(standin_model_dir), host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(f"{url}/ping", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "in.png"
    path.write_bytes(encode_png(colored_image(48, 64, 2)))
    return path


def test_predict_locally_and_via_the_server_agree(standin_model_dir, live_server, image_file, tmp_path, capsys):
    assert main(["predict", str(image_file), "--model-dir", str(standin_model_dir),
                 "--out", str(tmp_path / "local.png"), "--json", str(tmp_path / "local.json")]) == 0
    assert main(["predict", str(image_file), "--url", live_server,
                 "--out", str(tmp_path / "remote.png"), "--json", str(tmp_path / "remote.json")]) == 0
    local, remote = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("local", "remote"))
    assert local == remote and len(local["annotations"]) == 3
    rendered = np.asarray(Image.open(tmp_path / "remote.png"))
    assert rendered.shape == (48, 64, 3)
    assert not np.array_equal(rendered, colored_image(48, 64, 2))      # masks and boxes were drawn
    np.testing.assert_array_equal(rendered, np.asarray(Image.open(tmp_path / "local.png")))
    assert '"detections": 3' in capsys.readouterr().out


def test_predict_errors_are_one_line(tmp_path, image_file, capsys):
    assert main(["predict", str(tmp_path / "missing.png"), "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "o.png")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["predict", str(image_file), "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "o.png"),
                 "--timeout", "2"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_model_package_cli(standin_model_dir, tmp_path, capsys):
    assert main(["model", "package", "--model-dir", str(standin_model_dir), "--out", str(tmp_path / "model.tar.gz")]) == 0
    assert (tmp_path / "model.tar.gz").is_file()
    assert main(["model", "package", "--model-dir", str(tmp_path), "--out", str(tmp_path / "x.tar.gz")]) == 2
    assert "saved_model" in capsys.readouterr().err


def test_serve_defaults_to_sagemaker_conventions(monkeypatch, capsys):
    from maskrcnn.cli import build_parser

    monkeypatch.delenv("SM_MODEL_DIR", raising=False)
    args = build_parser().parse_args(["serve"])
    assert (args.model_dir, args.port) == ("/opt/ml/model", 8080)
    monkeypatch.setenv("SM_MODEL_DIR", "/srv/model")
    assert build_parser().parse_args(["serve"]).model_dir == "/srv/model"
    assert main(["serve", "--model-dir", "/nonexistent/model"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["serve", "--model-dir", "/nonexistent", "--max-batch-size", "0"]) == 2


def test_json_log_lines_carry_the_request_fields():
    import logging

    from maskrcnn.serve.json_logs import JsonFormatter

    record = logging.LogRecord("maskrcnn.serve.app", logging.INFO, __file__, 1, "predict", None, None)
    record.img_id, record.status, record.color_message = "a.jpg", 200, "\x1b[1mpredict"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "predict" and entry["img_id"] == "a.jpg" and entry["status"] == 200
    assert "color_message" not in entry and entry["level"] == "INFO"
