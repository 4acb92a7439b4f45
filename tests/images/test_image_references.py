"""Every image that a manifest, a component or the compiled pipeline names is one `make images`
builds, or a public base pinned by digest; the images components run in have kfp baked in."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from maskrcnn import images

from manifests.render import KUSTOMIZATIONS, containers, pod_specs, rendered
from .dockerfiles import PINNED, ROOT, makefile_images

BUILT = makefile_images()
IMAGE_ARGS = ("--image",)  # command-line flags whose value is an image (maskrcnn k8s train/deploy)


def allowed(image: str) -> bool:
    return image in BUILT or bool(PINNED.match(image))


def manifest_images(objects) -> set[str]:
    found = set()
    for obj in objects:
        for _, pod in pod_specs(obj):
            for container in containers(pod):
                found.add(container["image"])
                argv = [*(container.get("command") or []), *(container.get("args") or [])]
                found.update(argv[i + 1] for i, word in enumerate(argv[:-1]) if word in IMAGE_ARGS)
    return found


def component_images() -> dict[str, str]:
    """``{component file: image}`` from each ``base_image=`` in components/*.py (names resolved in maskrcnn.images)."""
    found = {}
    for path in sorted((ROOT / "components").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "base_image":
                found[path.name] = _resolve(node.value, path)
    return found


def _resolve(node: ast.expr, path: Path) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
    assert name and isinstance(getattr(images, name, None), str), (
        f"{path.name}: base_image must be a string or a name from maskrcnn.images, got {ast.unparse(node)}")
    return getattr(images, name)


def compiled_pipeline_images() -> set[str]:
    found = set()
    for path in (ROOT / "pipelines").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            executors = ((doc or {}).get("deploymentSpec") or {}).get("executors") or {}
            found.update(e["container"]["image"] for e in executors.values() if "container" in e)
    return found


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_manifest_images_are_built_or_pinned(kustomization):
    named = manifest_images(rendered(kustomization))
    assert named and {i for i in named if not allowed(i)} == set()
    # Every project image that runs something is one of maskrcnn.images' names.
    assert named <= set(BUILT)


def test_the_image_check_rejects_an_unknown_image():
    job = {"kind": "Job", "spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "ghcr.io/maskrcnn-kubeflow/maskrcnn-train:latest",
         "command": ["maskrcnn", "k8s", "train", "--image", "python:3.11"]}]}}}}
    assert {i for i in manifest_images([job]) if not allowed(i)} == {
        "ghcr.io/maskrcnn-kubeflow/maskrcnn-train:latest", "python:3.11"}


def test_component_images_are_built():
    named = component_images()
    assert len(named) >= 5, "every step's component declares its base_image"
    assert {f: i for f, i in named.items() if i not in BUILT} == {}


def test_compiled_pipeline_images_are_built_or_pinned():
    assert {i for i in compiled_pipeline_images() if not allowed(i)} == set()


_IMPORT_CHECK = re.compile(r"python3? -c \"import ([^\"]+)\"")


def test_images_that_run_components_have_kfp_baked_in():
    """Components use install_kfp_package=False: their image must import kfp when it is built."""
    by_image = {images.image(name): ROOT / "images" / name / "Dockerfile" for name in ("data", "train", "serve", "pipeline")}
    for image in set(component_images().values()) | {images.DATA_IMAGE, images.TRAIN_IMAGE, images.PIPELINE_IMAGE}:
        checks = _IMPORT_CHECK.findall(by_image[image].read_text())
        assert any("kfp" in [m.strip() for m in check.split(",")] for check in checks), by_image[image]
