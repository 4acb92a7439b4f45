"""images/pins.py: the requirements and constraints the Dockerfiles install from the one lock."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from .dockerfiles import ROOT

spec = importlib.util.spec_from_file_location("pins", ROOT / "images" / "pins.py")
pins = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pins)

PYPROJECT = """
[project]
name = "x"
dependencies = ["tensorflow-cpu==2.17.1", "numpy==1.26.4", "PyYAML==6.0.3", "kfp==2.13.0"]
"""
LOCK = "# why\nabsl-py==2.5.1\nnumpy==1.26.4  # TF needs < 2\nprotobuf==4.25.9\nPyYAML==6.0.3\n"


def test_requirements_leave_out_excluded_and_installed_names():
    assert pins.runtime_requirements(PYPROJECT, exclude=["tensorflow_cpu"]) == [
        "numpy==1.26.4", "PyYAML==6.0.3", "kfp==2.13.0"]
    assert pins.runtime_requirements(PYPROJECT, exclude=["tensorflow-cpu"], installed=["NumPy", "pyyaml"]) == [
        "kfp==2.13.0"]


def test_excluding_a_name_that_is_not_a_dependency_is_an_error():
    with pytest.raises(SystemExit, match="tensorflow"):
        pins.runtime_requirements(PYPROJECT, exclude=["tensorflow"])


def test_constraints_pin_what_is_installed_instead_of_the_lock():
    """NGC's NumPy stays (pinned at its version); packages the base lacks get the lock's pins."""
    installed = {"numpy": "1.26.4+nv25.2", "tensorflow": "2.17.0+nv25.2"}
    assert pins.constraints_keeping(LOCK, installed) == [
        "absl-py==2.5.1", "protobuf==4.25.9", "PyYAML==6.0.3",
        "numpy==1.26.4+nv25.2", "tensorflow==2.17.0+nv25.2"]


def test_the_real_lock_and_pyproject():
    """Against the project's files: every runtime dependency is pinned, and the pipeline image's set has no TF."""
    pipeline = subprocess.run([sys.executable, str(ROOT / "images" / "pins.py"), "requirements",
                               "--exclude", "tensorflow-cpu"], capture_output=True, text=True, check=True).stdout.split()
    assert "kfp==2.13.0" in pipeline and not [r for r in pipeline if r.startswith("tensorflow")]
    assert all("==" in r for r in pipeline)
    lock = subprocess.run([sys.executable, str(ROOT / "images" / "pins.py"), "constraints"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert "kfp==2.13.0" in lock and "tensorflow-cpu==2.17.1" in lock
