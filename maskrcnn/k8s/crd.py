"""Validate MPIJob manifests against mpi-operator v0.8.2's CRD, rejecting unknown fields.

The CRD's ``openAPIV3Schema`` does not say ``additionalProperties: false``: a real API server
*prunes* unknown fields (silently, unless the request asks for strict field validation), so a
misspelled key such as ``slotPerWorker`` vanishes and the job runs with the default. The strict
copy built here forbids unknown properties wherever the schema lists properties and does not
``x-kubernetes-preserve-unknown-fields``, so such a typo is an error before anything is sent.
On top of the schema come the rules mpi-operator's controller checks (the name leaves room for
``-worker-<i>`` host names, one launcher, valid policies), and, when ``kubernetes-validate`` is
installed (the dev extra), every embedded pod template is validated as a ``v1/PodTemplate`` in
strict mode as a second opinion.
"""

from __future__ import annotations

import copy
import functools
import logging
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from maskrcnn.errors import UserError

logger = logging.getLogger(__name__)

CRD_FILENAME = "mpijob-crd-v0.8.2.yaml"
GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v2beta1", "mpijobs", "MPIJob"
API_VERSION = f"{GROUP}/{VERSION}"
# The copy that ships with the package; the repository's ../shared/schemas copy is preferred when
# present (a test asserts the two are identical).
VENDORED_CRD = Path(__file__).with_name("schemas") / CRD_FILENAME
SHARED_CRD = Path(__file__).resolve().parents[3] / "shared" / "schemas" / CRD_FILENAME
POD_TEMPLATE_K8S_VERSION = "1.30"  # the kubernetes client pinned (30.x) speaks this API version

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MAX_LABEL = 63
_REPLICA_TYPES = ("Launcher", "Worker")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
# mpi-operator's controller accepts only these (the CRD's schema does not list them).
_RESTART_POLICIES = ("Never", "OnFailure")
_CLEAN_POD_POLICIES = ("None", "Running", "All")
_LAUNCHER_CREATION_POLICIES = ("AtStartup", "WaitForWorkersReady")
_MANAGED_BY = ("kubeflow.org/mpi-operator", "kueue.x-k8s.io/multikueue")
# Root metadata is ``type: object`` in the CRD (the API server validates it as ObjectMeta itself);
# these are the ObjectMeta fields a client may send.
_OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **{k: {"type": "string"} for k in (
            "name", "generateName", "namespace", "uid", "resourceVersion", "creationTimestamp",
            "deletionTimestamp", "selfLink")},
        "generation": {"type": "integer"},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "managedFields": {"type": "array", "items": {"type": "object"}},
    },
}


class MPIJobValidationError(UserError):
    """An MPIJob manifest breaks the CRD schema or mpi-operator's rules; ``violations`` lists all."""

    def __init__(self, name: str, violations: list[str]):
        self.violations = violations
        super().__init__(
            f"MPIJob {name or '<unnamed>'} is invalid ({len(violations)} problem"
            f"{'s' if len(violations) != 1 else ''}): " + "; ".join(violations)
        )


def crd_path() -> Path:
    """The CRD file: the repository's ../shared copy when checked out beside it, else the vendored one."""
    return SHARED_CRD if SHARED_CRD.is_file() else VENDORED_CRD


@functools.lru_cache(maxsize=None)
def load_crd(path: str | None = None) -> dict:
    # The CRD is 750 kB of YAML: libyaml's loader reads it in 0.1 s, the pure-Python one in over 1 s.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path or crd_path()) as f:
        return yaml.load(f, Loader=loader)


def crd_schema(crd: dict) -> dict:
    """The ``openAPIV3Schema`` of the served v2beta1 version of the MPIJob CRD."""
    for version in crd["spec"]["versions"]:
        if version["name"] == VERSION:
            return version["schema"]["openAPIV3Schema"]
    raise ValueError(f"the MPIJob CRD has no {VERSION} version")


def strict_schema(schema: dict) -> dict:
    """A copy of an OpenAPI v3 structural schema that forbids unknown properties.

    Every object node that lists ``properties`` and neither preserves unknown fields nor sets
    ``additionalProperties`` gets ``additionalProperties: false``; ``x-kubernetes-int-or-string``
    becomes an explicit integer-or-string type; the root ``metadata`` becomes ObjectMeta.
    """
    strict = _strict_node(copy.deepcopy(schema))
    if "metadata" in strict.get("properties", {}):
        strict["properties"]["metadata"] = copy.deepcopy(_OBJECT_META)
    return strict


