"""The kustomize MPIJobs and serving objects are the builders' output (regenerated and compared);
the MPIJobs' launchers reach the workers of the namespace the kustomization renders into, the
overlays' shapes hold, and what `maskrcnn k8s deploy` writes later fits the static Deployment."""

from __future__ import annotations

import importlib.util
import shlex
import sys

import pytest

from maskrcnn.k8s.mpijob import EFA_RESOURCE, GPU_RESOURCE, worker_hosts

from .render import MANIFESTS, rendered


def _generator():
    spec = importlib.util.spec_from_file_location("generate", MANIFESTS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()
SHAPES = {shape.path: shape for shape in GENERATOR.SHAPES}


@pytest.mark.parametrize("path", sorted(SHAPES))
def test_committed_files_are_what_the_builder_generates(path):
    committed = (MANIFESTS / path).read_text()
    assert committed == GENERATOR.render(SHAPES[path]), (
        f"manifests/{path} is stale: run `.venv/bin/python manifests/generate.py`")


def _kustomization(path: str) -> str:
    return path.rsplit("/", 1)[0]


@pytest.mark.parametrize("path", sorted(SHAPES))
def test_rendered_mpijob_spec_is_the_builders(path):
    """Overlays replace the whole spec: nothing of the base's shape (GPUs, EFA, selectors) leaks in."""
    mpijob = next(o for o in rendered(_kustomization(path)) if o["kind"] == "MPIJob")
    expected = GENERATOR.build(SHAPES[path])["spec"]
    for spec in (mpijob["spec"], expected):  # kustomize adds its common labels to pod templates
        for replica in spec["mpiReplicaSpecs"].values():
            replica["template"]["metadata"]["labels"].pop("app.kubernetes.io/part-of", None)
    assert mpijob["spec"] == expected


def _launcher_script(mpijob: dict) -> str:
    return mpijob["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]["command"][-1]


@pytest.mark.parametrize("path", sorted(SHAPES))
def test_launcher_waits_for_the_workers_of_the_rendered_namespace(path):
    mpijob = next(o for o in rendered(_kustomization(path)) if o["kind"] == "MPIJob")
    name, namespace = mpijob["metadata"]["name"], mpijob["metadata"]["namespace"]
    workers = mpijob["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]
    script = _launcher_script(mpijob)
    for host in worker_hosts(name, namespace, workers):
        assert host in script
    mpirun = shlex.split(script.splitlines()[-1])[1:]
    np = int(mpirun[mpirun.index("-np") + 1])
    assert np == workers * mpijob["spec"]["slotsPerWorker"]


def test_mpijob_shapes_per_overlay():
    shapes = {}
    for kustomization in ("base", "overlays/aws", "overlays/small"):
        mpijob = next(o for o in rendered(kustomization) if o["kind"] == "MPIJob")
        worker = mpijob["spec"]["mpiReplicaSpecs"]["Worker"]
        limits = worker["template"]["spec"]["containers"][0]["resources"]["limits"]
        shapes[kustomization] = (worker["replicas"], limits.get(GPU_RESOURCE), limits.get(EFA_RESOURCE),
                                 mpijob["spec"]["runPolicy"]["suspend"])
    assert shapes == {
        "base": (2, "8", None, True),
        "overlays/aws": (2, "8", "4", True),
        "overlays/small": (1, None, None, True),
    }


def test_committed_serving_objects_are_what_the_deployer_builds():
    committed = (MANIFESTS / GENERATOR.SERVING_PATH).read_text()
    assert committed == GENERATOR.render_serving(), (
        f"manifests/{GENERATOR.SERVING_PATH} is stale: run `.venv/bin/python manifests/generate.py`")


@pytest.mark.parametrize("kustomization", ["base", "overlays/aws", "overlays/small"])
def test_a_gated_deploy_fits_the_static_deployment(kustomization):
    """`maskrcnn k8s deploy` keeps the live selector and replaces the pod template with its own:
    that template must match the selector, and the NetworkPolicy must still cover its pods."""
    from maskrcnn.k8s.gate import ModelScore
    from maskrcnn.k8s.serving import build_deployment, model_location

    objects = rendered(kustomization)
    static = next(o for o in objects if o["kind"] == "Deployment")
    location = model_location("/data/runs/r1/model", pvc="maskrcnn-data", mount_path="/data")
    deployed = build_deployment(GENERATOR.SERVING, ModelScore(0.4, 0.35, "m1", "/data/runs/r1/model"), location)
    labels = deployed["spec"]["template"]["metadata"]["labels"]
    assert static["metadata"]["name"] == deployed["metadata"]["name"]
    assert static["spec"]["selector"]["matchLabels"].items() <= labels.items()
    policy = next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "maskrcnn-serve")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    hpa = next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == static["metadata"]["name"]
    service = next(o for o in objects if o["kind"] == "Service")
    assert service["spec"]["selector"].items() <= labels.items()
