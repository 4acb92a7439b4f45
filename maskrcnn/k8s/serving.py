"""Manifests of the model server: Deployment + Service + PodDisruptionBudget, or a KServe InferenceService.

Pure builders. The pod runs ``maskrcnn serve --model-dir <model>`` from the serving image on port
8080 (``/readyz`` gates traffic until the model is loaded, ``/healthz`` restarts a wedged server),
as a non-root user on a read-only root file system. The model is an ``s3://`` URI (read by the
server itself, credentials from a referenced Secret or the service account's IAM role) or a
directory on a PVC, mounted read-only.
"""

from __future__ import annotations

import copy
import posixpath
from dataclasses import dataclass, field
from typing import Mapping

from maskrcnn.errors import UserError
from maskrcnn.images import SERVE_IMAGE
from maskrcnn.k8s.gate import ANNOTATION_MODEL_ID, ModelScore

SERVING_PORT = 8080
PORT_NAME = "http"
CONTAINER = "server"
MODEL_MOUNT = "/models"
CACHE_DIR = "/var/cache/maskrcnn"
SERVING_USER_ID = 1000
KSERVE_API_VERSION = "serving.kserve.io/v1beta1"
MANAGED_VOLUMES = ("model", "tmp", "cache")  # the volumes the deployer owns in a serving pod


@dataclass(frozen=True)
class ServingSpec:
    """Where and how the model server runs (everything but the model)."""

    name: str
    namespace: str
    image: str = SERVE_IMAGE
    replicas: int = 2
    cpu: str = "2"
    memory: str = "6Gi"
    service_account: str = ""
    aws_secret: str = ""                      # Secret with AWS_ACCESS_KEY_ID/... for s3:// models; "" = IAM role
    progress_deadline_seconds: int = 600
    node_selector: Mapping[str, str] = field(default_factory=dict)

    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": "maskrcnn", "app.kubernetes.io/component": "serving",
                "app.kubernetes.io/instance": self.name, "app.kubernetes.io/managed-by": "maskrcnn-k8s"}

    def selector(self) -> dict[str, str]:
        return {"app.kubernetes.io/component": "serving", "app.kubernetes.io/instance": self.name}


@dataclass(frozen=True)
class ModelLocation:
    """The ``--model-dir`` argument of the server and the volume it needs (if any)."""

    model_dir: str
    claim_name: str = ""                      # PVC holding the model, mounted read-only at MODEL_MOUNT


def model_location(model_uri: str, *, pvc: str = "", mount_path: str = "/data") -> ModelLocation:
    """Where the server finds the model: ``s3://bucket/key``, ``pvc://claim/path``, or an absolute path
    under ``mount_path`` on the PVC ``pvc`` (the layout the training job wrote)."""
    if model_uri.startswith("s3://"):
        if len(model_uri) <= len("s3://") or model_uri[5] == "/":
            raise UserError(f"model URI {model_uri!r} has no bucket: use s3://bucket/path/to/model")
        return ModelLocation(model_dir=model_uri)
    if model_uri.startswith("pvc://"):
        claim, _, path = model_uri[len("pvc://"):].partition("/")
        if not claim or not path:
            raise UserError(f"model URI {model_uri!r}: use pvc://<claim>/<path inside the volume>")
        return ModelLocation(model_dir=posixpath.join(MODEL_MOUNT, path), claim_name=claim)
    if model_uri.startswith("/"):
        if not pvc:
            raise UserError(f"model path {model_uri} is on a volume: pass --pvc with the claim that holds it "
                            "(or use pvc://<claim>/<path> or s3://)")
        relative = posixpath.relpath(posixpath.normpath(model_uri), posixpath.normpath(mount_path))
        if relative.startswith(".."):
            raise UserError(f"model path {model_uri} is not under the volume's mount path {mount_path}: "
                            "pass --mount-path")
        return ModelLocation(model_dir=posixpath.join(MODEL_MOUNT, relative), claim_name=pvc)
    raise UserError(f"model URI {model_uri!r}: use s3://bucket/path, pvc://claim/path or an absolute path with --pvc")


def server_container(spec: ServingSpec, location: ModelLocation) -> dict:
    """The model server container (shared by the Deployment and the InferenceService)."""
    mounts = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "cache", "mountPath": CACHE_DIR}]
    if location.claim_name:
        mounts.append({"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True})
    container = {
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["maskrcnn", "serve", "--model-dir", location.model_dir, "--host", "0.0.0.0",
                 "--port", str(SERVING_PORT), "--cache-dir", CACHE_DIR],
        "ports": [{"name": PORT_NAME, "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": PORT_NAME}, "periodSeconds": 5,
                           "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": PORT_NAME}, "periodSeconds": 10,
                          "failureThreshold": 3, "timeoutSeconds": 5},
        # Loading a SavedModel (and fetching it from S3) takes a while: no liveness kills meanwhile.
        "startupProbe": {"httpGet": {"path": "/healthz", "port": PORT_NAME}, "periodSeconds": 5,
                         "failureThreshold": 60},
        "resources": {"requests": {"cpu": spec.cpu, "memory": spec.memory},
                      "limits": {"cpu": spec.cpu, "memory": spec.memory}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": SERVING_USER_ID, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }
    if spec.aws_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.aws_secret}}]
    return container