def _strict_node(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict_node(item) for item in node]
    if not isinstance(node, dict):
        return node
    for key, value in node.items():
        if key not in ("enum", "default", "example"):
            node[key] = _strict_node(value) if key != "properties" else {
                name: _strict_node(sub) for name, sub in value.items()}
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    if node.get("x-kubernetes-int-or-string") and "type" not in node and "anyOf" not in node:
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return node


@functools.lru_cache(maxsize=None)
def _validator(path: str):
    import jsonschema

    schema = strict_schema(crd_schema(load_crd(path)))
    return jsonschema.Draft7Validator(schema)


def schema_violations(manifest: dict, path: str | None = None) -> list[str]:
    """Every way ``manifest`` breaks the strict CRD schema, as ``field.path: problem`` lines.

    This is what an API server checks on create with ``fieldValidation=Strict`` (the fake API
    server in the tests answers 422 with these).
    """
    validator = _validator(str(path or crd_path()))
    errors = sorted(validator.iter_errors(manifest), key=lambda e: [str(p) for p in e.absolute_path])
    return [line for error in errors for line in _describe(error)]


def _describe(error) -> list[str]:
    where = _field_path(error.absolute_path)
    if error.validator == "additionalProperties":
        known = error.schema.get("properties", {})
        unknown = sorted(k for k in error.instance if k not in known)
        return [f'{_join(where, k)}: unknown field' for k in unknown]
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return [f"{_join(where, k)}: Required value" for k in missing]
    if error.validator == "enum":
        return [f"{where or '<root>'}: Unsupported value {error.instance!r}: supported values: "
                + ", ".join(map(repr, error.validator_value))]
    return [f"{where or '<root>'}: {error.message}"]


def _field_path(parts: Iterable) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def controller_violations(manifest: dict) -> list[str]:
    """The rules mpi-operator v0.8.2's controller checks after defaulting (pkg/apis/kubeflow/validation),
    plus the API server's ObjectMeta rules for labels (schema-valid jobs that would never start)."""
    problems: list[str] = []
    if manifest.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: must be {API_VERSION}, got {manifest.get('apiVersion')!r}")
    if manifest.get("kind") != KIND:
        problems.append(f"kind: must be {KIND}, got {manifest.get('kind')!r}")
    metadata = manifest.get("metadata") or {}
    problems += _name_violations(manifest)
    problems += label_violations(metadata.get("labels") or {}, "metadata.labels")
    spec = manifest.get("spec") or {}
    replica_specs = spec.get("mpiReplicaSpecs") or {}
    for replica_type, replica in replica_specs.items():
        where = f"spec.mpiReplicaSpecs.{replica_type}"
        if replica_type not in _REPLICA_TYPES:
            problems.append(f"{where}: unsupported replica type: use {' or '.join(_REPLICA_TYPES)}")
            continue
        if not isinstance(replica, dict):
            continue
        policy = replica.get("restartPolicy")
        if policy is not None and policy not in _RESTART_POLICIES:
            problems.append(f"{where}.restartPolicy: Unsupported value {policy!r}: supported values: "
                            + ", ".join(map(repr, _RESTART_POLICIES)))
        replicas = replica.get("replicas")
        if replica_type == "Launcher" and replicas not in (None, 1):
            problems.append(f"{where}.replicas: must be 1")
        if replica_type == "Worker" and isinstance(replicas, int) and replicas < 1:
            problems.append(f"{where}.replicas: must be greater than or equal to 1")
        template = replica.get("template") or {}
        if not ((template.get("spec") or {}).get("containers")):
            problems.append(f"{where}.template.spec.containers: Required value: at least one container")
        problems += label_violations((template.get("metadata") or {}).get("labels") or {},
                                     f"{where}.template.metadata.labels")
    if "Launcher" not in replica_specs:
        problems.append("spec.mpiReplicaSpecs.Launcher: Required value")
    slots = spec.get("slotsPerWorker", 1)
    if isinstance(slots, int) and slots < 0:
        problems.append("spec.slotsPerWorker: must be greater than or equal to 0")
    policy = spec.get("launcherCreationPolicy")
    if policy is not None and policy not in _LAUNCHER_CREATION_POLICIES:
        problems.append(f"spec.launcherCreationPolicy: Unsupported value {policy!r}: supported values: "
                        + ", ".join(map(repr, _LAUNCHER_CREATION_POLICIES)))
    run_policy = spec.get("runPolicy") or {}
    clean = run_policy.get("cleanPodPolicy")
    if clean is not None and clean not in _CLEAN_POD_POLICIES:
        problems.append(f"spec.runPolicy.cleanPodPolicy: Unsupported value {clean!r}: supported values: "
                        + ", ".join(map(repr, _CLEAN_POD_POLICIES)))
    managed_by = run_policy.get("managedBy")
    if managed_by is not None and managed_by not in _MANAGED_BY:
        problems.append(f"spec.runPolicy.managedBy: Unsupported value {managed_by!r}: supported values: "
                        + ", ".join(map(repr, _MANAGED_BY)))
    for key in ("ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit"):
        value = run_policy.get(key)
        if isinstance(value, int) and value < 0:
            problems.append(f"spec.runPolicy.{key}: must be greater than or equal to 0")
    return problems


