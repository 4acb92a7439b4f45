"""images/serve/entrypoint.sh: SageMaker's `docker run IMAGE serve` runs `maskrcnn serve` on the
model SageMaker extracted to SM_MODEL_DIR; any other command runs as given."""

from __future__ import annotations

import os
import subprocess

import pytest

from .dockerfiles import ROOT

ENTRYPOINT = ROOT / "images" / "serve" / "entrypoint.sh"


@pytest.fixture
def fake_path(tmp_path):
    """A PATH whose `maskrcnn` and `echo-args` print their arguments instead of serving."""
    for name in ("maskrcnn", "echo-args"):
        script = tmp_path / name
        script.write_text(f'#!/bin/sh\necho {name} "$@"\n')
        script.chmod(0o755)
    return f"{tmp_path}:{os.environ['PATH']}"


def run(args, path, **env):
    result = subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, timeout=30,
                            env={"PATH": path, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_serve_runs_the_server_on_the_sagemaker_model_dir(fake_path):
    assert run(["serve"], fake_path) == "maskrcnn serve --model-dir /opt/ml/model --host 0.0.0.0 --port 8080"


def test_model_dir_and_port_follow_the_environment(fake_path):
    assert run(["serve", "--workers", "2"], fake_path, SM_MODEL_DIR="/models/x", SAGEMAKER_BIND_TO_PORT="9090") == (
        "maskrcnn serve --model-dir /models/x --host 0.0.0.0 --port 9090 --workers 2")


def test_other_commands_run_as_given(fake_path):
    assert run(["echo-args", "predict", "a.jpg"], fake_path) == "echo-args predict a.jpg"


def test_the_image_defaults_to_serve():
    text = (ROOT / "images" / "serve" / "Dockerfile").read_text()
    assert 'CMD ["serve"]' in text and "EXPOSE 8080" in text and "SM_MODEL_DIR=/opt/ml/model" in text
    assert "HEALTHCHECK" in text and "/ping" in text
