"""Render kustomizations with `kubectl kustomize` and walk the pod specs inside any object."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
# Every overlay is checked, found by globbing (a new overlay is covered without editing a list).
OVERLAYS = sorted(p.parent.name for p in (MANIFESTS / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = ["base", *(f"overlays/{name}" for name in OVERLAYS)]


def kustomize(path: Path) -> list[dict]:
    """The objects `kubectl kustomize path` renders."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is needed to render manifests/"
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@functools.lru_cache(maxsize=None)
def _rendered(relative: str) -> tuple:
    return tuple(kustomize(MANIFESTS / relative))


def rendered(relative: str) -> list[dict]:
    """The objects of ``manifests/<relative>`` (cached; callers get their own list)."""
    import copy

    return copy.deepcopy(list(_rendered(relative)))


def object_name(obj: dict) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def pod_specs(obj: Any, where: str = "") -> Iterator[tuple[str, dict]]:
    """Every pod spec inside an object, whatever its kind (Deployment, Job, CronJob, MPIJob, ...):
    any mapping with a ``containers`` list."""
    if isinstance(obj, dict):
        if isinstance(obj.get("containers"), list):
            yield where or "<root>", obj
            return
        for key, value in obj.items():
            yield from pod_specs(value, f"{where}.{key}" if where else key)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from pod_specs(value, f"{where}[{i}]")


def containers(pod_spec: dict) -> Iterator[dict]:
    """Init, regular and ephemeral containers of a pod spec."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod_spec.get(key) or []