def _volumes(location: ModelLocation) -> list[dict]:
    volumes = [{"name": "tmp", "emptyDir": {}}, {"name": "cache", "emptyDir": {"sizeLimit": "10Gi"}}]
    if location.claim_name:
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": location.claim_name, "readOnly": True}})
    return volumes


def _pod_spec(spec: ServingSpec, location: ModelLocation) -> dict:
    pod = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": SERVING_USER_ID, "fsGroup": SERVING_USER_ID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [server_container(spec, location)],
        "volumes": _volumes(location),
        "terminationGracePeriodSeconds": 30,
    }
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    return pod


def build_deployment(spec: ServingSpec, model: ModelScore, location: ModelLocation) -> dict:
    """The serving Deployment; its annotations record the model it serves (the gate reads them)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": spec.labels(),
                     "annotations": model.annotations()},
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": spec.progress_deadline_seconds,
            "selector": {"matchLabels": spec.selector()},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                # The model id in the template makes a new model a new revision even at the same URI.
                "metadata": {"labels": spec.labels(), "annotations": {ANNOTATION_MODEL_ID: model.model_id}},
                "spec": _pod_spec(spec, location),
            },
        },
    }


def updated_template(current: dict, desired: dict) -> dict:
    """``current`` pod template serving the model of ``desired``.

    Only what the deployer owns changes: the server container's image, arguments and credentials,
    the model/tmp/cache volumes and the model id annotation. What an overlay or an operator set
    (service account, scheduling, resources, extra containers) is kept. A template without the
    server container is not ours to merge into and is replaced.
    """
    wanted = desired["spec"]["containers"][0]
    index = next((i for i, c in enumerate(current["spec"].get("containers") or []) if c.get("name") == wanted["name"]), None)
    if index is None:
        return copy.deepcopy(desired)
    out = copy.deepcopy(current)
    container = out["spec"]["containers"][index]
    container["image"], container["args"] = wanted["image"], wanted["args"]
    container.pop("command", None)
    if "envFrom" in wanted:
        container["envFrom"] = wanted["envFrom"]
    container["volumeMounts"] = [m for m in container.get("volumeMounts") or [] if m["name"] not in MANAGED_VOLUMES] \
        + [m for m in wanted["volumeMounts"] if m["name"] in MANAGED_VOLUMES]
    out["spec"]["volumes"] = [v for v in out["spec"].get("volumes") or [] if v["name"] not in MANAGED_VOLUMES] \
        + [v for v in desired["spec"]["volumes"] if v["name"] in MANAGED_VOLUMES]
    out.setdefault("metadata", {}).setdefault("annotations", {}).update(desired["metadata"].get("annotations") or {})
    return out


def build_service(spec: ServingSpec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": spec.labels()},
        "spec": {"type": "ClusterIP", "selector": spec.selector(),
                 "ports": [{"name": PORT_NAME, "port": SERVING_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}]},
    }


def build_pdb(spec: ServingSpec) -> dict:
    """At most one server down at a time during node drains."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": spec.labels()},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": spec.selector()}},
    }


def build_inference_service(spec: ServingSpec, model: ModelScore, location: ModelLocation) -> dict:
    """A KServe ``InferenceService`` with the same server as a custom predictor container."""
    container = server_container(spec, location)
    container["name"] = "kserve-container"  # the name KServe expects for a custom predictor
    predictor = {"minReplicas": spec.replicas, "maxReplicas": max(spec.replicas, 1) * 2,
                 "containers": [container], "volumes": _volumes(location),
                 "securityContext": _pod_spec(spec, location)["securityContext"]}
    if spec.service_account:
        predictor["serviceAccountName"] = spec.service_account
    return {
        "apiVersion": KSERVE_API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": spec.labels(),
                     "annotations": {**model.annotations(), "sidecar.istio.io/inject": "false"}},
        "spec": {"predictor": predictor},
    }


def inference_service_problems(manifest: dict) -> list[str]:
    """Shape checks of an InferenceService (KServe's CRD is not vendored here)."""
    problems = []
    if manifest.get("apiVersion") != KSERVE_API_VERSION or manifest.get("kind") != "InferenceService":
        problems.append(f"apiVersion/kind must be {KSERVE_API_VERSION} InferenceService")
    predictor = (manifest.get("spec") or {}).get("predictor") or {}
    containers = predictor.get("containers") or []
    if len(containers) != 1:
        problems.append("spec.predictor.containers: exactly one container")
    for container in containers:
        if not container.get("image"):
            problems.append("spec.predictor.containers[0].image: Required value")
        ports = container.get("ports") or []
        if len(ports) != 1 or ports[0].get("containerPort") != SERVING_PORT:
            problems.append(f"spec.predictor.containers[0].ports: one port, {SERVING_PORT}")
    unknown = set(predictor) - {"minReplicas", "maxReplicas", "containers", "volumes", "securityContext",
                                "serviceAccountName", "nodeSelector", "tolerations"}
    problems += [f"spec.predictor.{key}: unknown field" for key in sorted(unknown)]
    if predictor.get("minReplicas", 0) > predictor.get("maxReplicas", 0):
        problems.append("spec.predictor: minReplicas exceeds maxReplicas")
    return problems