def _name_violations(manifest: dict) -> list[str]:
    name = (manifest.get("metadata") or {}).get("name", "")
    workers = ((manifest.get("spec") or {}).get("mpiReplicaSpecs") or {}).get("Worker") or {}
    replicas = workers.get("replicas") if isinstance(workers.get("replicas"), int) else 1
    # Worker pods get the host name <name>-worker-<i>, which must be a DNS-1035 label.
    longest_host = f"{name}-worker-{max(replicas, 1) - 1}"
    if not name or not _DNS1035_LABEL.match(name):
        return [f"metadata.name: {name!r} must be a DNS-1035 label (lower case letters, digits and '-', "
                "starting with a letter)"]
    if len(longest_host) > _MAX_LABEL:
        return [f"metadata.name: {name!r} is too long: worker host name {longest_host!r} exceeds "
                f"{_MAX_LABEL} characters"]
    return []


def label_violations(labels: dict, where: str) -> list[str]:
    """Kubernetes label syntax: ``[prefix/]name`` keys and values of at most 63 characters."""
    problems = []
    for key, value in labels.items():
        prefix, _, name = str(key).rpartition("/")
        if not _LABEL_NAME.match(name) or len(name) > _MAX_LABEL or len(prefix) > 253:
            problems.append(f"{where}: invalid label key {key!r}")
        if not isinstance(value, str) or (value and (not _LABEL_NAME.match(value) or len(value) > _MAX_LABEL)):
            problems.append(f"{where}.{key}: invalid label value {value!r}: at most 63 characters, "
                            "alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric")
    return problems


def pod_template_violations(manifest: dict, k8s_version: str = POD_TEMPLATE_K8S_VERSION) -> list[str]:
    """Each replica's pod template validated as a core ``v1/PodTemplate`` by kubernetes-validate (strict).

    Returns [] without checking when kubernetes-validate is not installed (it is a 100 MB dev
    dependency; the strict CRD schema already covers the pod spec).
    """
    try:
        from kubernetes_validate import utils as kv
    except ImportError:
        logger.debug("kubernetes-validate not installed: pod templates checked by the CRD schema only")
        return []
    import jsonschema
    import referencing

    version = [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(k8s_version)][-1]
    schema_dir = f"kubernetes-json-schema/v{version}-local-strict"
    schema = kv.schema_contents(f"{schema_dir}/podtemplate-v1.json", k8s_version)
    definitions = kv.schema_contents(f"{schema_dir}/_definitions.json", k8s_version)
    registry = referencing.Resource.from_contents(definitions) @ (
        referencing.Resource.from_contents(schema) @ referencing.Registry())
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    problems = []
    for replica_type, replica in ((manifest.get("spec") or {}).get("mpiReplicaSpecs") or {}).items():
        if not isinstance(replica, dict) or not isinstance(replica.get("template"), dict):
            continue
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                        "template": replica["template"]}
        for error in validator.iter_errors(pod_template):
            where = _field_path(["spec", "mpiReplicaSpecs", replica_type, *error.absolute_path])
            problems.append(f"{where}: {error.message} (kubernetes {version} PodTemplate, strict)")
    return problems


def validate_mpijob(manifest: dict) -> None:
    """Raise ``MPIJobValidationError`` listing every problem of ``manifest``; return None when valid."""
    problems = schema_violations(manifest) + controller_violations(manifest) + pod_template_violations(manifest)
    if problems:
        # The same problem may be seen by two passes; report it once, in order.
        raise MPIJobValidationError((manifest.get("metadata") or {}).get("name", ""), list(dict.fromkeys(problems)))
